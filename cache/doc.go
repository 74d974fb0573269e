// Package cache is a read-through cache over Redis that stays consistent
// with a SQL source of truth (MySQL, MariaDB) in the cache-aside pattern.
//
// A repository method wraps its query in Fetch; a write goes through Write
// (or is seen by the binlog invalidator, which calls Invalidate):
//
//	func (r *Repo) User(ctx context.Context, id int64) (User, error) {
//		return cache.Fetch(ctx, r.cache, "user:"+strconv.FormatInt(id, 10),
//			func(ctx context.Context) (User, error) { return r.queryUser(ctx, id) })
//	}
//
// # Guarantee
//
// Redis only ever holds copies. A value is stored only by a reader that took
// the key's lease before it read the source, and only while that lease is
// still in the key; every invalidation removes the lease. So once an
// invalidation issued after a commit has returned, no value read before that
// commit can be stored, and after the writes stop every key agrees with the
// source or is absent. What is not promised: reads that overlap a write may
// return the old row (use WriteStrong for read-your-writes); a write that
// neither goes through Write nor reaches the binlog invalidator is only
// undone by the TTL; other processes see InvalidateNamespace and
// InvalidateAll within Options.GenerationRefresh; a loader that reads a
// lagging replica may fill the row as it was before the invalidation
// (race R4), unless the key was invalidated with InvalidateVersions.
//
// # Versioned mode
//
// Where a table has a monotonic version column and the cached type
// implements Versioner, InvalidateVersions(ctx, KeyVersion{key, v}) leaves a
// versioned tombstone for Options.VersionTTL instead of deleting the key:
//
//   - It replaces any lease or value, like Invalidate.
//   - A reader that finds it takes a lease over it that carries its version
//     (the floor) and loads. A value with CacheVersion() >= floor fills; an
//     older one is returned to the caller but not stored, and the tombstone
//     goes back in place of the lease (Stats.FillsRefused). A not-found
//     result fills only when the floor is 0. A type that does not implement
//     Versioner never fills over a versioned tombstone: it loads each time.
//   - An early refresh of a value that recorded its version takes that
//     version as its floor: an older row (a lagging replica) is refused
//     and the value stays.
//   - A versioned tombstone that lands on a hold (WriteStrong's
//     tombstones, a TombstoneTTL window) keeps the hold: it lives that
//     much longer, and readers load without filling until the hold ends,
//     so the binlog invalidator catching up on an earlier commit of the
//     row cannot let a reader fill the old row while the write runs.
//   - Floors never go down: a tombstone sent over a higher versioned
//     tombstone is dropped, and one sent over a lease or value that records
//     a higher version (filled values of a Versioner record theirs) takes
//     that version. So invalidations may arrive in any order.
//   - Deletes: pass the deleted row's version plus one, so that neither the
//     old row nor a cached not-found is filled before the tombstone expires
//     (readers still get ErrNotFound from the source). Version 0 means any
//     value or not-found may fill: it only kills leases.
//   - With Options.KeepVersionFloors (set it in every process that uses
//     versioned mode), a plain Invalidate (and Write's invalidations, and
//     WriteStrong's tombstones) keeps the floor: over an entry that carries a version
//     above 0 it leaves a versioned tombstone at that version, living
//     Options.VersionTTL (or the plain tombstone's life if longer), instead
//     of deleting the key. A plain tombstone's life (TombstoneTTL,
//     WriteStrong's WriteTimeout) is a hold within it: until it passes,
//     readers load without filling, as under a plain tombstone. Redis's
//     clock says when it has passed (the lease script compares the key's
//     time to live with the floor's own life), not the reader's, which may
//     run ahead of the writer's by more than the hold. So Write
//     and the binlog invalidator may reach a key in either order. The cost:
//     a deleted row whose value recorded a version is not cached as
//     not-found until that tombstone expires (readers load it), and a
//     script per key instead of a DEL. Without the option, plain
//     invalidations delete, and one that lands after a versioned tombstone
//     removes its floor.
//
// Processes from before versioned mode read versioned entries as corrupt
// and replace them, and processes from before the hold fill through it:
// upgrade the readers before invalidating with versions.
//
// # How a read works
//
//  1. Options.Filter, when set, may answer ErrNotFound with no round trip.
//  2. One GET (pipelined with the namespace's and the global generation once
//     per Options.GenerationRefresh). Every entry starts with a small header
//     (magic, version, kind, row version in versioned mode, generations,
//     fill time, logical expiry, load
//     time), then the codec's bytes. A current value is decoded and
//     returned; a not-found entry returns ErrNotFound.
//  3. Otherwise (absent, stale generation, corrupt bytes) one caller per
//     process goes on, in a singleflight keyed by the key and its epoch;
//     the others wait for it, each on its own context.
//  4. That flight installs a lease entry in the key itself, with a script
//     that succeeds only if the key still holds what the GET saw, and loads.
//  5. It fills with a script that stores the value only if the key still
//     holds its lease. A not-found result stores a not-found entry with a
//     short TTL instead. Every TTL is jittered.
//  6. A flight that finds another process's lease polls with jittered
//     backoff (Options.LeasePoll) and returns the value that appears; if the
//     lease vanishes it starts over; past Options.LeaseWait it loads without
//     filling. A tombstone makes it load without filling; a versioned
//     tombstone is leased over, and the fill must reach its version.
//  7. With Options.EarlyRefresh, a hit close to expiry may start a
//     background reload (XFetch) under a refresh lease that carries the
//     current value, so other readers keep being served. The refresh lease
//     replaces only the very bytes the hit read: if an invalidation deleted
//     them meanwhile, the reload goes on as a miss (step 4) and the old value
//     is neither served nor put back after a failed load.
//
// FetchMany does the same for many keys with one MGET (a pipeline of GETs
// on a ClusterClient), one pipeline of leases, one loader call for
// all missing keys and one pipeline of fills. Its leases and fills run to
// the end even if the caller's context ends (bounded by Options.LeaseTTL),
// so it leaves no lease behind. A key that changes under it (to bytes that
// do not decode, say) is loaded without filling.
//
// # How a write invalidates
//
//  1. Invalidate deletes the keys (or sets tombstones, Options.TombstoneTTL)
//     in one pipeline (with Options.KeepVersionFloors, of a one-key script
//     that keeps a version floor, see Versioned mode); a deleted or
//     overwritten lease refuses its fill.
//     It then bumps the keys' in-process epochs, so Fetch calls that start
//     later never join a flight that began before.
//  2. Write invalidates, runs fn, invalidates again (even if fn failed or
//     panicked), and optionally once more after Options.DelayedInvalidation.
//     When Options.Filter is an Adder, Write and WriteStrong first add
//     their keys to it, so a row fn inserts is not reported missing by the
//     filter until the binlog invalidator adds it.
//  3. WriteStrong (or Options.Strong) sets tombstones living
//     Options.WriteTimeout before fn: until the invalidation after fn, every
//     reader loads from the source and nobody fills, so a read issued after
//     the commit sees the write.
//  4. InvalidateVersions sets versioned tombstones with a one-key script
//     that keeps the highest version (see Versioned mode).
//  5. InvalidateNamespace and InvalidateAll bump a generation in Redis; each
//     entry records the generations its filler knew when it took the lease,
//     and an entry older than a known generation is a miss.
//
// # Races
//
//	R1  stale set after delete: the reader's lease, taken before its read, is
//	    removed by the delete; its fill is refused.
//	R2  delete, then write: the invalidation after fn removes a value filled
//	    between the first delete and the commit.
//	R4  replica-lag fill: a reader loads from a lagging replica after the
//	    invalidation and would fill the old row. Closed in versioned mode:
//	    the versioned tombstone makes the reader's lease carry the new
//	    version, and the old row's fill is refused. Without it, load from
//	    the primary.
//	R6  out-of-order fills: only the current lease holder can fill.
//	R10 joined an old flight: Invalidate moves the key to a new flight epoch;
//	    for an invalidation from another process, every shared result
//	    carries what it rests on, and a caller takes it only if that was
//	    read from Redis after the caller started, or is the lease the
//	    caller's own read found and judged current (not older than a
//	    generation it knows, as after another process's
//	    InvalidateNamespace); otherwise it loads again.
//
// # Degradation
//
// Redis errors feed a circuit breaker (Options.BreakerThreshold,
// Options.BreakerCooldown). After the cooldown one read probes Redis; a
// read whose caller gives up frees the probe only if it was the probe.
// While it is open, and on any Redis error, Fetch
// returns the loader's value without error, still one load per key per
// process, at most Options.MaxDegradedLoads at a time. Bytes that do not
// decode (another writer, another format version, another Redis type) are a
// miss; strings are replaced through the lease, other types are left alone.
//
// # A hung or dead Redis
//
// Every Redis request of a read (the GET, a lease, a poll, a fill) is
// bounded by Options.RedisTimeout (100ms) and by half the time left
// before the caller's deadline, whichever is sooner; a request cut short
// while the caller still waits is a Redis failure. So with a Redis that
// accepts connections and never answers, or one that was killed, a read
// gives up on Redis in time to be answered by the loader within the
// caller's deadline, and after Options.BreakerThreshold such reads the
// breaker opens and reads stop touching Redis. The bound after Redis dies:
// no Fetch waits longer than RedisTimeout for Redis to answer, since the
// first request that is not answered in time sends the read to the loader.
//
// go-redis ignores context deadlines unless told otherwise, and then a
// hung request waits for ReadTimeout (seconds) and its retries, and a dead
// server costs seconds of dial retries. Create the client with:
//
//	redis.Options{
//		ContextTimeoutEnabled: true,                   // required: lets RedisTimeout and callers' deadlines end a request
//		DialTimeout:           100 * time.Millisecond, // the calls that carry no bound of their own (Invalidate, Write)
//		ReadTimeout:           100 * time.Millisecond, // idem
//		WriteTimeout:          100 * time.Millisecond, // idem
//		PoolTimeout:           100 * time.Millisecond, // a pool whose connections all hang
//	}
//
// (the same fields exist in redis.ClusterOptions and
// redis.FailoverOptions). New logs a warning for a client without
// ContextTimeoutEnabled. The bound costs each hit a timer context, five
// allocations (BenchmarkFetchHitVsRawBounded); a negative RedisTimeout
// leaves requests to the client's own timeouts and spares it.
//
// # Memory pressure
//
// Run the cache's Redis with maxmemory-policy noeviction (Cache.Check
// says so at start). The eviction policies undo invalidations in silence:
// volatile-* evicts tombstones and version floors (they have TTLs),
// allkeys-* generation keys too. Under noeviction a full Redis refuses
// writes: fills fail (the value is returned, not cached), and an
// invalidation whose tombstone or floor is refused deletes the key with
// DEL instead, which Redis takes since it frees memory. The DEL still
// removes any lease (R1, R6 hold); the tombstone's window and the floor
// are lost for that key (Stats.OOMDeletes counts them).
//
// # Design notes
//
// The lease lives in the key rather than in a lock key beside it: a hit is
// one GET whether or not a load is under way, and each script touches one
// key, so Redis Cluster needs no hash tags. A lease is replaced only when
// the key holds exactly the bytes its taker saw, so two processes that both
// saw a stale entry cannot both take it.
//
// Generations are bumped to max(current+1, the bumper's known value+1, Redis
// clock in µs) rather than with INCR, so a bump after Redis lost the
// generation key still rises above what running processes remember.
// Processes only ever raise what they know.
//
// A hit costs one GET, a header decode that does not allocate, and the
// codec's Unmarshal: the same allocations as a raw GET and json.Unmarshal.
//
// Every script (lease.lua, fill.lua, bump.lua, invalidate.lua,
// versioned_tombstone.lua) touches exactly one key, and
// multi-key reads and writes are pipelines, so *redis.Client (alone or
// from a Sentinel failover client) and *redis.ClusterClient both work.
// Only the generation keys carry Options.Prefix; user keys are used as
// given.
//
// New refuses the clients that read around an invalidation, rather than
// document a bound it cannot keep: *redis.Ring, which moves a failing
// shard's keys to another shard (invalidations made meanwhile are lost
// when the shard returns, and no Ring option stops the rehashing), and a
// ClusterClient with ReadOnly, RouteByLatency or RouteRandomly, which
// reads from replicas that may not have applied an invalidation that
// already returned. New cannot see a failover client built with
// ReplicaOnly or RouteRandomly (it is a plain *redis.Client): do not use
// one for the cache, for the same reason.
//
// Options are checked by New, not repaired: a bad setting (a NaN Jitter,
// a negative TTL) is an error that names it, since a default put in its
// place in silence (a NaN Jitter once made every TTL 1ms) hides the
// mistake until it costs.
//
// Values that concurrent callers share through one load are shared, not
// copied: treat them as read-only.
package cache
