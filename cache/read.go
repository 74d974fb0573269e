package cache

import (
	"context"
	"time"
	"unsafe"

	"github.com/redis/go-redis/v9"
)

// state is what a read found in a key, judged against known generations.
type state uint8

const (
	stAbsent    state = iota
	stValue           // a current value
	stNotFound        // a current not-found entry
	stLease           // another's lease without a usable value
	stRefresh         // another's refresh lease carrying a current value
	stTombstone       // recently invalidated
	stVersioned       // a versioned tombstone: a fill must reach its version
	stDead            // a versioned lease older than LeaseTTL: its holder is gone
	stStale           // an entry older than a known generation
	stCorrupt         // bytes that do not decode
	stForeign         // a Redis type other than string
)

// entry is one read of a key.
type entry struct {
	raw     []byte // the bytes read; nil when absent
	st      state
	h       header
	payload []byte // the value's codec bytes for stValue and stRefresh
}

// classify decodes what a read of a key returned.
func (c *Cache) classify(raw []byte, present bool, g *generation) entry {
	e := entry{raw: raw}
	if !present {
		return e
	}
	if e.raw == nil {
		e.raw = []byte{}
	}
	h, p, err := decodeHeader(raw)
	if err != nil {
		e.st = stCorrupt
		return e
	}
	e.h = h
	switch h.kind {
	case kindTombstone:
		e.st = stTombstone
		// A versioned tombstone filled in the future holds fills off until
		// then, like a plain one (a plain invalidation over a floor), and
		// sets its floor after.
		if h.versioned && h.filled <= nowMs() {
			e.st = stVersioned
		}
		return e
	case kindValue:
		e.st, e.payload = stValue, p
	case kindNotFound:
		e.st = stNotFound
	case kindLease:
		e.st = stLease
		// A plain lease expires with its key; one that carries a floor
		// lives as long as the floor, and is judged by its fill time.
		if h.versioned && nowMs() >= h.filled+ms(c.cfg.LeaseTTL) {
			e.st = stDead
			return e
		}
	case kindRefresh:
		e.st, e.payload = stRefresh, p[tokenLen:]
	}
	// A lease stamped with an old generation is stale too: its fill would be.
	if c.gens.stale(&h, g) {
		e.st = stStale
	}
	return e
}

func (c *Cache) corrupted(key string, err error) {
	c.stats.corrupt.Add(1)
	c.log.Warn("cache: unreadable entry; replacing it", "key", key, "err", err)
}

// get reads key, pipelined with the generations whose refresh is due.
func (c *Cache) get(ctx context.Context, key string, g *generation, start time.Time) ([]byte, bool, error) {
	ctx, cancel := c.bound(ctx)
	defer cancel()
	now := start.UnixNano()
	allDue, nsDue := c.gens.all.due(now, c.gens.every), g.due(now, c.gens.every)
	if !allDue && !nsDue {
		return bytesOf(c.rdb.Get(ctx, key))
	}
	claimed := make([]*generation, 0, 2)
	if allDue {
		claimed = append(claimed, &c.gens.all)
	}
	if nsDue {
		claimed = append(claimed, g)
	}
	pipe := c.rdb.Pipeline()
	get := pipe.Get(ctx, key)
	cmds := read(ctx, pipe, claimed)
	_, _ = pipe.Exec(ctx)
	if err := finish(claimed, cmds, now, c.log); err != nil {
		return nil, false, err
	}
	return bytesOf(get)
}

// getRaw reads key alone, within Options.RedisTimeout.
func (c *Cache) getRaw(ctx context.Context, key string) ([]byte, bool, error) {
	ctx, cancel := c.bound(ctx)
	defer cancel()
	return bytesOf(c.rdb.Get(ctx, key))
}

func bytesOf(cmd *redis.StringCmd) ([]byte, bool, error) {
	b, err := cmd.Bytes()
	switch {
	case err == redis.Nil:
		return nil, false, nil
	case err != nil:
		return nil, false, err
	}
	return b, true, nil
}

// value is one key's bytes from a multi-key read.
type value struct {
	b  []byte
	ok bool
}

// mget reads keys in one round trip, pipelined with the due generations
// among gs: MGET on a single node, a pipeline of GETs otherwise.
func (c *Cache) mget(ctx context.Context, keys []string, gs []*generation) ([]value, error) {
	ctx, cancel := c.bound(ctx)
	defer cancel()
	now := time.Now().UnixNano()
	var claimed []*generation
	if gs != nil {
		claimed = c.gens.claim(now, gs, nil)
	}
	vals := make([]value, len(keys))
	if c.single && len(claimed) == 0 {
		return valuesOf(c.rdb.MGet(ctx, keys...), vals)
	}
	pipe := c.rdb.Pipeline()
	var mget *redis.SliceCmd
	var gets []*redis.StringCmd
	if c.single {
		mget = pipe.MGet(ctx, keys...)
	} else {
		gets = make([]*redis.StringCmd, len(keys))
		for i, k := range keys {
			gets[i] = pipe.Get(ctx, k)
		}
	}
	gcmds := read(ctx, pipe, claimed)
	_, _ = pipe.Exec(ctx)
	if err := finish(claimed, gcmds, now, c.log); err != nil {
		return nil, err
	}
	if mget != nil {
		return valuesOf(mget, vals)
	}
	for i, g := range gets {
		b, ok, err := bytesOf(g)
		if err != nil && unavailable(err) {
			return nil, err
		}
		vals[i] = value{b, ok}
	}
	return vals, nil
}

// valuesOf fills vals from the reply of an MGET of as many keys.
func valuesOf(mget *redis.SliceCmd, vals []value) ([]value, error) {
	res, err := mget.Result()
	if err != nil {
		return nil, err
	}
	for i, r := range res {
		vals[i] = valueOf(r)
	}
	return vals, nil
}

// valueOf converts an MGET element without copying: the codec only reads it.
func valueOf(r any) value {
	s, ok := r.(string)
	if !ok {
		return value{}
	}
	return value{unsafe.Slice(unsafe.StringData(s), len(s)), true}
}
