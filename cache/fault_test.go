package cache_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/cache"
)

func TestRedisDownServesFromSourceAndRecovers(t *testing.T) {
	_, srv := env.Faults(t)
	f := newFixture(t)
	ctx := context.Background()
	// A client that gives up on a dead server quickly, to keep the test short;
	// go-redis's defaults retry a refused dial for seconds, which is the cost
	// the breaker spares each read.
	rdb := env.NewRedis(&redis.Options{MaxRetries: -1, DialerRetries: 1, DialerRetryTimeout: 10 * time.Millisecond})
	t.Cleanup(func() { rdb.Close() })
	calls := &counter{}
	rdb.AddHook(calls)
	const threshold, cooldown = 3, 300 * time.Millisecond
	c := mustNew(t, rdb, &cache.Options{
		Prefix:           f.base + "-gen:",
		BreakerThreshold: threshold,
		BreakerCooldown:  cooldown,
		MaxDegradedLoads: 1,
	})
	defer c.Close()
	key := f.key("user", 1)
	_, err := cache.Fetch(ctx, c, key, f.loader(1))
	require.NoError(t, err)

	require.NoError(t, srv.Stop())
	t.Cleanup(func() { _ = srv.Start() }) // a no-op error if it runs already
	f.rename(1, "ann-v2")                 // a write whose invalidation cannot reach Redis

	calls.n.Store(0)
	start := time.Now()
	const n = 20
	for range n {
		u, err := cache.Fetch(ctx, c, key, f.loader(1))
		require.NoError(t, err, "Redis down: Fetch answers from MariaDB")
		assert.Equal(t, "ann-v2", u.Name)
	}
	// Each cooldown lets one read probe Redis; the others skip it.
	probes := int64(time.Since(start)/cooldown) + 1
	assert.LessOrEqual(t, calls.n.Load(), threshold+probes, "the open breaker stops Redis attempts")
	s := c.Stats()
	assert.True(t, s.BreakerOpen)
	assert.GreaterOrEqual(t, int64(s.Degraded), n-threshold-probes)
	t.Logf("%d reads with Redis down in %v: %d Redis attempts", n, time.Since(start), calls.n.Load())
	assert.GreaterOrEqual(t, s.Errors, uint64(threshold))

	// Degraded loads are bounded, and a batch degrades too.
	var cur, peak atomic.Int64
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			_, err := cache.Fetch(ctx, c, f.key("other", int64(i)), func(ctx context.Context) (user, error) {
				peak.Store(max(peak.Load(), cur.Add(1)))
				defer cur.Add(-1)
				return f.query(ctx, 2)
			})
			assert.NoError(t, err)
		})
	}
	wg.Wait()
	assert.Equal(t, int64(1), peak.Load(), "MaxDegradedLoads bounds concurrent loads")
	bl := &batchLoader{f: f, ids: map[string]int64{key: 1}}
	m, err := cache.FetchMany(ctx, c, []string{key}, bl.load)
	require.NoError(t, err)
	assert.Equal(t, "ann-v2", m[key].Name)

	// Redis comes back with the entry it had; the binlog invalidator would
	// replay the lost invalidation, another process does it here.
	require.NoError(t, srv.Start())
	restarted := time.Now()
	require.NoError(t, f.cache(nil).Invalidate(ctx, key))
	require.Eventually(t, func() bool {
		_, err := cache.Fetch(ctx, c, key, f.loader(1))
		return err == nil && !c.Stats().BreakerOpen
	}, 20*time.Second, 10*time.Millisecond, "a probe closes the breaker")
	t.Logf("breaker closed %v after the restart", time.Since(restarted))
	loads, hits := f.loads.Load(), c.Stats().Hits
	for range 3 {
		u, err := cache.Fetch(ctx, c, key, mustNotLoad(t))
		require.NoError(t, err)
		assert.Equal(t, "ann-v2", u.Name)
	}
	assert.Equal(t, loads, f.loads.Load(), "caching resumed")
	assert.Equal(t, hits+3, c.Stats().Hits)
}
