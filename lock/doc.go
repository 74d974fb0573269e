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
