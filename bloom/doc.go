// Package bloom is a Bloom filter of the keys that exist, shared by every
// instance of a service through Redis, so that lookups of ids that never
// existed are answered without Redis or MySQL. It plugs into cache as
// Options.Filter (MayContain) and into invalidate as the filter its insert
// events go to (Add).
//
// # Guarantee
//
// MayContain answers false only for a key that the current version of the
// filter does not hold: a key that was not in the scan that built the
// version and was not added since. Every row the build's scan read, and
// every key whose Add began after the build was announced, is in the
// version; once Add returns, every instance that asks Redis sees the key.
// An Add made before a build was announced, for a row that commits after
// the build's scan, reaches only the old version: the key is in the new
// one once the binlog invalidator's Add after the commit is, which
// Options.BeforeSwap can wait for (invalidate's Invalidator.WaitApplied);
// without it the key reads "cannot contain" after the swap for the
// invalidator's lag. Warm and Rebuild must scan the primary (or a replica
// known to be caught up): a lagging replica's snapshot misses rows the
// invalidator may already have added before the build was announced. Whenever the filter cannot tell — not warmed yet, bitmap
// deleted, Redis unreachable, parameters that differ from this instance's
// Options — MayContain answers true ("may contain"): the filter fails open
// and the read goes on to the cache and MySQL. After a Redis error it fails
// open at once, without a round trip, until ParamsRefresh has passed.
//
// False positives are the price: about Options.FalsePositiveRate of the
// absent keys once Options.ExpectedItems keys are in, more beyond that
// (Fill reports the rate now; rebuild with larger Options when it passes
// what you accept), and deleted keys stay in until a Rebuild.
//
// Version ids start from Redis's clock (TIME), not the client's, so that
// after a Delete no id is used twice. A bitmap being built expires after
// Options.BuildTimeout unless the swap makes it current, so a builder that
// dies leaks nothing. A replaced version is dropped after DropDelay, by
// the Rebuild that replaced it or by a later build, never sooner.
//
// # Model
//
// A filter under key is
//
//   - a hash at key with the storage format and, for each version, its id
//     and parameters "id:m:k:hash": "cur" (answers lookups), "next" (being
//     built) and "prev" (just replaced, still written for DropDelay);
//   - one Redis string per version, key:v<id>, of m bits: the bit locations
//     of bits-and-blooms/bloom/v3 (Locations mod m), at SETBIT offsets;
//   - a channel, key:adds, on which the add script publishes, from inside
//     itself, the bits it set with the version's add sequence number
//     (field seq:<id> of the hash, incremented by the same script).
//
// Every instance reads m, k and the hash version from the hash and checks
// them against its own Options (Check reports a *MismatchError; meanwhile
// MayContain fails open and Add writes with the stored parameters). Lookups
// run one script on one bitmap: all bits set, one clear, or bitmap missing.
// Adds run one script that checks which versions the hash lists, writes to
// each listed one whose bitmap exists (it never creates a missing bitmap),
// publishes, and returns the hash; the client writes again to any listed
// version it did not know of.
//
// With Options.Local, Run keeps a copy of the current bitmap in the process
// (a bloom/v3 filter behind a lock, loaded with GET and converted from
// SETBIT's MSB-first bytes to bitset's LSB-first words) and applies the
// adds published on the channel; MayContain then needs no round trip. The
// copy answers only while Run knows it holds every add to its version:
// the hash and the bitmap are read in one MULTI, so the copy knows the
// sequence number it holds, and any sign of a missed add (a sequence gap,
// an add for an unknown version, a filter found gone, a second
// subscription confirmation after a silent reconnect, a periodic check
// sent as a PING on the subscription that finds the copy behind or goes
// unanswered) takes it out of service until it has reloaded; meanwhile
// MayContain asks Redis. Why sequence numbers: pub/sub drops messages
// without telling the subscriber (output-buffer limits disconnect exactly
// the slow ones, and go-redis re-subscribes on its own), so only a gap in
// a sequence written atomically with the bits shows that a copy is behind.
//
// Warm and Rebuild read keys (Scan reads them from MySQL) into a bloom/v3
// filter in the process and OR it into a new version that every Add
// already writes to, then swap it in with one script: adds made during a
// rebuild reach both versions and none is lost. See Rebuild for the steps.
//
// # Order at start-up
//
// Start the binlog invalidator first and Warm after it leads or stands by:
// a scan that starts after the invalidator's start position misses no row,
// since every later commit reaches the filter through the invalidator. A
// filter warmed before the invalidator's first start (no checkpoint yet)
// would miss every row committed between the scan and that start, which
// the stream begins after; the invalidator deletes such a filter when it
// first starts, and it answers "may contain" until warmed again.
//
// # What it does not promise
//
//   - An Add that fails (Redis down) is not retried: the caller retries, as
//     the invalidator does. A row inserted meanwhile may be reported absent
//     by instances that read the filter.
//   - Between a row's commit and its Add, the row can be reported absent:
//     Add before the commit to close that window (an aborted insert leaves
//     a harmless false positive). The binlog invalidator's Add, after the
//     commit, is the one a rebuild relies on.
//   - A local copy in another process sees an add when the add's message
//     arrives (typically well under a millisecond after Add returned).
//   - Delete the filter with Delete, not by deleting only its hash: an
//     instance that still holds the parameters would use the bitmap.
package bloom
