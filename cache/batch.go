package cache

import (
	"context"
	"errors"
	"time"
)

// BatchLoaderFunc loads the values of keys from the source of truth. Keys
// missing from the map it returns do not exist.
type BatchLoaderFunc[T any] func(ctx context.Context, keys []string) (map[string]T, error)

// FetchMany is Fetch for many keys: one MGET on the hit path (a pipeline of
// GETs on a ClusterClient, whose keys may live on different nodes),
// leases for the missing keys in one pipeline, one loader call for all of
// them, and the fills in one pipeline. Keys that another process is loading
// are waited for after that; those it does not deliver within
// Options.LeaseWait, or fill with bytes that do not decode into T, are
// loaded by a second loader call, without filling. Leases and fills are
// completed even if ctx ends, so that none is left to hold others back.
//
// The result holds the keys that exist; keys that do not are absent from
// it and get not-found entries. FetchMany does not share loads in-process
// (the leases still stop duplicate loads) and does not refresh early. An
// error is the loader's error or ctx's.
func FetchMany[T any](ctx context.Context, c *Cache, keys []string, load BatchLoaderFunc[T], opts ...FetchOption) (map[string]T, error) {
	out := make(map[string]T, len(keys))
	b := &batch[T]{c: c, out: out, load: load, ttl: c.ttl(opts), versioner: versioner[T]()}
	if keys = b.gate(ctx, keys); len(keys) == 0 {
		return out, nil
	}
	ok, probe := c.breaker.allow()
	if !ok {
		return out, b.degraded(ctx, keys)
	}
	gs := make([]*generation, len(keys))
	for i, k := range keys {
		gs[i] = c.gens.of(c.cfg.Namespace(k))
	}
	vals, err := c.mget(ctx, keys, gs)
	c.redisResult(ctx, err)
	c.breaker.endProbe(probe)
	switch {
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case err != nil:
		return out, b.degraded(ctx, keys)
	}
	for i, k := range keys {
		b.sort(k, gs[i], c.classify(vals[i].b, vals[i].ok, gs[i]), true)
	}
	if len(b.lease) > 0 {
		b.acquire(ctx)
	}
	if err := b.loadAndFill(ctx); err != nil {
		return nil, err
	}
	b.noFill = nil // loaded; await collects the keys it adds
	if len(b.wait) > 0 {
		if err := b.await(ctx); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// batch is the state of one FetchMany.
type batch[T any] struct {
	c    *Cache
	out  map[string]T
	load BatchLoaderFunc[T]
	ttl  time.Duration
	// versioner says T implements Versioner: it may fill over a floor.
	versioner bool

	seen   map[string]struct{} // keys already sorted into a list below
	lease  []pending           // to lease, then load and fill
	owned  []pending           // leased by us
	noFill []string            // to load without filling
	wait   []pending           // leased by another process
}

// pending is a key that needs more than its first read.
type pending struct {
	key    string
	g      *generation
	seen   []byte // what the read found; nil when absent
	prefix []byte // our lease
	stamp  header // generations known when we leased, and the floor
	fl     floor  // the floor the first read found
}

// gate drops the keys Options.Filter rejects.
func (b *batch[T]) gate(ctx context.Context, keys []string) []string {
	f := b.c.cfg.Filter
	if f == nil {
		return keys
	}
	kept := make([]string, 0, len(keys))
	for _, k := range keys {
		if f.MayContain(ctx, k) {
			kept = append(kept, k)
		} else {
			b.c.stats.filterRejects.Add(1)
		}
	}
	return kept
}

// sort files key by what a read found in it. first marks the first read,
// which counts hits and misses.
func (b *batch[T]) sort(key string, g *generation, e entry, first bool) {
	c := b.c
	if _, done := b.out[key]; done {
		return
	}
	if _, done := b.seen[key]; done {
		return
	}
	switch e.st {
	case stValue, stRefresh:
		var v T
		err := c.codec.Unmarshal(e.payload, &v)
		if err == nil {
			if first {
				c.stats.hits.Add(1)
			}
			b.out[key] = v
			return
		}
		c.corrupted(key, err)
		e.st = stCorrupt
	case stNotFound:
		if first {
			c.stats.notFoundHits.Add(1)
		}
		return
	case stCorrupt, stForeign:
		c.corrupted(key, errCorrupt)
	case stStale:
		c.stats.stale.Add(1)
	}
	if first {
		c.stats.misses.Add(1)
	}
	if b.seen == nil {
		b.seen = make(map[string]struct{})
	}
	b.seen[key] = struct{}{}
	switch {
	case e.st == stLease:
		b.wait = append(b.wait, pending{key: key, g: g})
	case e.st == stTombstone || e.st == stForeign || !first || (floorIn(&e).on && !b.versioner):
		// A second look that finds no usable value (the key changed under
		// us, or another process filled bytes this T does not decode) loads
		// without filling rather than chase the key.
		b.noFill = append(b.noFill, key)
	default:
		b.lease = append(b.lease, pending{key: key, g: g, seen: e.raw, fl: floorIn(&e)})
	}
}

// acquire takes the leases of b.lease in one pipeline. It runs to the end
// even if ctx ends, bounded by LeaseTTL: leases installed by a pipeline cut
// short would hold other processes back until they expire.
func (b *batch[T]) acquire(ctx context.Context) {
	c := b.c
	ctx, cancel := c.detach(ctx)
	defer cancel()
	now := nowMs()
	leases := make([][]byte, len(b.lease))
	ttls := make([]int64, len(b.lease))
	for i := range b.lease {
		p := &b.lease[i]
		var ttl time.Duration
		p.stamp, ttl = p.fl.lease(c.leaseStamp(p.g, now), c.cfg.LeaseTTL)
		leases[i], ttls[i] = encodeEntry(p.stamp, newToken()), ttl.Milliseconds()
		if p.seen == nil {
			p.seen = []byte{}
		}
	}
	cmds, err := runPipelined(ctx, c.rdb, leaseScript, len(b.lease), func(i int) (string, []any) {
		return b.lease[i].key, []any{b.lease[i].seen, leases[i], ttls[i], "0", holdArg(b.lease[i].seen)}
	})
	c.redisResult(ctx, err)
	for i, p := range b.lease {
		delete(b.seen, p.key)
		switch v := cmds[i].Val().(type) {
		case int64:
			if v == 1 {
				p.prefix = leases[i]
				b.owned = append(b.owned, p)
				b.seen[p.key] = struct{}{}
				continue
			}
		case string:
			e := c.classify([]byte(v), true, p.g)
			if e.st == stStale || e.st == stCorrupt {
				e.st = stTombstone // changed under us twice: do not chase it
			}
			b.sort(p.key, p.g, e, false)
			continue
		}
		b.noFill = append(b.noFill, p.key) // the script failed
		b.seen[p.key] = struct{}{}
	}
	b.lease = nil
}

// loadAndFill loads the owned and the no-fill keys in one loader call and
// fills the owned ones.
func (b *batch[T]) loadAndFill(ctx context.Context) (err error) {
	c := b.c
	if len(b.owned)+len(b.noFill) == 0 {
		return nil
	}
	// A codec panic while filling would leave the leases behind until
	// LeaseTTL: give them back, and return the panic as an error.
	defer func() {
		if r := recover(); r != nil {
			err = panicked(c, r)
			b.giveBack(ctx)
		}
	}()
	keys := make([]string, 0, len(b.owned)+len(b.noFill))
	for _, p := range b.owned {
		keys = append(keys, p.key)
	}
	keys = append(keys, b.noFill...)
	m, dur, err := callBatch(ctx, c, b.load, keys)
	if err != nil {
		b.giveBack(ctx)
		return err
	}
	b.keep(m, keys)
	b.fill(ctx, m, dur)
	return nil
}

// fill stores the loaded values (or not-found entries) of the owned keys,
// even if ctx has ended, so that the leases do not outlive the load.
func (b *batch[T]) fill(ctx context.Context, m map[string]T, dur time.Duration) {
	c := b.c
	ctx, cancel := c.detach(ctx)
	defer cancel()
	entries := make([][]byte, len(b.owned))
	ttls := make([]int64, len(b.owned))
	refused := make([]bool, len(b.owned))
	for i, p := range b.owned {
		h := header{nsGen: p.stamp.nsGen, allGen: p.stamp.allGen, filled: nowMs(), loadDur: max(ms(dur), 1)}
		ttl := c.jittered(b.ttl)
		v, ok := m[p.key]
		if !admits(&p.stamp, v, !ok) {
			// Older than the floor: put the floor's tombstone back.
			c.stats.fillsRefused.Add(1)
			refused[i] = true
			stone, sttl := restoreFloor(&p.stamp)
			entries[i], ttls[i] = append([]byte{}, stone...), sttl.Milliseconds()
			continue
		}
		var data []byte
		var err error
		if ok {
			data, err = c.codec.Marshal(v)
			h.kind = kindValue
			recordVersion(&h, v)
		} else {
			ttl = c.jittered(c.cfg.NotFoundTTL)
			h.kind = kindNotFound
		}
		if err != nil {
			c.log.Error("cache: cannot encode value; not cached", "key", p.key, "err", err)
			entries[i] = []byte{} // gives the lease back
			continue
		}
		h.ttl = ms(ttl)
		entries[i], ttls[i] = encodeEntry(h, data), ttl.Milliseconds()
	}
	if c.hookBeforeFill != nil {
		for _, p := range b.owned {
			c.hookBeforeFill(p.key)
		}
	}
	cmds, err := runPipelined(ctx, c.rdb, fillScript, len(b.owned), func(i int) (string, []any) {
		return b.owned[i].key, []any{b.owned[i].prefix, entries[i], max(ttls[i], 1)}
	})
	c.redisResult(ctx, err)
	for i, cmd := range cmds {
		if n, err := cmd.Int64(); err == nil && n == 0 && !refused[i] {
			c.stats.fillsRefused.Add(1)
		}
	}
}

// giveBack deletes the owned leases after a failed load, so that waiting
// processes retry at once instead of after LeaseWait.
func (b *batch[T]) giveBack(ctx context.Context) {
	ctx, cancel := b.c.detach(ctx)
	defer cancel()
	_, err := runPipelined(ctx, b.c.rdb, fillScript, len(b.owned), func(i int) (string, []any) {
		stone, ttl := restoreFloor(&b.owned[i].stamp)
		if stone == nil {
			stone = []byte{}
		}
		return b.owned[i].key, []any{b.owned[i].prefix, stone, max(ttl.Milliseconds(), 1)}
	})
	b.c.redisResult(ctx, err)
}

// await polls the keys other processes hold leases on until they are filled
// or LeaseWait passes, then loads the rest in one call without filling.
func (b *batch[T]) await(ctx context.Context) error {
	c := b.c
	c.stats.leaseWaits.Add(uint64(len(b.wait)))
	deadline := time.Now().Add(c.cfg.LeaseWait)
	bo := backoff{max: c.cfg.LeasePoll}
	var rest []string
	for len(b.wait) > 0 && time.Now().Before(deadline) {
		if !sleep(ctx, bo.next()) {
			return ctx.Err()
		}
		if c.hookLeaseWaited != nil {
			c.hookLeaseWaited(b.wait[0].key)
		}
		keys := make([]string, len(b.wait))
		for i, p := range b.wait {
			keys[i] = p.key
		}
		vals, err := c.mget(ctx, keys, nil)
		c.redisResult(ctx, err)
		if err != nil {
			break
		}
		still := b.wait[:0]
		for i, p := range b.wait {
			e := c.classify(vals[i].b, vals[i].ok, p.g)
			switch e.st {
			case stLease:
				still = append(still, p)
			case stValue, stRefresh, stNotFound:
				delete(b.seen, p.key)
				b.sort(p.key, p.g, e, false)
			default:
				rest = append(rest, p.key)
			}
		}
		b.wait = still
	}
	for _, p := range b.wait {
		rest = append(rest, p.key)
	}
	rest = append(rest, b.noFill...) // filled with bytes that do not decode
	if len(rest) == 0 {
		return nil
	}
	m, _, err := callBatch(ctx, c, b.load, rest)
	b.keep(m, rest)
	return err
}

// keep puts the values m holds for keys in the result.
func (b *batch[T]) keep(m map[string]T, keys []string) {
	for _, k := range keys {
		if v, ok := m[k]; ok {
			b.out[k] = v
		}
	}
}

// degraded loads keys without Redis.
func (b *batch[T]) degraded(ctx context.Context, keys []string) error {
	c := b.c
	c.stats.degraded.Add(1)
	release, err := c.degradedSlot(ctx)
	if err != nil {
		return err
	}
	defer release()
	m, _, err := callBatch(ctx, c, b.load, keys)
	b.keep(m, keys)
	return err
}

// callBatch runs a batch loader through call (Options.LoadTimeout, a panic
// becomes a *PanicError) and returns how long it ran; ErrNotFound means
// none exists.
func callBatch[T any](ctx context.Context, c *Cache, load BatchLoaderFunc[T], keys []string) (map[string]T, time.Duration, error) {
	v, dur, err := c.call(ctx, func(ctx context.Context) (any, error) { return load(ctx, keys) })
	if errors.Is(err, ErrNotFound) {
		return nil, dur, nil
	}
	m, _ := v.(map[string]T)
	return m, dur, err
}
