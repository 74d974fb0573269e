package cache_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/cache"
	"github.com/cacheaside/cacheaside/internal/testenv"
)

// startRedisNode starts a Redis of the test's own, for settings that
// would disturb the other tests' shared server (maxmemory), and returns a
// client of it.
func startRedisNode(t *testing.T) *redis.Client {
	t.Helper()
	srv, err := testenv.StartRedis()
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Close() })
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// Under maxmemory with noeviction Redis refuses the writes that set
// tombstones and floors, but takes a DEL: an invalidation falls back to it
// rather than fail, so the old value goes.
func TestInvalidateUnderNoEvictionOOMFallsBackToDelete(t *testing.T) {
	f := newFixture(t)
	rdb := startRedisNode(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name       string
		opts       cache.Options
		invalidate func(c *cache.Cache, key string) error
	}{
		{"tombstone", cache.Options{TombstoneTTL: time.Minute}, func(c *cache.Cache, key string) error { return c.Invalidate(ctx, key) }},
		{"keep floors", cache.Options{KeepVersionFloors: true, TombstoneTTL: time.Minute}, func(c *cache.Cache, key string) error { return c.Invalidate(ctx, key) }},
		{"versions", cache.Options{}, func(c *cache.Cache, key string) error {
			return c.InvalidateVersions(ctx, cache.KeyVersion{Key: key, Version: 2})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.NoError(t, rdb.ConfigSet(ctx, "maxmemory", "0").Err())
			c := mustNew(t, rdb, &tc.opts)
			key := f.key(tc.name, 1)
			_, err := cache.Fetch(ctx, c, key, f.loader(1))
			require.NoError(t, err)
			require.NoError(t, rdb.ConfigSet(ctx, "maxmemory", "1").Err()) // every write that adds memory is refused
			require.Error(t, rdb.Set(ctx, f.base+"probe", "x", 0).Err(), "Redis is out of memory")

			require.NoError(t, tc.invalidate(c, key), "the invalidation went through as a DEL")
			require.NoError(t, rdb.ConfigSet(ctx, "maxmemory", "0").Err())
			n, err := rdb.Exists(ctx, key).Result()
			require.NoError(t, err)
			assert.Zero(t, n, "the old value is gone")
			assert.Equal(t, uint64(1), c.Stats().OOMDeletes)
		})
	}
}

// Check names an eviction policy that can evict tombstones, floors or
// generation keys.
func TestCheckMaxmemoryPolicy(t *testing.T) {
	f := newFixture(t)
	rdb := startRedisNode(t)
	ctx := context.Background()
	c := mustNew(t, rdb, &cache.Options{Prefix: f.base + "-gen:"})
	require.NoError(t, c.Check(ctx), "no maxmemory")
	require.NoError(t, rdb.ConfigSet(ctx, "maxmemory", "100mb").Err())
	require.NoError(t, c.Check(ctx), "noeviction, the default")
	for _, policy := range []string{"allkeys-lru", "volatile-ttl", "allkeys-random"} {
		require.NoError(t, rdb.ConfigSet(ctx, "maxmemory-policy", policy).Err())
		err := c.Check(ctx)
		require.Error(t, err, policy)
		assert.Contains(t, err.Error(), "maxmemory-policy "+policy)
	}
}
