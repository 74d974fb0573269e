package cache

import (
	"context"
	"hash/maphash"
	"sync"
	"time"
)

// Concurrent reads of one key in a process share a GET, but only a GET sent
// after they arrived (the R10 rule, generalised): a caller that finds a GET
// of its key under way cannot use its answer, which may predate an
// invalidation the caller has seen return. It waits for that GET to end and
// shares the next one, which the first of those waiting sends. So N
// concurrent callers of a hot key send about two GETs per round trip instead
// of N, and none of them is answered by a read that began before it did.
//
// The interleaving the rule closes, step by step:
//  1. A sends GET k; Redis answers v1 (the reply is on its way).
//  2. A writer commits v2, and Invalidate(k) returns to caller B.
//  3. B calls Fetch(k). Sharing A's GET would hand B v1, after B saw the
//     invalidation return. B waits instead, and its GET (sent after A's
//     ended) finds the key invalidated.
//
// Only answers are shared. A caller whose shared GET failed reads alone, so
// one caller's deadline or cancellation never fails another and the
// breaker's verdict stays each caller's own.
//
// Before a stampede hits MySQL's singleflight, it hits Redis: without
// sharing, 1,000 callers of a cold key queue 1,000 GETs for the client's
// pool, and under a loaded CPU those waits reach Options.RedisTimeout and
// are taken for a failing Redis.

// readShards spreads the keys over locks so unrelated keys do not contend.
const readShards = 64

// reads is the GETs under way, by key.
type reads struct {
	seed   maphash.Seed
	shards [readShards]readShard
}

type readShard struct {
	mu   sync.Mutex
	keys map[string]*keyReads
}

// keyReads is what one key's readers share: whether a GET is under way,
// the channel that its end closes (made by the first caller who waits for
// it), and the read that the callers who arrived meanwhile will share.
type keyReads struct {
	busy  bool
	ended chan struct{}
	next  *sharedRead
}

// sharedRead is one GET and its answer, published when done is closed.
type sharedRead struct {
	done    chan struct{}
	start   time.Time // when the GET was sent
	raw     []byte
	present bool
	err     error
}

func (r *reads) init() {
	r.seed = maphash.MakeSeed()
	for i := range r.shards {
		r.shards[i].keys = map[string]*keyReads{}
	}
}

// getShared reads key like get, sharing the GET with the other callers of
// the key that arrived before it was sent. start is when the GET whose
// answer is returned was sent.
func (c *Cache) getShared(ctx context.Context, key string, g *generation) (raw []byte, present bool, start time.Time, err error) {
	sh := &c.reads.shards[maphash.String(c.reads.seed, key)%readShards]
	sh.mu.Lock()
	kr := sh.keys[key]
	if kr == nil {
		// Nobody reads key: read it, and make those who arrive meanwhile
		// wait for the next read.
		kr = &keyReads{busy: true}
		sh.keys[key] = kr
		sh.mu.Unlock()
		start = time.Now()
		raw, present, err = c.get(ctx, key, g, start)
		c.afterGet(key)
		sh.end(key, kr)
		return raw, present, start, err
	}
	r := kr.next
	if r != nil {
		// A read not yet sent: its answer will postdate this call.
		sh.mu.Unlock()
		return c.awaitShared(ctx, key, g, r)
	}
	// A read is under way and may predate this call: send the next one
	// when it ends, for everyone who arrives until then.
	r = &sharedRead{done: make(chan struct{})}
	kr.next = r
	if kr.ended == nil {
		kr.ended = make(chan struct{})
	}
	ended := kr.ended
	sh.mu.Unlock()
	select {
	case <-ended:
	case <-ctx.Done():
		sh.mu.Lock()
		if kr.next == r {
			kr.next = nil
		}
		sh.mu.Unlock()
		r.err = ctx.Err() // the others read alone
		close(r.done)
		return nil, false, time.Time{}, ctx.Err()
	}
	sh.mu.Lock()
	if kr.next == r {
		kr.next = nil
	}
	kr.busy = true
	sh.mu.Unlock()
	r.start = time.Now()
	r.raw, r.present, r.err = c.get(ctx, key, g, r.start)
	c.afterGet(key)
	close(r.done)
	sh.end(key, kr)
	return r.raw, r.present, r.start, r.err
}

// awaitShared waits for r's answer. When r failed (perhaps only for its
// sender's deadline), the caller reads alone.
func (c *Cache) awaitShared(ctx context.Context, key string, g *generation, r *sharedRead) ([]byte, bool, time.Time, error) {
	select {
	case <-r.done:
	case <-ctx.Done():
		return nil, false, time.Time{}, ctx.Err()
	}
	if r.err != nil {
		start := time.Now()
		raw, present, err := c.get(ctx, key, g, start)
		return raw, present, start, err
	}
	return r.raw, r.present, r.start, nil
}

// end records that key's read under way has ended, wakes the caller waiting
// to send the next one, and forgets key when nobody waits.
func (sh *readShard) end(key string, kr *keyReads) {
	sh.mu.Lock()
	kr.busy = false
	if kr.ended != nil {
		close(kr.ended)
		kr.ended = nil
	}
	if kr.next == nil && sh.keys[key] == kr {
		delete(sh.keys, key)
	}
	sh.mu.Unlock()
}

func (c *Cache) afterGet(key string) {
	if c.hookAfterGet != nil {
		c.hookAfterGet(key)
	}
}
