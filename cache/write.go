package cache

import (
	"context"
	_ "embed"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// invalidateChunk bounds the keys sent in one pipeline.
const invalidateChunk = 512

// Invalidate removes keys from the cache: it deletes them, or with
// Options.TombstoneTTL leaves a tombstone that makes readers load from the
// source without filling until it expires. Either way it replaces any lease,
// so a load that began before Invalidate can no longer fill (races R1, R6),
// and loads under way in this process are not joined by Fetch calls that
// start after Invalidate returned (race R10). It returns nil only after Redis
// acknowledged every key.
func (c *Cache) Invalidate(ctx context.Context, keys ...string) error {
	return c.invalidate(ctx, keys, c.cfg.TombstoneTTL)
}

var (
	//go:embed invalidate.lua
	invalidateSrc string

	invalidateScript = redis.NewScript(invalidateSrc)
)

// invalidate deletes keys (tomb == 0) or sets tombstones living tomb. With
// Options.KeepVersionFloors it does so with invalidate.lua, and a key that
// carries a row version (see InvalidateVersions) gets a versioned tombstone
// at that version instead, so that a plain invalidation never lowers a floor. That tombstone holds fills off for
// tomb, like a plain one, and keeps the floor for at least
// Options.VersionTTL, the life a floor is promised.
func (c *Cache) invalidate(ctx context.Context, keys []string, tomb time.Duration) error {
	if len(keys) == 0 {
		return nil
	}
	// New flights only after Redis acknowledged: a flight that started
	// before could still have read the old row.
	defer c.bumpEpochs(keys)
	now := nowMs()
	stone := []byte{}
	if tomb > 0 {
		stone = encodeEntry(header{kind: kindTombstone, filled: now, ttl: ms(tomb)})
	}
	life := max(tomb, c.cfg.VersionTTL)
	floored := encodeEntry(header{kind: kindTombstone, versioned: true, filled: now + ms(tomb), ttl: ms(life - tomb)})
	args := []any{stone, max(tomb.Milliseconds(), 1), floored, life.Milliseconds()} // the same for every key
	for len(keys) > 0 {
		chunk := keys[:min(len(keys), invalidateChunk)]
		keys = keys[len(chunk):]
		var err error
		var errOf func(i int) error
		if c.cfg.KeepVersionFloors {
			var cmds []*redis.Cmd
			cmds, err = runPipelined(ctx, c.rdb, invalidateScript, len(chunk), func(i int) (string, []any) {
				return chunk[i], args
			})
			errOf = func(i int) error { return cmds[i].Err() }
		} else {
			var cmds []redis.Cmder
			cmds, err = c.deleteOrBury(ctx, chunk, stone, tomb)
			errOf = func(i int) error { return cmds[i].Err() }
		}
		if isOOM(err) {
			err = c.deleteRefused(ctx, chunk, errOf)
		}
		c.redisResult(ctx, err)
		if err != nil {
			return fmt.Errorf("cache: invalidate: %w", err)
		}
		c.stats.invalidations.Add(uint64(len(chunk)))
	}
	return nil
}

// InvalidateNamespace turns every entry of each namespace into a miss in
// O(1), by bumping the namespace's generation (a key's namespace is the text
// before its first ':'). This process sees the bump at once, other processes
// within Options.GenerationRefresh. Entries are not deleted: they are
// replaced as they are read, or expire.
func (c *Cache) InvalidateNamespace(ctx context.Context, namespaces ...string) error {
	if len(namespaces) == 0 {
		return nil
	}
	list := make([]*generation, len(namespaces))
	for i, ns := range namespaces {
		list[i] = c.gens.of(ns)
	}
	return c.bump(ctx, list)
}

// InvalidateAll turns every entry into a miss in O(1), by bumping the global
// generation. Other processes see it within Options.GenerationRefresh.
func (c *Cache) InvalidateAll(ctx context.Context) error {
	return c.bump(ctx, []*generation{&c.gens.all})
}

func (c *Cache) bump(ctx context.Context, list []*generation) error {
	defer c.allEpoch.Add(1)
	err := c.gens.bump(ctx, c.rdb, list)
	c.redisResult(ctx, err)
	if err != nil {
		return fmt.Errorf("cache: bump generation: %w", err)
	}
	c.stats.invalidations.Add(uint64(len(list)))
	return nil
}

// Write runs fn, the source-of-truth write of the rows behind keys, between
// two invalidations of keys: one before, one after fn returns (even when fn
// fails or panics, as a failed commit may have committed), plus one more after
// Options.DelayedInvalidation when set. The invalidation after fn closes
// race R2 (a reader filling the old row between the first one and the
// commit). With Options.Strong, Write is WriteStrong.
//
// Write returns fn's error. Invalidation errors are logged and counted, not
// returned, as the write itself is done: the binlog invalidator and the TTL
// are the backstop.
func (c *Cache) Write(ctx context.Context, keys []string, fn func(ctx context.Context) error) error {
	if c.cfg.Strong {
		return c.WriteStrong(ctx, keys, fn)
	}
	if err := c.addToFilter(ctx, keys); err != nil {
		c.log.Warn("cache: cannot add the written keys to the filter; an inserted row may read as not found until the binlog invalidator adds it",
			"keys", len(keys), "err", err)
	}
	if err := c.Invalidate(ctx, keys...); err != nil {
		c.log.Warn("cache: invalidation before write failed", "keys", len(keys), "err", err)
	}
	// Deferred, so that a panic in fn (which may follow a commit) still
	// invalidates before it goes on up.
	defer c.afterWrite(ctx, keys)
	return fn(ctx)
}

// WriteStrong is Write with read-your-writes: before fn it sets tombstones
// on keys that live Options.WriteTimeout, so from then until the
// invalidation after fn no reader fills or is served a cached value: reads
// go to the source, and see the write as soon as it commits. fn's context
// ends with the tombstones, so a write cannot outlive its protection.
//
// If the tombstones cannot be set, or the keys cannot be added to
// Options.Filter (see Adder), fn is not run and the error is returned.
func (c *Cache) WriteStrong(ctx context.Context, keys []string, fn func(ctx context.Context) error) error {
	if err := c.addToFilter(ctx, keys); err != nil {
		return fmt.Errorf("cache: strong write: add keys to the filter: %w", err)
	}
	// fn's deadline starts before the tombstones are sent, so it passes
	// before they expire.
	fctx, cancel := context.WithTimeout(ctx, c.cfg.WriteTimeout)
	if err := c.invalidate(ctx, keys, c.cfg.WriteTimeout); err != nil {
		cancel()
		return fmt.Errorf("cache: strong write: %w", err)
	}
	// Deferred (cancel first), so that a panic in fn still invalidates.
	defer c.afterWrite(ctx, keys)
	defer cancel()
	return fn(fctx)
}

// addToFilter adds keys to Options.Filter if it is an Adder. It runs
// before fn: added after, a reader between the commit and the add would
// be told the new row does not exist.
func (c *Cache) addToFilter(ctx context.Context, keys []string) error {
	a, ok := c.cfg.Filter.(Adder)
	if !ok || len(keys) == 0 {
		return nil
	}
	return a.Add(ctx, keys...)
}

// afterWrite invalidates keys after a write, even if ctx has ended (the
// write may have committed), and schedules the delayed invalidation.
func (c *Cache) afterWrite(ctx context.Context, keys []string) {
	ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.WriteTimeout)
	defer cancel()
	if err := c.Invalidate(ictx, keys...); err != nil {
		c.log.Error("cache: invalidation after write failed; the cache may serve the old rows until the binlog invalidator or the TTL removes them",
			"keys", len(keys), "err", err)
	}
	if c.cfg.DelayedInvalidation > 0 && len(keys) > 0 {
		c.invalidateLater(append([]string(nil), keys...))
	}
}

// invalidateLater invalidates keys after Options.DelayedInvalidation. Close
// cancels it if it has not started and waits for it if it has.
func (c *Cache) invalidateLater(keys []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.background.Add(1)
	var t *time.Timer
	t = time.AfterFunc(c.cfg.DelayedInvalidation, func() {
		defer c.background.Done()
		c.mu.Lock()
		delete(c.timers, t)
		c.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.WriteTimeout)
		defer cancel()
		if err := c.Invalidate(ctx, keys...); err != nil {
			c.log.Warn("cache: delayed invalidation failed", "keys", len(keys), "err", err)
		}
	})
	c.timers[t] = struct{}{}
}

// deleteOrBury is the plain invalidation of one chunk: DEL, or SET of a
// plain tombstone, in one pipeline (a lone DEL without one).
func (c *Cache) deleteOrBury(ctx context.Context, chunk []string, stone []byte, tomb time.Duration) ([]redis.Cmder, error) {
	if len(chunk) == 1 && tomb <= 0 {
		cmd := c.rdb.Del(ctx, chunk[0])
		return []redis.Cmder{cmd}, cmd.Err()
	}
	pipe := c.rdb.Pipeline()
	for _, k := range chunk {
		if tomb > 0 {
			pipe.Set(ctx, k, stone, tomb)
		} else {
			pipe.Del(ctx, k)
		}
	}
	return pipe.Exec(ctx)
}

// isOOM reports whether Redis refused a write for memory: maxmemory is
// reached under the noeviction policy.
func isOOM(err error) bool { return err != nil && redis.HasErrorPrefix(err, "OOM") }

// deleteRefused deletes with DEL the keys among keys whose write (errOf)
// Redis refused for memory. Under noeviction Redis refuses every write
// that may add memory, tombstones and version floors included, but takes
// a DEL, which frees it. A DEL still removes any lease, so no load that
// began before the invalidation can fill (races R1, R6); what is lost is
// the tombstone's window (readers may fill at once, Options.TombstoneTTL,
// WriteStrong) and the version floor (race R4). Failing the invalidation
// instead would leave the old value in the cache. It returns the first
// error that is not a refusal for memory, if any.
func (c *Cache) deleteRefused(ctx context.Context, keys []string, errOf func(i int) error) error {
	var refused []string
	var first error
	for i, k := range keys {
		switch err := errOf(i); {
		case isOOM(err):
			refused = append(refused, k)
		case err != nil && err != redis.Nil && first == nil:
			first = err
		}
	}
	if len(refused) == 0 {
		return first
	}
	c.stats.oomDeletes.Add(uint64(len(refused)))
	c.log.Warn("cache: Redis is out of memory (maxmemory, noeviction); invalidating with DEL, without tombstones or version floors",
		"keys", len(refused))
	pipe := c.rdb.Pipeline()
	for _, k := range refused {
		pipe.Del(ctx, k)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return err
	}
	return first
}

// Check reads the Redis settings that the guarantee depends on, on every
// master, and returns an error that names the first unsafe one (it also
// logs it). Call it once at start; New does no I/O.
//
// Under maxmemory, only the noeviction policy is safe. The volatile-*
// policies evict keys that have a TTL, tombstones and version floors
// among them, which silently ends a WriteStrong hold, a tombstone's window
// or a floor (race R4). The allkeys-* policies evict generation keys too:
// a process that starts after the key of a bumped generation was evicted
// serves the entries the bump invalidated. Under noeviction, Redis refuses
// writes when full; invalidations then fall back to DEL (see OOMDeletes in
// Stats) and fills are refused, so nothing stale is served.
func (c *Cache) Check(ctx context.Context) error {
	check := func(ctx context.Context, node *redis.Client) error {
		cfg, err := node.ConfigGet(ctx, "maxmemory*").Result()
		if err != nil {
			return fmt.Errorf("cache: read maxmemory-policy of %s (check it by hand if CONFIG is disabled): %w", node.Options().Addr, err)
		}
		if cfg["maxmemory"] == "0" || cfg["maxmemory-policy"] == "noeviction" {
			return nil
		}
		err = fmt.Errorf("cache: Redis %s has maxmemory %s with maxmemory-policy %s, which may evict tombstones, version floors or generation keys and undo invalidations in silence; set maxmemory-policy noeviction",
			node.Options().Addr, cfg["maxmemory"], cfg["maxmemory-policy"])
		c.log.Warn(err.Error())
		return err
	}
	switch r := c.rdb.(type) {
	case *redis.Client:
		return check(ctx, r)
	case *redis.ClusterClient:
		return r.ForEachMaster(ctx, check)
	}
	return nil
}
