package cache

import (
	"context"
	"errors"
	"fmt"
	"math"
	randv2 "math/rand/v2"
	"runtime/debug"
	"strconv"
	"time"
)

// Fetch returns the value of key, reading through the cache: a hit costs one
// GET and a decode; on a miss one caller per process loads with load, under
// a lease that keeps other processes waiting for its fill instead of loading
// too (see the package documentation for the whole protocol).
//
// The load runs detached from ctx, bounded by Options.LoadTimeout, so a caller
// whose ctx ends gets ctx.Err() at once while the others still get the value.
// Callers that share a load share the loaded value: treat it as read-only.
// load returns ErrNotFound for a missing row; Fetch then caches a not-found
// entry and returns ErrNotFound until it expires or is invalidated. Any other
// loader error is returned and nothing is cached. With Redis failing or the
// circuit breaker open, Fetch returns the loader's value.
func Fetch[T any](ctx context.Context, c *Cache, key string, load LoaderFunc[T], opts ...FetchOption) (T, error) {
	var zero T
	if c.cfg.Filter != nil && !c.cfg.Filter.MayContain(ctx, key) {
		c.stats.filterRejects.Add(1)
		return zero, ErrNotFound
	}
	ok, probe := c.breaker.allow()
	if !ok {
		return fetchDegraded(ctx, c, key, load)
	}
	g := c.gens.of(c.cfg.Namespace(key))
	raw, present, start, err := c.getShared(ctx, key, g)
	c.redisResult(ctx, err)
	c.breaker.endProbe(probe)
	var e entry
	switch {
	case err == nil:
		e = c.classify(raw, present, g)
	case ctx.Err() != nil:
		return zero, ctx.Err()
	case unavailable(err):
		return fetchDegraded(ctx, c, key, load)
	default: // Redis answered with an error: the key holds another type.
		e.st = stForeign
	}
	switch e.st {
	case stValue, stRefresh:
		var v T
		err := c.codec.Unmarshal(e.payload, &v)
		if err == nil {
			c.stats.hits.Add(1)
			if e.st == stValue && c.cfg.EarlyRefresh > 0 && c.refreshDue(&e.h) {
				refreshEarly(ctx, c, key, g, e, c.ttl(opts), load)
			}
			return v, nil
		}
		c.corrupted(key, err)
		e.st = stCorrupt
	case stNotFound:
		c.stats.notFoundHits.Add(1)
		return zero, ErrNotFound
	case stCorrupt, stForeign:
		c.corrupted(key, errCorrupt)
	case stStale:
		c.stats.stale.Add(1)
	}
	c.stats.misses.Add(1)
	seen := readPoint{at: c.since(start), raw: e.raw}
	if e.st == stStale {
		// The read found an entry (perhaps a flight's lease) older than a
		// generation this process knows: a result resting on that lease
		// predates the bump, so finding the lease does not make the result
		// cover this read (R10 for a bump from another process).
		seen.raw = nil
	}
	return fetchMiss(ctx, c, key, g, e, seen, c.ttl(opts), load)
}

// fetchDegraded answers a read without Redis.
func fetchDegraded[T any](ctx context.Context, c *Cache, key string, load LoaderFunc[T]) (T, error) {
	c.stats.degraded.Add(1)
	// Without Redis there is no remote invalidation to notice; in-process
	// ones still move the key to a new flight epoch.
	return share[T](ctx, c, key, readPoint{at: math.MinInt64}, func() *flight {
		return newFlight(c, key, nil, 0, load)
	}, (*flight).loadDegraded)
}

// fetchMiss runs or joins the key's flight. It is apart from Fetch so that
// the closure's copy of e stays off the hit path's heap.
func fetchMiss[T any](ctx context.Context, c *Cache, key string, g *generation, e entry, seen readPoint, ttl time.Duration, load LoaderFunc[T]) (T, error) {
	return share[T](ctx, c, key, seen, func() *flight {
		return newFlight(c, key, g, ttl, load)
	}, func(f *flight, ctx context.Context) (any, error) { return f.run(ctx, e) })
}

// errStale is a shared result that predates the caller's read.
var errStale = errors.New("cache: shared result predates the read")

// share runs the key's flight (a new flight from newFlight, running run) or
// joins the one under way, and waits for its result or for ctx. A result
// whose basis does not cover the caller's read seen is not taken: the
// caller moves the key to a new flight epoch and tries again, and after two
// such results runs a flight of its own.
func share[T any](ctx context.Context, c *Cache, key string, seen readPoint, newFlight func() *flight, run func(*flight, context.Context) (any, error)) (T, error) {
	for attempt := 0; ; attempt++ {
		fk, epoch := c.flightKey(key)
		if attempt >= 2 {
			fk += "|" + strconv.FormatUint(c.private.Add(1), 36) // nobody else's
		}
		v, err := join[T](ctx, c, key, fk, seen, func(ctx context.Context) (any, basis, error) {
			f := newFlight()
			v, err := run(f, ctx)
			return v, f.basis, err
		})
		if err != errStale {
			return v, err
		}
		c.moveEpoch(key, epoch)
	}
}

// sharedResult is a flight's result as singleflight hands it out.
type sharedResult struct {
	v     any
	basis basis
}

// join runs fn as the in-process flight fk, or joins the flight already
// under way, and waits for its result or for ctx. fn runs on a context
// detached from ctx, so that this caller leaving does not fail the others.
func join[T any](ctx context.Context, c *Cache, key, fk string, seen readPoint, fn func(context.Context) (any, basis, error)) (T, error) {
	var zero T
	detached := context.WithoutCancel(ctx)
	ch := c.group.DoChan(fk, func() (v any, err error) {
		// The loader's panics are caught closer to it; this catches the
		// codec's, which would otherwise end the process from the flight's
		// goroutine.
		defer func() {
			if r := recover(); r != nil {
				v, err = sharedResult{basis: basis{at: 1<<63 - 1}}, panicked(c, r)
			}
		}()
		v, b, err := fn(detached)
		return sharedResult{v, b}, err
	})
	if c.hookJoined != nil {
		c.hookJoined(fk)
	}
	select {
	case r := <-ch:
		res, _ := r.Val.(sharedResult)
		if r.Shared && !res.basis.covers(seen) && (r.Err == nil || errors.Is(r.Err, ErrNotFound)) {
			return zero, errStale
		}
		if r.Err != nil {
			return zero, r.Err
		}
		if res.v == nil {
			return zero, nil
		}
		v, ok := res.v.(T)
		if !ok {
			return zero, fmt.Errorf("cache: key %q is being loaded as %T by a concurrent call, not as %T", key, res.v, zero)
		}
		return v, nil
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// refreshDue decides probabilistic early expiration (XFetch): refresh when
// now - delta*beta*ln(rand) >= expiry, delta being the value's load time.
func (c *Cache) refreshDue(h *header) bool {
	now := float64(time.Now().UnixMilli())
	gap := float64(max(h.loadDur, 1)) * c.cfg.EarlyRefresh * -math.Log(randv2.Float64())
	return now+gap >= float64(h.expires())
}

// refreshEarly reloads key in the background through a refresh lease, while
// readers keep getting the current value. One refresh per key per process.
func refreshEarly[T any](ctx context.Context, c *Cache, key string, g *generation, e entry, ttl time.Duration, load LoaderFunc[T]) {
	if _, busy := c.refreshing.LoadOrStore(key, struct{}{}); busy {
		return
	}
	if !c.goBackground() {
		c.refreshing.Delete(key)
		return
	}
	f := newFlight(c, key, g, ttl, load)
	detached := context.WithoutCancel(ctx)
	go func() {
		defer c.background.Done()
		defer c.refreshing.Delete(key)
		fk, _ := c.flightKey(key)
		_, err, _ := c.group.Do(fk, func() (res any, err error) {
			// As in join: a panic here would end the process. Callers
			// that joined the refresh get it as an error.
			defer func() {
				if r := recover(); r != nil {
					res, err = sharedResult{basis: basis{at: 1<<63 - 1}}, panicked(c, r)
				}
			}()
			v, err := f.refresh(detached, e)
			return sharedResult{v, f.basis}, err
		})
		if err != nil && !errors.Is(err, ErrNotFound) {
			c.log.Warn("cache: early refresh failed", "key", key, "err", err)
		}
	}()
}

// loadGrace is how long past Options.LoadTimeout a load is waited for
// before its callers are given ErrLoadTimeout.
const loadGrace = 100 * time.Millisecond

// call runs a loader with Options.LoadTimeout and turns a panic into a
// *PanicError. The loader runs in a goroutine of its own: one that ignores
// its ctx would otherwise hold every caller of the flight, and every later
// caller of the same epoch, for ever. Past LoadTimeout plus loadGrace call
// returns ErrLoadTimeout and leaves the loader to finish alone; its result
// is dropped.
func (c *Cache) call(ctx context.Context, load func(context.Context) (any, error)) (any, time.Duration, error) {
	c.stats.loads.Add(1)
	ctx, cancel := context.WithTimeout(ctx, c.cfg.LoadTimeout)
	defer cancel()
	start := time.Now()
	type result struct {
		v   any
		err error
	}
	done := make(chan result, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- result{err: panicked(c, r)}
			}
		}()
		v, err := load(ctx)
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, time.Since(start), r.err
	case <-ctx.Done():
	}
	grace := time.NewTimer(loadGrace)
	defer grace.Stop()
	select {
	case r := <-done:
		return r.v, time.Since(start), r.err
	case <-grace.C:
		c.log.Error("cache: loader ignored its context; its callers are released", "timeout", c.cfg.LoadTimeout)
		return nil, time.Since(start), ErrLoadTimeout
	}
}

// panicked turns a recovered panic into a *PanicError, logged, with the
// stack of the goroutine that panicked (call it from the deferred recover).
func panicked(c *Cache, r any) *PanicError {
	c.log.Error("cache: loader or codec panicked", "panic", r)
	return &PanicError{Value: r, Stack: debug.Stack()}
}

func nowMs() uint64 { return uint64(time.Now().UnixMilli()) }

func ms(d time.Duration) uint64 { return uint64(max(d.Milliseconds(), 0)) }
