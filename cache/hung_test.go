package cache_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/cache"
	"github.com/cacheaside/cacheaside/internal/testenv"
)

// hungRedis returns the address of a server that accepts connections and
// never answers, as a Redis whose process is stopped.
func hungRedis(t *testing.T) string { return testenv.HungRedis(t) }

// deadRedis returns the address of a port where nothing listens any more,
// as a Redis that was killed.
func deadRedis(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// fetchWithin runs n Fetches of user 1, one after another, each with its
// own deadline d, and requires every one to return the row from MariaDB:
// the Redis side must give up in time for the loader to answer.
func fetchWithin(t *testing.T, f *fixture, c *cache.Cache, n int, d time.Duration) {
	t.Helper()
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		u, err := cache.Fetch(ctx, c, f.key("user", 1), f.loader(1))
		cancel()
		require.NoError(t, err, "Fetch %d within a %v deadline", i, d)
		assert.Equal(t, "ann", u.Name)
	}
}

func TestHungRedisOpensBreakerWithinCallerDeadlines(t *testing.T) {
	f := newFixture(t)
	// go-redis's default timeouts (seconds), with the context honoured.
	rdb := redis.NewClient(&redis.Options{Addr: hungRedis(t), ContextTimeoutEnabled: true})
	t.Cleanup(func() { rdb.Close() })
	calls := &counter{}
	rdb.AddHook(calls)
	const threshold = 3
	c := f.cacheOn(rdb, &cache.Options{BreakerThreshold: threshold, BreakerCooldown: time.Minute})

	fetchWithin(t, f, c, 10, 300*time.Millisecond)
	s := c.Stats()
	assert.True(t, s.BreakerOpen, "requests that Redis never answers count as failures")
	assert.Equal(t, uint64(threshold), s.Errors)
	assert.Equal(t, int64(threshold), calls.n.Load(), "the open breaker sends no more requests")
	assert.Equal(t, int64(10), f.loads.Load())
}

func TestDeadRedisBoundedWithRecommendedOptions(t *testing.T) {
	f := newFixture(t)
	// The options the package documentation recommends.
	rdb := redis.NewClient(&redis.Options{
		Addr:                  deadRedis(t),
		ContextTimeoutEnabled: true,
		DialTimeout:           100 * time.Millisecond,
		ReadTimeout:           100 * time.Millisecond,
		WriteTimeout:          100 * time.Millisecond,
		PoolTimeout:           100 * time.Millisecond,
	})
	t.Cleanup(func() { rdb.Close() })
	c := f.cacheOn(rdb, &cache.Options{BreakerThreshold: 3, BreakerCooldown: time.Minute})
	// Every read, the first ones included, gives up on Redis within
	// RedisTimeout (100ms by default) and has the rest of its 300ms for
	// the loader.
	fetchWithin(t, f, c, 5, 300*time.Millisecond)
	assert.True(t, c.Stats().BreakerOpen)
}
