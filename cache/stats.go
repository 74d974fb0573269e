package cache

import "sync/atomic"

// Stats counts what a Cache did since New. Counters only grow.
type Stats struct {
	// Hits counts reads answered by a value in Redis.
	Hits uint64
	// Misses counts reads that found no usable entry and went on to load or
	// wait for another process's load.
	Misses uint64
	// Loads counts loader calls.
	Loads uint64
	// LeaseWaits counts loads that waited for another process's lease.
	LeaseWaits uint64
	// NotFoundHits counts reads answered ErrNotFound by a cached not-found entry.
	NotFoundHits uint64
	// FilterRejects counts reads answered ErrNotFound by Options.Filter.
	FilterRejects uint64
	// Stale counts entries found older than a generation bump.
	Stale uint64
	// Corrupt counts entries that did not decode (foreign or damaged bytes,
	// another type); they are read as misses and replaced.
	Corrupt uint64
	// FillsRefused counts loaded values not stored because an invalidation
	// took their lease, or because they are older than the version of the
	// key's versioned tombstone.
	FillsRefused uint64
	// EarlyRefreshes counts values reloaded before expiry (Options.EarlyRefresh).
	EarlyRefreshes uint64
	// Errors counts failed Redis calls.
	Errors uint64
	// Degraded counts reads answered by the loader without Redis, because
	// Redis failed or the circuit breaker was open.
	Degraded uint64
	// Invalidations counts invalidated keys and generation bumps.
	Invalidations uint64
	// OOMDeletes counts keys invalidated with a plain DEL because Redis,
	// out of memory under noeviction, refused their tombstone or floor.
	OOMDeletes uint64
	// BreakerOpen reports whether the circuit breaker is open now.
	BreakerOpen bool
}

// counters are the atomic counters behind Stats.
type counters struct {
	hits, misses, loads, leaseWaits, notFoundHits, filterRejects, stale, corrupt,
	fillsRefused, earlyRefreshes, errors, degraded, invalidations, oomDeletes atomic.Uint64
}

// Stats returns a snapshot of the counters.
func (c *Cache) Stats() Stats {
	s := &c.stats
	return Stats{
		Hits: s.hits.Load(), Misses: s.misses.Load(), Loads: s.loads.Load(),
		LeaseWaits: s.leaseWaits.Load(), NotFoundHits: s.notFoundHits.Load(),
		FilterRejects: s.filterRejects.Load(), Stale: s.stale.Load(), Corrupt: s.corrupt.Load(),
		FillsRefused: s.fillsRefused.Load(), EarlyRefreshes: s.earlyRefreshes.Load(),
		Errors: s.errors.Load(), Degraded: s.degraded.Load(), Invalidations: s.invalidations.Load(), OOMDeletes: s.oomDeletes.Load(),
		BreakerOpen: c.breaker.open(),
	}
}
