// Package invalidate keeps a Redis cache consistent with MySQL by turning
// every committed row change in the binary log into cache invalidations,
// from inside the service process.
//
// Rules map a table to the keys that hold copies of its rows, as templates
// ("user:{id}", "user:email:{email|lower}") or funcs. Both row images count:
// an update that changes an email invalidates the old key and the new one.
// Inserts invalidate too, which clears cached not-found entries, and their
// keys are added to a Bloom filter when one is configured. A table-wide
// change (TRUNCATE, DROP, RENAME, ALTER and statements the stream cannot map
// to rows) bumps the generation of the table's key namespaces, so every key
// of the table reads as a miss at once, with no SCAN; a lost binlog position
// bumps the generation of the whole cache. Changes made by foreign-key
// cascades never reach the binary log: Rules.Check learns the cascading
// foreign keys, and a row change of the parent then bumps the watched child
// tables the same way.
//
// # Guarantee
//
// Every committed change reaches Redis, even when the process that wrote it
// died right after its commit (race R3): the checkpoint only moves past a
// transaction once Redis has acknowledged the invalidations of it and of
// every transaction before it. A failed invalidation is retried with backoff
// for as long as it takes, and while it is retried the binlog stream waits
// (backpressure) instead of dropping anything. By default the checkpoint is
// stored in the same Redis as the cache, so if Redis loses acknowledged
// writes (a failover to a lagging replica, race R7) the checkpoint rolls back
// with them and the lost invalidations are replayed.
//
// # Model
//
// Every instance of the service runs an Invalidator. A leader election (see
// package lock) lets exactly one consume the binlog; the others stand by and
// take over from the checkpoint when it dies. Checkpoint writes are fenced by
// the leader's epoch, so a deposed leader cannot move the checkpoint.
//
// Invalidation uses the cache's own semantics (see package cache): leases of
// fills in flight are killed, and with a tombstone window configured on the
// cache a fill that read a row before its change became visible is refused
// (race R5). For a rule with a Version column the keys get versioned
// tombstones instead, which refuse any fill older than the change, from a
// lagging replica (R4) or an invisible commit (R5) alike, and accept newer
// fills at once.
//
// # What it does not promise
//
// A replayed stretch of the binlog invalidates keys a second time, which
// costs misses, never stale data. Between a generation bump and the next
// generation refresh of another process (cache.Options.GenerationRefresh),
// that process may still serve entries of the flushed namespace.
package invalidate
