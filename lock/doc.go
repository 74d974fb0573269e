// Package lock is a lock held in one Redis key, and a leader election built
// on it that hands each leadership a fencing epoch.
//
// # Locks
//
// Obtain and TryObtain take a lock with SET key token NX PX ttl, where the
// token is 128 random bits from crypto/rand. The key names the lock; the token
// names the holder. Refresh and Release are Lua scripts that compare the token
// and act in one step, so a holder whose lock expired can neither extend nor
// delete the lock of whoever took it next: both return ErrNotHeld. Obtain is
// a script too, and it succeeds when the key already holds the caller's
// token: go-redis retries a command whose reply was lost (a reset connection,
// a restarted server), and a plain SET NX would then report the caller's own
// lock as taken. Obtain waits for a held lock with jittered exponential
// backoff (Backoff), whose per-call state lives in each Obtain call. Release
// ignores the caller's cancellation, so a request that ends still releases.
//
// Every script touches exactly one key, so the package works with Client,
// Ring and ClusterClient alike; it needs nothing but redis.Scripter.
//
// # Elections
//
// Election.Run campaigns for a lock, and while it holds it runs a function
// with a context that is cancelled when leadership is lost and with an epoch
// taken from a counter (INCR) after each win. The leader refreshes its lock
// every RefreshEvery (TTL/3) and gives up leadership 9/10 of TTL after the
// last refresh that Redis confirmed, measured from when it was sent: Redis
// keeps the lock at least TTL after it executed that refresh, so a leader cut
// off from Redis stops before a standby can take over. Standbys poll for the
// lock with backoff capped at TTL/10, so after a leader dies a standby leads
// within about TTL + TTL/10.
//
// # Replicated Redis: Cluster and Sentinel
//
// Redis replicates asynchronously: a master acknowledges a write before any
// replica has it, and a replica that takes over has only what it had
// received. Across a failover the package therefore promises this much,
// and the tests on a real three-master cluster and a real Sentinel setup
// show each point:
//
//   - A lock the replica had received survives: its holder keeps it, Refresh
//     and Release work on the new master, and nobody else can take it.
//   - A lock taken within the replication lag before the failover (under a
//     millisecond on a healthy link, unbounded when the link is down) is
//     lost. Another holder can take it while the first still believes it
//     holds it; the first learns it at its next Refresh (ErrNotHeld), which
//     for a leader is at most RefreshEvery later. Obtain does not WAIT for
//     replicas: that would cost a round trip per lock and still not cover a
//     replica that acknowledged and then died.
//   - The election's epoch counter (key + ":epoch") has no hash tag, so on a
//     Cluster it usually lives on another master than the lock. A failover
//     of the lock's master alone leaves the counter intact: the next leader
//     gets a greater epoch and a fenced store refuses every write of the
//     deposed one. That is why the two keys are not forced into one slot:
//     one failover would then lose both together.
//   - A failover that loses the counter's own last INCR (the counter's
//     master fails over within the lag; under Sentinel, where the lock and
//     the counter share the one master, every failover that loses the lock)
//     hands the next leader the epoch a deposed leader already holds (a
//     wiped Redis starts the counter over at 1). Two leaders then hold one
//     epoch, and a store that compares epochs alone (accepting an equal one)
//     cannot tell them apart.
//
// So the epoch protects a store that keeps its own highest epoch durably
// elsewhere; for a store in the same Redis, such as the binlog checkpoint,
// the epoch is not enough on its own: the store must also refuse a save
// that does not follow from what the saving leadership last read or wrote
// there (a compare-and-set), so that a deposed leader holding a repeated
// epoch cannot move it.
//
// # What it does not promise
//
// The lock lives in one Redis primary; it is not Redlock. Its exclusion
// rests on Redis keeping the key: a crash that loses the last second of the
// append-only file, or a failover to a replica that had not yet received the
// SET, frees the lock while its holder still believes it holds it (Refresh
// then reports ErrNotHeld). Expiry rests on clocks: a holder paused past its
// TTL (a stop signal, a long GC pause, a suspended VM), or a Redis clock that
// jumps forward, lets two holders overlap. Leases cannot close those gaps;
// the fencing epoch can: give it to the store the leader writes to and have
// the store refuse a write whose epoch is lower than one it has seen. The
// epoch counter lives in the same Redis and is as durable as it is; stored
// beside the data it fences (as the binlog checkpoints are), both roll back
// together.
package lock
