package cache

import (
	"bytes"
	"context"
	"errors"
	"time"
)

// flight is one in-process load of a key: the code that runs once per
// process while every concurrent Fetch of the key waits for its result.
type flight struct {
	c      *Cache
	key    string
	g      *generation // the key's namespace generation; nil when degraded
	ttl    time.Duration
	load   func(context.Context) (any, error)
	decode func([]byte) (any, error)
	// versioner says the loaded values implement Versioner, so they may
	// fill over a versioned tombstone.
	versioner bool
	basis     basis // what the result rests on; set before each request or load
}

// A flight's result rests on one observation made after the flight
// started: the lease it took (its load follows), the value a poll found, or
// the row a load without lease read. Callers that join the flight in this
// process may have read the key later than that, after an invalidation from
// another process that the flight's result predates (race R10 across
// processes):
//
//  1. The flight takes the lease and reads v1 from the source.
//  2. Another process commits v2 and invalidates the key (the lease goes).
//  3. A Fetch here starts, reads the key (absent) and joins the flight.
//  4. The flight's fill is refused, but it returns v1, to that Fetch too.
//
// So each result carries its basis, and a joiner takes it only if the basis
// covers its own read. The invalidations a caller must see are those that
// returned before its Fetch started; Redis applied them before the caller's
// read. The result covers the caller when its observation was sent after the
// caller started (so Redis applied it after those invalidations too), or
// when the caller's read found the lease the result rests on (that lease
// outlived those invalidations, so it was taken after them) and judged it
// current: a lease older than a generation the caller knows predates a
// bump (InvalidateNamespace in another process), which a lease outlives. Otherwise the
// joiner starts a new flight. In-process invalidations spare callers the
// wait: they move the key to a new flight epoch at once.
type basis struct {
	at    int64  // Cache.clock time before the observation was sent
	token []byte // the lease (a prefix of the entry) the result rests on, if any
}

// readPoint is a caller's own read of the key: when the caller started
// (Cache.clock time) and what the read found (nil when absent or unknown).
type readPoint struct {
	at  int64
	raw []byte
}

// covers reports whether a result resting on b may be given to a caller
// whose read was p.
func (b basis) covers(p readPoint) bool {
	return p.at < b.at || (b.token != nil && p.raw != nil && bytes.HasPrefix(p.raw, b.token))
}

// before records that the next request or load may decide the result.
func (f *flight) before(token []byte) { f.basis = basis{at: f.c.clock(), token: token} }

func newFlight[T any](c *Cache, key string, g *generation, ttl time.Duration, load LoaderFunc[T]) *flight {
	return &flight{
		c: c, key: key, g: g, ttl: ttl, versioner: versioner[T](),
		load: func(ctx context.Context) (any, error) { return load(ctx) },
		decode: func(b []byte) (any, error) {
			var v T
			err := c.codec.Unmarshal(b, &v)
			return v, err
		},
	}
}

// run takes the key from what a read found in it to a value: it decodes a
// value another process filled meanwhile, waits for another's lease, or takes
// the lease itself and loads. It never waits past Options.LeaseWait.
func (f *flight) run(ctx context.Context, e entry) (any, error) {
	c := f.c
	deadline := time.Now().Add(c.cfg.LeaseWait)
	bo := backoff{max: c.cfg.LeasePoll}
	waited := false
	// The basis stays as the caller left it until a request below replaces
	// it: e may come from refresh's lease attempt, whose result predates
	// now, and a later stamp would let callers that started after that
	// attempt (after an invalidation from another process) take e's value.
	for {
		switch e.st {
		case stValue, stRefresh:
			v, err := f.decode(e.payload)
			if err == nil {
				return v, nil
			}
			c.corrupted(f.key, err)
			e.st = stCorrupt
			continue
		case stNotFound:
			return nil, ErrNotFound
		case stTombstone, stForeign:
			// Recently invalidated (or not ours to replace): serve the source,
			// fill nothing.
			return f.loadOnly(ctx)
		case stLease:
			if !waited {
				waited = true
				c.stats.leaseWaits.Add(1)
			}
			if time.Now().After(deadline) {
				c.log.Warn("cache: another process's lease outlived LeaseWait; loading without filling",
					"key", f.key, "wait", c.cfg.LeaseWait)
				return f.loadOnly(ctx)
			}
			sleep(ctx, bo.next())
			if c.hookLeaseWaited != nil {
				c.hookLeaseWaited(f.key)
			}
			f.before(e.raw)
			raw, present, err := c.getRaw(ctx, f.key)
			c.redisResult(ctx, err)
			if err != nil {
				return f.degrade(ctx)
			}
			e = c.classify(raw, present, f.g)
			continue
		}
		// Absent, stale, corrupt, a versioned tombstone or a dead lease
		// over one: take the lease, unless the key changed since we looked,
		// and load. A lease over a floor carries it on.
		fl := floorIn(&e)
		if time.Now().After(deadline) || (fl.on && !f.versioner) {
			return f.loadOnly(ctx)
		}
		stamp, ttl := fl.lease(c.leaseStamp(f.g, nowMs()), c.cfg.LeaseTTL)
		lease := encodeEntry(stamp, newToken())
		f.before(lease)
		ok, cur, present, err := c.acquire(ctx, f.key, e.raw, lease, ttl, false)
		if err == errHeld {
			c.redisResult(ctx, nil)
			return f.loadOnly(ctx)
		}
		c.redisResult(ctx, err)
		switch {
		case err != nil:
			return f.degrade(ctx)
		case ok:
			return f.loadAndFill(ctx, lease, stamp, nil)
		}
		e = c.classify(cur, present, f.g)
	}
}

// refresh reloads a current value early (XFetch). Its refresh lease carries
// the value, so readers keep being served while it loads.
//
// The lease goes in only over the very bytes the hit read (strict mode). An
// absent key means an invalidation deleted the value since that read:
//
//  1. A hit reads v1 and decides to refresh.
//  2. Another process commits v2 and invalidates: the key is deleted.
//  3. A refresh lease installed now would carry v1, serve it to every
//     reader, and a failed load would put v1 back for its TTL.
//
// So refresh then goes on as a miss: a plain lease, no value served.
func (f *flight) refresh(ctx context.Context, e entry) (any, error) {
	c := f.c
	now := nowMs()
	stamp := c.leaseStamp(f.g, now)
	if e.h.versioned && e.h.rowVer > 0 {
		// The value recorded its row version: that is the floor of the
		// reload, so a loader that reads a lagging replica cannot fill an
		// older row over it (the refusal puts the value back).
		stamp.versioned, stamp.rowVer = true, e.h.rowVer
	}
	lh := e.h
	lh.kind = kindRefresh
	prefix := append(appendHeader(nil, lh), newToken()...)
	lease := append(prefix[:len(prefix):len(prefix)], e.payload...)
	ttl := c.cfg.LeaseTTL
	if exp := e.h.expires(); exp > now {
		ttl = max(ttl, time.Duration(exp-now)*time.Millisecond)
	}
	f.before(prefix)
	ok, cur, present, err := c.acquire(ctx, f.key, e.raw, lease, ttl, true)
	c.redisResult(ctx, err)
	switch {
	case err != nil:
		return f.degrade(ctx)
	case !ok:
		return f.run(ctx, c.classify(cur, present, f.g))
	}
	c.stats.earlyRefreshes.Add(1)
	return f.loadAndFill(ctx, prefix, stamp, &e)
}

// loadAndFill loads under the lease whose header and token are prefix and
// stores the result (a value or a not-found entry) if the lease still holds.
// stamp carries the generations known when the lease was taken: a bump after
// it makes the fill stale, as the load may predate the bump. restore is the
// entry a refresh lease replaced, put back if the load fails.
func (f *flight) loadAndFill(ctx context.Context, prefix []byte, stamp header, restore *entry) (v any, err error) {
	c := f.c
	// The loader's panics are caught by call; a panic after it (the
	// codec's Marshal) would leave the lease holding every process off the
	// key until LeaseTTL. Give it back, and hand the panic to the callers.
	defer func() {
		if r := recover(); r != nil {
			v, err = nil, panicked(c, r)
			f.giveBack(ctx, prefix, restore, &stamp)
		}
	}()
	v, dur, err := c.call(ctx, f.load)
	if c.hookAfterLoad != nil {
		c.hookAfterLoad(f.key)
	}
	h := header{nsGen: stamp.nsGen, allGen: stamp.allGen, filled: nowMs(), loadDur: max(ms(dur), 1)}
	var stored []byte
	var ttl time.Duration
	switch {
	case errors.Is(err, ErrNotFound):
		v, err = nil, ErrNotFound
		if !admits(&stamp, nil, true) {
			f.refuse(ctx, prefix, restore, &stamp)
			return nil, err
		}
		ttl = c.jittered(c.cfg.NotFoundTTL)
		h.kind, h.ttl = kindNotFound, ms(ttl)
		stored = encodeEntry(h)
	case err != nil:
		f.giveBack(ctx, prefix, restore, &stamp)
		return nil, err
	default:
		if !admits(&stamp, v, false) {
			f.refuse(ctx, prefix, restore, &stamp)
			return v, nil
		}
		data, merr := c.codec.Marshal(v)
		if merr != nil {
			c.log.Error("cache: cannot encode value; not cached", "key", f.key, "err", merr)
			f.giveBack(ctx, prefix, restore, &stamp)
			return v, nil
		}
		ttl = c.jittered(f.ttl)
		h.kind, h.ttl = kindValue, ms(ttl)
		recordVersion(&h, v)
		stored = encodeEntry(h, data)
	}
	if c.hookBeforeFill != nil {
		c.hookBeforeFill(f.key)
	}
	ok, ferr := c.fill(ctx, f.key, prefix, stored, ttl)
	c.redisResult(ctx, ferr)
	if ferr == nil && !ok {
		c.stats.fillsRefused.Add(1)
		c.log.Debug("cache: fill refused: the key was invalidated during the load", "key", f.key)
	}
	return v, err
}

// refuse ends a lease whose load is older than the floor it carries
// (stamp): the value is returned to the callers, and the floor's tombstone
// (or the value a refresh lease replaced, restore) goes back in place of
// the lease.
func (f *flight) refuse(ctx context.Context, prefix []byte, restore *entry, stamp *header) {
	f.c.stats.fillsRefused.Add(1)
	f.c.log.Debug("cache: fill refused: the loaded row is older than the key's versioned tombstone",
		"key", f.key, "version", stamp.rowVer)
	f.giveBack(ctx, prefix, restore, stamp)
}

// giveBack ends a lease after a failed load: it restores the entry a refresh
// lease replaced, or the versioned tombstone a lease carrying a floor
// replaced, or deletes a plain lease so that waiters retry at once.
func (f *flight) giveBack(ctx context.Context, prefix []byte, restore *entry, stamp *header) {
	entry, ttl := restoreFloor(stamp)
	if restore != nil {
		if exp, now := restore.h.expires(), nowMs(); exp > now {
			entry, ttl = restore.raw, time.Duration(exp-now)*time.Millisecond
		}
	}
	_, err := f.c.fill(ctx, f.key, prefix, entry, ttl)
	f.c.redisResult(ctx, err)
}

// loadOnly loads without touching Redis.
func (f *flight) loadOnly(ctx context.Context) (any, error) {
	f.before(nil)
	v, _, err := f.c.call(ctx, f.load)
	if errors.Is(err, ErrNotFound) {
		return nil, ErrNotFound
	}
	return v, err
}

// degrade finishes a flight whose Redis call failed.
func (f *flight) degrade(ctx context.Context) (any, error) {
	f.c.stats.degraded.Add(1)
	return f.loadDegraded(ctx)
}

// loadDegraded loads without Redis, within Options.MaxDegradedLoads.
func (f *flight) loadDegraded(ctx context.Context) (any, error) {
	wctx, cancel := context.WithTimeout(ctx, f.c.cfg.LoadTimeout)
	defer cancel()
	release, err := f.c.degradedSlot(wctx)
	if err != nil {
		return nil, err
	}
	defer release()
	return f.loadOnly(ctx)
}
