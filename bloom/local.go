package bloom

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"sync"
	"time"

	bloomv3 "github.com/bits-and-blooms/bloom/v3"
	"github.com/redis/go-redis/v9"
)

// localCopy is this process's copy of one version's bitmap, held in a
// bloom/v3 filter. bloom/v3 is not safe for concurrent writes: mu guards it.
type localCopy struct {
	v  *version
	mu sync.RWMutex
	f  *bloomv3.BloomFilter
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

func (lc *localCopy) set(offsets []uint64) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	b := lc.f.BitSet()
	for _, o := range offsets {
		if o < lc.v.m {
			b.Set(uint(o))
		}
	}
}

// Refresh reads the parameters again and, with Options.Local, reloads the
// local copy of the current version from Redis. Run calls it; the copy
// answers MayContain only while Run keeps it in sync.
func (f *Filter) Refresh(ctx context.Context) error {
	if f.err != nil {
		return f.err
	}
	f.reloadMu.Lock()
	defer f.reloadMu.Unlock()
	return f.reload(ctx)
}

// reload is Refresh with reloadMu held.
func (f *Filter) reload(ctx context.Context) error {
	st, err := f.reloadParams(ctx)
	if err != nil {
		return fmt.Errorf("bloom: refresh %s: %w", f.key, err)
	}
	if !f.opts.Local {
		return nil
	}
	return f.loadLocal(ctx, st)
}

// loadLocal loads the local copy of st's current version, with reloadMu held.
func (f *Filter) loadLocal(ctx context.Context, st *state) error {
	if !st.usable() {
		f.local.Store(nil)
		return nil
	}
	v := st.cur
	b, err := f.rdb.Get(ctx, f.bitmapKey(v.id)).Bytes()
	if errors.Is(err, redis.Nil) {
		f.local.Store(nil) // deleted or dropped: answer from Redis, which fails open
		return nil
	}
	if err != nil {
		f.local.Store(nil)
		return fmt.Errorf("bloom: refresh %s: %w", f.key, err)
	}
	words := bitsetWords(b, v.m)
	f.local.Store(&localCopy{v: v, f: bloomv3.FromWithM(words, uint(v.m), uint(v.k))})
	return nil
}

// Run keeps the local copy (Options.Local) in sync until ctx ends, then
// returns nil. It subscribes to the adds every instance publishes, loads
// the bitmap after the subscription is confirmed (so no add falls between
// the two), applies each add as it arrives, follows rebuilds, re-reads the
// parameters every ParamsRefresh and reloads the whole copy every
// ReloadInterval. Whenever the subscription breaks, the copy stops
// answering (MayContain asks Redis) until it is loaded again. Errors are
// logged and retried with backoff.
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
	ps := f.rdb.Subscribe(ctx, f.channel())
	defer ps.Close()
	stop := context.AfterFunc(ctx, func() { ps.Close() })
	defer stop()
	// A dead connection shows as silence: the pinger below makes traffic
	// every ParamsRefresh, so a read that waits much longer has failed.
	watchdog := 3*f.opts.ParamsRefresh + 2*time.Second
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
	loaded := time.Now()
	f.live.Store(true)

	pingCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		ps.Close()
		wg.Wait()
	}()
	wg.Go(func() {
		t := time.NewTicker(f.opts.ParamsRefresh)
		defer t.Stop()
		for {
			select {
			case <-pingCtx.Done():
				return
			case <-t.C:
				if ps.Ping(pingCtx) != nil {
					return
				}
			}
		}
	})
	for {
		msg, err := ps.ReceiveTimeout(ctx, watchdog)
		if err != nil {
			return err
		}
		switch m := msg.(type) {
		case *redis.Message:
			err = f.apply(ctx, m.Payload)
		case *redis.Pong:
			if time.Since(loaded) >= f.opts.ReloadInterval {
				err = f.Refresh(ctx)
				loaded = time.Now()
			} else {
				err = f.checkLocal(ctx)
			}
		}
		if err != nil {
			return err
		}
	}
}

// checkLocal reloads the local copy when the current version changed or
// its bitmap disappeared since it was loaded.
func (f *Filter) checkLocal(ctx context.Context) error {
	f.reloadMu.Lock()
	defer f.reloadMu.Unlock()
	var get *redis.MapStringStringCmd
	var exists *redis.IntCmd
	lc := f.local.Load()
	_, err := f.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		get = p.HGetAll(ctx, f.key)
		if lc != nil {
			exists = p.Exists(ctx, f.bitmapKey(lc.v.id))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("bloom: refresh %s: %w", f.key, err)
	}
	st := f.parse(get.Val())
	f.state.Store(st)
	switch {
	case lc == nil && !st.usable():
		return nil
	case lc != nil && st.usable() && lc.v.id == st.cur.id && exists.Val() == 1:
		return nil
	}
	return f.loadLocal(ctx, st)
}

// Messages on the filter's channel: msgReload asks local copies to load
// again; an add message ('a') carries, for each version written, its id,
// the number of offsets and the offsets, all as uvarints.
const msgReload = "r"

func appendAddMsg(msg []byte, v *version, keys []string) []byte {
	if len(msg) == 0 {
		msg = append(msg, 'a')
	}
	msg = appendUvarints(msg, v.id, uint64(len(keys))*v.k)
	for _, key := range keys {
		for _, l := range bloomv3.Locations([]byte(key), uint(v.k)) {
			msg = binary.AppendUvarint(msg, l%v.m)
		}
	}
	return msg
}

// apply applies one message from the channel to the local copy.
func (f *Filter) apply(ctx context.Context, payload string) error {
	f.reloadMu.Lock()
	defer f.reloadMu.Unlock()
	if payload == msgReload {
		return f.reload(ctx)
	}
	lc := f.local.Load()
	return decodeAddMsg([]byte(payload), func(id uint64, offsets []uint64) {
		if lc != nil && lc.v.id == id {
			lc.set(offsets)
		}
	})
}

var errMalformed = errors.New("bloom: malformed add message")

// decodeAddMsg calls fn with the offsets of each version in an add message.
func decodeAddMsg(b []byte, fn func(id uint64, offsets []uint64)) error {
	if len(b) == 0 || b[0] != 'a' {
		return errMalformed
	}
	b = b[1:]
	for len(b) > 0 {
		id, n := binary.Uvarint(b)
		if n <= 0 {
			return errMalformed
		}
		b = b[n:]
		count, n := binary.Uvarint(b)
		if n <= 0 || count > uint64(len(b)) { // every offset takes a byte at least
			return errMalformed
		}
		b = b[n:]
		offsets := make([]uint64, 0, count)
		for range count {
			o, n := binary.Uvarint(b)
			if n <= 0 {
				return errMalformed
			}
			offsets = append(offsets, o)
			b = b[n:]
		}
		fn(id, offsets)
	}
	return nil
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

func appendUvarints(b []byte, xs ...uint64) []byte {
	for _, x := range xs {
		b = binary.AppendUvarint(b, x)
	}
	return b
}
