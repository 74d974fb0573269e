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
// take over from the checkpoint when it dies.
//
// # Recovery
//
// The checkpoint is one record (binlog.ClaimStore; by default a Redis hash
// beside the cache) that holds the position, the identity of the server it
// belongs to, the epoch of the leadership that owns it and that
// leadership's token. A new leadership claims it with a script that checks
// the leader lock's token and counts the leadership in the record's own
// epoch; every save after that is a compare-and-set against what this
// leadership last wrote, and also checks that Redis has not restarted or
// failed over since the claim (its run_id). Whenever a save is refused the
// leader steps down at once (lock.ErrStepDown): it releases the lock and
// campaigns again after TTL/5, and the next leadership (another instance's
// or its own) claims the record and replays from the position it holds.
// Nothing is saved once leadership is known lost.
//
// Why this design: an epoch counter kept apart from the checkpoint can be
// lost on its own (a Redis that lost data, another Cluster shard, another
// store), and then a new leader draws an epoch that the surviving
// checkpoint refuses while its lock keeps everyone else out, or an old and
// a new leader hold the same epoch. In one record, epoch and position are
// lost or kept together, and a compare-and-set sees every change made
// behind the leader's back, where an epoch comparison sees only newer
// epochs. Stepping down, rather than reloading in place, keeps one path for
// every refusal, including "another leadership claimed", and never waits
// while the lock is still held.
//
// A record with no position (a first start, or Redis lost the record) is
// answered like a lost binlog position, never taken for a harmless first
// start: changes may have been committed since the position that was lost
// (while no invalidator ran, or before the old lock expired), so the
// invalidator reads the server's current position, bumps the generation
// of the whole cache (O(1), no SCAN) and saves that position before it
// streams from it. A first start therefore costs one flush of the cache.
//
// What happens under each Redis fault:
//
//   - Redis loses everything (FLUSHALL, a restart without persistence, a
//     failover to an empty replica): the lock, the record and the cached
//     keys go together. The leader's next save finds no record and it steps
//     down; the next leadership finds no position, flushes the cache and
//     starts from the current position. Nothing cached before the loss
//     survives to be stale, and every change after the new position is
//     streamed.
//
//   - Redis loses a suffix of its writes (a failover to a replica that
//     lagged, an append-only file that lost its last second), with or
//     without the lock: the record goes back to an earlier state, or Redis's
//     run_id changed although the record looks as it was left. The leader's
//     next save is refused, it steps down, and the next leadership replays
//     from the record's position, which is never later than the lost
//     invalidations. A deposed leader cannot save past them: its saves
//     compare-and-set against a record that changed.
//
//   - Another leadership claimed the record (this leader was paused past
//     its lock's TTL): its save is refused; it steps down.
//
//   - The leader cannot reach MySQL (a partition, a stream that keeps
//     failing to connect): the stream retries by itself, and when neither a
//     transaction nor a probe of the server's position has come through for
//     Options.StepDownAfter (3 x LeaderTTL by default), the leader steps
//     down, so that a standby that can reach MySQL takes over from the
//     checkpoint.
//
//   - The leader dies (SIGKILL): a standby takes the lock once its TTL has
//     run out and polls within TTL/10, so it leads within about
//     LeaderTTL + LeaderTTL/10 and replays from the checkpoint.
//
// Epochs count leaderships of the record; they restart at 1 when the record
// is lost, which is harmless because fencing rests on the owner's token.
//
// # Names and errors at start
//
// Options.Name names the source; the default keys of the lock and the
// checkpoint follow it ("cacheaside:invalidate:{<Name>}:leader" and
// ":checkpoint", one hash tag so that a Cluster keeps them in one slot).
// Services or MySQL clusters that share a Redis need names of their own.
// The checkpoint records the identity of the server its position belongs
// to (binlog.Stream.ServerIdentity: server_uuid or server_id, and the GTID
// domains). A file/offset checkpoint met by another server is answered
// like a lost position (a flush); a GTID checkpoint resumes on another
// server, which streams from it only if its GTID history holds it and
// reports a lost position otherwise.
// Run checks MySQL's settings and the user's privileges before it
// campaigns (binlog.Stream.Check), so a wrong setting or a missing
// privilege (REPLICATION CLIENT, say) is an error from Run at start, on a
// first start and on a resume alike, never a retry loop.
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
// The checkpoint detects lost writes of the Redis (or Cluster shard) that
// holds it. When the cache's keys live elsewhere (other Cluster shards,
// Options.Checkpoints in another store), a loss there that leaves the
// checkpoint's Redis intact is not detected: keep the checkpoint beside
// the keys, or make the invalidations durable (WAIT) yourself.
//
// A replayed stretch of the binlog invalidates keys a second time, which
// costs misses, never stale data. Between a generation bump and the next
// generation refresh of another process (cache.Options.GenerationRefresh),
// that process may still serve entries of the flushed namespace.
package invalidate
