package cache

import (
	"context"
	"crypto/rand"
	_ "embed"
	"errors"
	"fmt"
	randv2 "math/rand/v2"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// The lease protocol keeps the lease in the key itself, so a hit stays one
// GET and every script touches one key (Cluster-safe without hash tags):
//
//  1. A reader that misses installs a lease entry (lease.lua) before it reads
//     the source, unless the key changed since it looked.
//  2. It loads, then fills with fill.lua, which stores the value only while
//     the key still holds its lease.
//  3. Invalidate deletes the key or overwrites it with a tombstone. Either
//     removes any lease, so a fill whose read may predate the invalidation
//     is refused (races R1 and R6): only reads that began after the last
//     invalidation can fill.
//  4. Readers that find another's lease poll with jittered backoff until a
//     value appears, the lease vanishes (they start over) or LeaseWait passes
//     (they load without filling). Leases expire after LeaseTTL, so a holder
//     that dies delays readers by at most that long.

var (
	//go:embed lease.lua
	leaseSrc string
	//go:embed fill.lua
	fillSrc string

	leaseScript = redis.NewScript(leaseSrc)
	fillScript  = redis.NewScript(fillSrc)
)

// newToken returns a random lease token.
func newToken() []byte {
	b := make([]byte, tokenLen)
	_, _ = rand.Read(b) // never fails (crypto/rand panics on a broken source)
	return b
}

// acquire installs lease at key if the key is absent or holds seen (nil:
// the caller saw it absent). When it does not, it returns what the key holds.
// strict installs the lease only over exactly seen, never into an absent key:
// a refresh lease carries the value seen, which an invalidation that deleted
// the key since must not bring back.
func (c *Cache) acquire(ctx context.Context, key string, seen, lease []byte, ttl time.Duration, strict bool) (ok bool, cur []byte, present bool, err error) {
	if seen == nil {
		seen = []byte{}
	}
	ctx, cancel := c.bound(ctx)
	defer cancel()
	mode := "0"
	if strict {
		mode = "1"
	}
	res, err := leaseScript.Run(ctx, c.rdb, []string{key}, seen, lease, ttl.Milliseconds(), mode, holdArg(seen)).Result()
	if err != nil {
		return false, nil, false, err
	}
	switch v := res.(type) {
	case int64:
		if v == -1 {
			return false, seen, true, errHeld
		}
		return v == 1, nil, false, nil
	case string:
		return false, []byte(v), true, nil
	}
	return false, nil, false, fmt.Errorf("cache: lease script returned %T", res)
}

// errHeld says the versioned tombstone a lease was to replace is still in
// its hold, by Redis's clock: load without filling, as under a plain
// tombstone.
var errHeld = errors.New("cache: the key is held by a tombstone")

// holdArg is the lease script's ARGV[5] for the bytes seen: for a versioned
// tombstone, the life its header gives the floor after the hold (it lives
// that long plus the hold in Redis), so that the script can tell from the
// key's PTTL whether the hold is over. The reader's classify judges the
// hold by the fill time the writer's clock put in the header; a reader
// whose clock runs ahead of the writer's by more than the hold would take
// it as over and fill through it.
func holdArg(seen []byte) string {
	h, _, err := decodeHeader(seen)
	if err != nil || h.kind != kindTombstone || !h.versioned {
		return ""
	}
	return strconv.FormatUint(h.ttl, 10)
}

// leaseStamp returns the header of a lease on a key of namespace generation
// g taken at now (Unix ms): it carries the generations known now, so that a
// bump during the load makes the fill stale.
func (c *Cache) leaseStamp(g *generation, now uint64) header {
	return header{kind: kindLease, nsGen: g.val.Load(), allGen: c.gens.all.val.Load(), filled: now}
}

// detach returns a context for a lease or fill request that must be
// completed even if the caller has left (a lease left behind holds other
// processes back until it expires), bounded by Options.RedisTimeout (by
// LeaseTTL when the client ignores deadlines).
func (c *Cache) detach(ctx context.Context) (context.Context, context.CancelFunc) {
	if !c.bounded {
		return context.WithTimeout(context.WithoutCancel(ctx), c.cfg.LeaseTTL)
	}
	return c.bound(context.WithoutCancel(ctx))
}

// fill stores entry at key with ttl if the key still holds the lease whose
// header and token are prefix; an empty entry deletes the key instead.
func (c *Cache) fill(ctx context.Context, key string, prefix, entry []byte, ttl time.Duration) (bool, error) {
	if entry == nil {
		entry = []byte{}
	}
	ctx, cancel := c.bound(ctx)
	defer cancel()
	n, err := fillScript.Run(ctx, c.rdb, []string{key}, prefix, entry, max(ttl.Milliseconds(), 1)).Int64()
	return n == 1, err
}

// runPipelined runs script once per key in one pipeline; args gives the key
// and the arguments of call i. Calls that meet an empty script cache are
// run again with the script's source, in a second pipeline. It returns
// every call's command and the first error other than redis.Nil.
func runPipelined(ctx context.Context, rdb redis.UniversalClient, s *redis.Script, n int, args func(i int) (string, []any)) ([]*redis.Cmd, error) {
	if n == 0 {
		return nil, nil
	}
	pipe := rdb.Pipeline()
	cmds := make([]*redis.Cmd, n)
	for i := range n {
		k, a := args(i)
		cmds[i] = s.EvalSha(ctx, pipe, []string{k}, a...)
	}
	_, _ = pipe.Exec(ctx)
	var again redis.Pipeliner
	for i, cmd := range cmds {
		if redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
			if again == nil {
				again = rdb.Pipeline()
			}
			k, a := args(i)
			cmds[i] = s.Eval(ctx, again, []string{k}, a...)
		}
	}
	if again != nil {
		_, _ = again.Exec(ctx)
	}
	var first error
	for _, cmd := range cmds {
		if err := cmd.Err(); err != nil && err != redis.Nil && first == nil {
			first = err
		}
	}
	return cmds, first
}

// minLeasePoll is the floor of Options.LeasePoll and of every poll's pause
// cap, so that waiters never spin on Redis.
const minLeasePoll = 100 * time.Microsecond

// backoff yields growing, jittered pauses for polling another's lease.
type backoff struct {
	cur, max time.Duration
}

func (b *backoff) next() time.Duration {
	b.max = max(b.max, minLeasePoll)
	if b.cur == 0 {
		b.cur = max(b.max/8, minLeasePoll)
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	return b.cur/2 + randv2.N(b.cur/2+1)
}

// sleep pauses for d or until ctx ends, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
