package bloom

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bloomv3 "github.com/bits-and-blooms/bloom/v3"
	"github.com/redis/go-redis/v9"
)

// localCopy is this process's copy of one version's bitmap, held in a
// bloom/v3 filter. bloom/v3 is not safe for concurrent writes: mu guards it.
type localCopy struct {
	v      *version
	others []*version // the versions listed beside v when it was loaded
	loaded time.Time
	seq    uint64 // the last add to v the copy holds; under Filter.reloadMu
	mu     sync.RWMutex
	f      *bloomv3.BloomFilter
}

func (lc *localCopy) test(key string) bool {
	lc.mu.RLock()
	defer lc.mu.RUnlock()
	return lc.f.TestString(key)
}

func (lc *localCopy) add(keys []string) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	for _, k := range keys {
		lc.f.AddString(k)
	}
}

// set sets the bits at offsets, decimals each followed by a space.
func (lc *localCopy) set(offsets string) error {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	b := lc.f.BitSet()
	for o := range strings.FieldsSeq(offsets) {
		n, err := strconv.ParseUint(o, 10, 64)
		if err != nil {
			return errMalformed
		}
		if n < lc.v.m {
			b.Set(uint(n))
		}
	}
	return nil
}

// Refresh reads the parameters again and, with Options.Local, reloads the
// local copy of the current version from Redis. Run calls it; the copy
// answers MayContain only while Run keeps it in sync.
func (f *Filter) Refresh(ctx context.Context) error {
	if f.err != nil {
		return f.err
	}
	if !f.opts.Local {
		if _, err := f.reloadParams(ctx); err != nil {
			return fmt.Errorf("bloom: refresh %s: %w", f.key, err)
		}
		return nil
	}
	f.reloadMu.Lock()
	defer f.reloadMu.Unlock()
	return f.loadLocal(ctx)
}

// loadLocal loads the local copy of the current version, with reloadMu
// held. The parameters hash (with the version's add sequence) and the
// bitmap are read in one MULTI, so that the copy knows exactly which adds
// it holds: those numbered up to seq.
func (f *Filter) loadLocal(ctx context.Context) error {
	var id uint64
	if st := f.state.Load(); st != nil && st.cur != nil {
		id = st.cur.id
	}
	for range 3 {
		var hget *redis.MapStringStringCmd
		var get *redis.StringCmd
		_, err := f.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			hget = p.HGetAll(ctx, f.key)
			if id != 0 {
				get = p.Get(ctx, f.bitmapKey(id))
			}
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			f.local.Store(nil)
			return fmt.Errorf("bloom: refresh %s: %w", f.key, err)
		}
		h := hget.Val()
		st := f.parse(h)
		f.state.Store(st)
		if !st.usable() {
			f.local.Store(nil)
			return nil
		}
		if st.cur.id != id {
			id = st.cur.id // swapped meanwhile, or guessed wrong
			continue
		}
		b, err := get.Bytes()
		if err != nil {
			f.local.Store(nil) // deleted or dropped: answer from Redis, which fails open
			return nil
		}
		v := st.cur
		seq, _ := strconv.ParseUint(h[seqField(v.id)], 10, 64)
		var others []*version
		for _, o := range []*version{st.next, st.prev} {
			if o != nil {
				others = append(others, o)
			}
		}
		f.local.Store(&localCopy{
			v: v, others: others, loaded: time.Now(), seq: seq,
			f: bloomv3.FromWithM(bitsetWords(b, v.m), uint(v.m), uint(v.k)),
		})
		return nil
	}
	f.local.Store(nil)
	return fmt.Errorf("bloom: refresh %s: the current version kept changing while it was read", f.key)
}

func seqField(id uint64) string { return "seq:" + strconv.FormatUint(id, 10) }

// Run keeps the local copy (Options.Local) in sync until ctx ends, then
// returns nil. It subscribes to the adds every instance publishes, loads
// the bitmap after the subscription is confirmed (so no add falls between
// the two), applies each add as it arrives, follows rebuilds and reloads
// the whole copy every ReloadInterval. Errors are logged and retried with
// backoff.
//
// The copy answers only while Run knows it holds every add made to its
// version, and stops answering (MayContain asks Redis) until it has
// reloaded as soon as it cannot know that:
//
//   - an add's sequence number is not the next one (a message was lost);
//   - an add arrives for a version the copy neither holds nor knew was
//     listed (a rebuild began, or the filter was warmed anew);
//   - an add found a version or the whole filter gone ("g" notice);
//   - the subscription is confirmed a second time: go-redis reconnected
//     and subscribed again by itself, and whatever was published in
//     between is lost;
//   - a check finds the copy behind. Every ParamsRefresh, Run reads the
//     current version and its add sequence and sends them in a PING on the
//     subscription's own connection; when the PONG comes back every add
//     published before the read has arrived, so a copy that holds fewer,
//     or another version, has missed something;
//   - a check fails or its PONG does not come back in time, or nothing
//     arrives at all for 3*ParamsRefresh+2s: the connection is closed and
//     subscribed again.
//
// A key added by another process reaches the copy when its add message
// does, typically well under a millisecond after that Add returned; a key
// added by this process is in the copy before Add returns.
func (f *Filter) Run(ctx context.Context) error {
	if f.err != nil {
		return f.err
	}
	if !f.opts.Local {
		return ErrNoLocal
	}
	if !f.running.CompareAndSwap(false, true) {
		return errors.New("bloom: Run is already running for this Filter")
	}
	defer f.running.Store(false)
	const minBackoff, maxBackoff = 50 * time.Millisecond, 5 * time.Second
	backoff := minBackoff
	for {
		start := time.Now()
		err := f.follow(ctx)
		f.live.Store(false)
		if ctx.Err() != nil {
			return nil
		}
		f.opts.Logger.Warn("bloom: local copy out of sync; asking Redis until it is reloaded", "key", f.key, "err", err)
		if time.Since(start) > 10*maxBackoff {
			backoff = minBackoff
		}
		t := time.NewTimer(backoff/2 + rand.N(backoff/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// follow subscribes, loads, and applies messages until an error.
func (f *Filter) follow(ctx context.Context) error {
	var ps *redis.PubSub
	if f.publish == "SPUBLISH" {
		ps = f.rdb.SSubscribe(ctx, f.channel())
	} else {
		ps = f.rdb.Subscribe(ctx, f.channel())
	}
	defer ps.Close()
	stop := context.AfterFunc(ctx, func() { ps.Close() })
	defer stop()
	watchdog := f.watchdog()
	msg, err := ps.ReceiveTimeout(ctx, watchdog)
	if err != nil {
		return err
	}
	if _, ok := msg.(*redis.Subscription); !ok {
		return fmt.Errorf("bloom: subscribe %s: unexpected %T", f.channel(), msg)
	}
	if err := f.Refresh(ctx); err != nil {
		return err
	}
	f.live.Store(true)

	var answered atomic.Uint64 // the last check whose PONG arrived
	pingCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		ps.Close()
		wg.Wait()
	}()
	wg.Go(func() { f.ping(pingCtx, ps, &answered) })
	for {
		if f.beforeReceive != nil {
			f.beforeReceive()
		}
		msg, err := ps.ReceiveTimeout(ctx, watchdog)
		if err != nil {
			return err
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			err = f.resync(ctx, "subscribed again after a reconnect")
		case *redis.Message:
			err = f.apply(ctx, m.Payload)
		case *redis.Pong:
			n, id, seq, ok := parseCheck(m.Payload)
			if !ok {
				continue
			}
			answered.Store(n)
			err = f.check(ctx, id, seq)
		}
		if err != nil {
			return err
		}
	}
}

// watchdog is how long Run waits for anything on the subscription, and
// for the answer to a check, before it takes the connection for dead.
func (f *Filter) watchdog() time.Duration { return 3*f.opts.ParamsRefresh + 2*time.Second }

// ping sends a check every ParamsRefresh: the current version and its add
// sequence as Redis has them now, in a PING on the subscription. It closes
// the subscription, which ends follow, when a check cannot be made or
// goes unanswered for longer than the watchdog.
func (f *Filter) ping(ctx context.Context, ps *redis.PubSub, answered *atomic.Uint64) {
	t := time.NewTicker(f.opts.ParamsRefresh)
	defer t.Stop()
	lag := uint64(f.watchdog()/f.opts.ParamsRefresh) + 1
	for n := uint64(1); ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := func() error {
			if n > lag && answered.Load() < n-lag {
				return errors.New("checks of the local copy go unanswered")
			}
			h, err := f.rdb.HGetAll(ctx, f.key).Result()
			if err != nil {
				return err
			}
			st := f.parse(h)
			f.state.Store(st)
			var id, seq uint64
			if st.cur != nil {
				id = st.cur.id
				seq, _ = strconv.ParseUint(h[seqField(id)], 10, 64)
			}
			if lc := f.local.Load(); lc != nil && lc.v.id == id {
				// A bitmap deleted alone (eviction, DEL) leaves the hash as
				// it was: report it as no version, which the copy drops.
				n, err := f.rdb.Exists(ctx, f.bitmapKey(id)).Result()
				if err != nil {
					return err
				}
				if n == 0 {
					id, seq = 0, 0
				}
			}
			return ps.Ping(ctx, "chk:"+strconv.FormatUint(n, 10)+":"+strconv.FormatUint(id, 10)+":"+strconv.FormatUint(seq, 10))
		}()
		if err != nil {
			if ctx.Err() == nil {
				f.opts.Logger.Warn("bloom: check of the local copy failed; subscribing again", "key", f.key, "err", err)
			}
			f.live.Store(false)
			ps.Close()
			return
		}
	}
}

func parseCheck(payload string) (n, id, seq uint64, ok bool) {
	rest, ok := strings.CutPrefix(payload, "chk:")
	if !ok {
		return 0, 0, 0, false
	}
	parts := strings.Split(rest, ":")
	if len(parts) != 3 {
		return 0, 0, 0, false
	}
	var xs [3]uint64
	for i, p := range parts {
		x, err := strconv.ParseUint(p, 10, 64)
		if err != nil {
			return 0, 0, 0, false
		}
		xs[i] = x
	}
	return xs[0], xs[1], xs[2], true
}

// check compares the copy with a check's answer: current version id (0 for
// none) and its add sequence as Redis had them before the PONG was sent.
func (f *Filter) check(ctx context.Context, id, seq uint64) error {
	f.reloadMu.Lock()
	defer f.reloadMu.Unlock()
	lc := f.local.Load()
	switch {
	case lc == nil && id == 0:
		return nil
	case lc == nil:
		return f.resyncLocked(ctx, "") // not loaded (bitmap missing, parameters differ): try again
	case lc != nil && lc.v.id == id && lc.seq >= seq && time.Since(lc.loaded) < f.opts.ReloadInterval:
		return nil
	case lc != nil && lc.v.id == id && lc.seq >= seq:
		return f.resyncLocked(ctx, "") // periodic reload
	}
	return f.resyncLocked(ctx, "the check found the copy behind")
}

// resync takes the copy out of service, reloads it and puts it back.
func (f *Filter) resync(ctx context.Context, why string) error {
	f.reloadMu.Lock()
	defer f.reloadMu.Unlock()
	return f.resyncLocked(ctx, why)
}

func (f *Filter) resyncLocked(ctx context.Context, why string) error {
	if why != "" {
		f.live.Store(false)
		f.stats.resyncs.Add(1)
		f.opts.Logger.Info("bloom: reloading the local copy", "key", f.key, "why", why)
	}
	if err := f.loadLocal(ctx); err != nil {
		f.live.Store(false)
		return err
	}
	f.live.Store(true)
	return nil
}

// Messages on the filter's channel: msgReload asks local copies to load
// again (a rebuild swapped or dropped a version); msgGone says an Add
// found a version or the whole filter gone, which matters only to copies
// that hold one; an add message, "a <id> <seq> <offsets>", carries the
// version, its add sequence number and the bits set, as decimals.
const (
	msgReload = "r"
	msgGone   = "g"
)

// apply applies one message from the channel to the local copy.
func (f *Filter) apply(ctx context.Context, payload string) error {
	f.reloadMu.Lock()
	defer f.reloadMu.Unlock()
	lc := f.local.Load()
	switch payload {
	case msgReload:
		return f.resyncLocked(ctx, "a rebuild replaced a version")
	case msgGone:
		if lc == nil {
			return nil
		}
		return f.resyncLocked(ctx, "an add found the filter's keys gone")
	}
	id, seq, offsets, err := parseAddMsg(payload)
	if err != nil {
		return err
	}
	switch {
	case lc == nil:
		return nil // nothing to keep in sync; reload notices and checks load it
	case lc.v.id == id && seq <= lc.seq:
		return nil // already in the bitmap the copy loaded
	case lc.v.id == id && seq == lc.seq+1:
		lc.seq = seq
		return lc.set(offsets)
	case lc.v.id == id:
		return f.resyncLocked(ctx, fmt.Sprintf("adds %d to %d were lost", lc.seq+1, seq-1))
	case containsVersion(lc.others, &version{id: id}):
		return nil
	}
	return f.resyncLocked(ctx, fmt.Sprintf("an add for version %d, which the copy does not know", id))
}

var errMalformed = errors.New("bloom: malformed add message")

// parseAddMsg splits an add message "a <id> <seq> <offsets>".
func parseAddMsg(payload string) (id, seq uint64, offsets string, err error) {
	rest, ok := strings.CutPrefix(payload, "a ")
	if !ok {
		return 0, 0, "", errMalformed
	}
	idStr, rest, ok1 := strings.Cut(rest, " ")
	seqStr, offsets, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 {
		return 0, 0, "", errMalformed
	}
	id, err1 := strconv.ParseUint(idStr, 10, 64)
	seq, err2 := strconv.ParseUint(seqStr, 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, "", errMalformed
	}
	return id, seq, offsets, nil
}

// redisBytes returns the first n bytes of a bitmap held as bitset words
// (bit i in words[i/64], mask 1<<(i%64)) laid out as Redis SETBIT lays out
// a string (bit i in byte i/8, mask 0x80>>(i%8)). Reversing a word's bits
// and writing it big-endian does exactly that for 64 bits at a time.
func redisBytes(words []uint64, n int) []byte {
	b := make([]byte, max(len(words)*8, n))
	for i, w := range words {
		binary.BigEndian.PutUint64(b[i*8:], bits.Reverse64(w))
	}
	return b[:n]
}

// bitsetWords is the inverse of redisBytes for a bitmap of m bits: a
// shorter string reads as zeros, bits at m and beyond are dropped.
func bitsetWords(b []byte, m uint64) []uint64 {
	words := make([]uint64, (m+63)/64)
	for i := range words {
		var chunk [8]byte
		if i*8 < len(b) {
			copy(chunk[:], b[i*8:])
		}
		words[i] = bits.Reverse64(binary.BigEndian.Uint64(chunk[:]))
	}
	if r := m % 64; r != 0 {
		words[len(words)-1] &= 1<<r - 1
	}
	return words
}
