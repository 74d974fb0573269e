package cache_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/cache"
)

func TestNamespace(t *testing.T) {
	for key, ns := range map[string]string{"user:1": "user", "user:email:a@b": "user", "plain": "plain", ":x": "", "": ""} {
		assert.Equal(t, ns, cache.Namespace(key), key)
	}
}

func TestInvalidateNamespace(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	a := f.cache(nil)
	lazy := f.cache(&cache.Options{GenerationRefresh: time.Hour})
	quick := f.cache(&cache.Options{GenerationRefresh: 20 * time.Millisecond})
	u1, u2, o1 := f.key("user", 1), f.key("user", 2), f.key("order", 1)
	for _, k := range []string{u1, u2, o1} {
		_, err := cache.Fetch(ctx, a, k, f.loader(1))
		require.NoError(t, err)
		for _, c := range []*cache.Cache{lazy, quick} {
			_, err := cache.Fetch(ctx, c, k, mustNotLoad(t))
			require.NoError(t, err)
		}
	}
	f.rename(1, "ann-v2") // say, a TRUNCATE and reload of the users table

	require.NoError(t, a.InvalidateNamespace(ctx, f.base+"user"))
	u, err := cache.Fetch(ctx, a, u1, f.loader(1))
	require.NoError(t, err)
	assert.Equal(t, "ann-v2", u.Name, "the bumping process sees the bump at once")
	_, err = cache.Fetch(ctx, a, o1, mustNotLoad(t))
	require.NoError(t, err, "other namespaces keep their entries")
	assert.Equal(t, uint64(1), a.Stats().Stale)

	// Within GenerationRefresh another process may still serve the old entry.
	u, err = cache.Fetch(ctx, lazy, u2, mustNotLoad(t))
	require.NoError(t, err)
	assert.Equal(t, "ann", u.Name, "bounded staleness: up to GenerationRefresh")

	time.Sleep(30 * time.Millisecond) // past quick's GenerationRefresh
	u, err = cache.Fetch(ctx, quick, u2, f.loader(1))
	require.NoError(t, err)
	assert.Equal(t, "ann-v2", u.Name, "after GenerationRefresh another process sees the bump")
	_, err = cache.Fetch(ctx, quick, o1, mustNotLoad(t))
	require.NoError(t, err)
	loads := f.loads.Load()
	_, err = cache.Fetch(ctx, quick, u2, mustNotLoad(t))
	require.NoError(t, err, "the replacement is a hit")
	assert.Equal(t, loads, f.loads.Load())
}

func TestInvalidateAll(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	a, b := f.cache(nil), f.cache(&cache.Options{GenerationRefresh: 20 * time.Millisecond})
	keys := []string{f.key("user", 1), f.key("order", 1), f.key("cart", 1)}
	for _, k := range keys {
		_, err := cache.Fetch(ctx, a, k, f.loader(1))
		require.NoError(t, err)
	}
	require.NoError(t, a.InvalidateAll(ctx))
	time.Sleep(30 * time.Millisecond)
	for _, c := range []*cache.Cache{a, b} {
		before := f.loads.Load()
		for _, k := range keys {
			_, err := cache.Fetch(ctx, c, k, f.loader(1))
			require.NoError(t, err)
		}
		assert.Equal(t, before+int64(len(keys)), f.loads.Load(), "every key is a miss")
		if c == a {
			break // a refilled them with the new generation
		}
	}
	assert.Equal(t, uint64(1), a.Stats().Invalidations)
}

// A bump still rises above what processes remember after Redis lost the
// generation key (failover, restart without persistence), whether the bump
// comes from the process that stamped the entries or from one that never saw
// their generation. Bumps come faster than one per millisecond, which a
// millisecond clock did not survive.
func TestGenerationBumpSurvivesLostKey(t *testing.T) {
	for _, bumper := range []string{"same process", "other process"} {
		t.Run(bumper, func(t *testing.T) {
			f := newFixture(t)
			ctx := context.Background()
			a := f.cache(&cache.Options{GenerationRefresh: time.Millisecond})
			b := f.cache(nil)
			ns := f.base + "user"
			genKey := f.base + "-gen:gen:" + ns
			key := f.key("user", 1)
			for range 20 {
				require.NoError(t, a.InvalidateNamespace(ctx, ns))
			}
			_, err := cache.Fetch(ctx, a, key, f.loader(1))
			require.NoError(t, err)
			known, _ := cache.GenerationsOf(f.stored(key))
			require.NotZero(t, known)

			require.NoError(t, f.rdb.Del(ctx, genKey).Err()) // Redis forgot it
			f.rename(1, "ann-v2")
			if bumper == "same process" {
				require.NoError(t, a.InvalidateNamespace(ctx, ns))
			} else {
				require.NoError(t, b.InvalidateNamespace(ctx, ns))
			}
			after, err := strconv.ParseUint(f.rdb.Get(ctx, genKey).Val(), 10, 64)
			require.NoError(t, err)
			assert.Greater(t, after, known)
			time.Sleep(5 * time.Millisecond) // a's next read learns the bump
			u, err := cache.Fetch(ctx, a, key, f.loader(1))
			require.NoError(t, err)
			assert.Equal(t, "ann-v2", u.Name, "the entry from before the loss is stale")
		})
	}
}

// Options.Namespace replaces the text-before-':' rule.
func TestNamespaceOption(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	bySlash := func(key string) string { ns, _, _ := strings.Cut(key, "/"); return ns }
	c := f.cache(&cache.Options{Namespace: bySlash})
	users, orders := f.base+"users/1", f.base+"orders/1"
	for _, k := range []string{users, orders} {
		_, err := cache.Fetch(ctx, c, k, f.loader(1))
		require.NoError(t, err)
	}
	f.rename(1, "ann-v2")
	require.NoError(t, c.InvalidateNamespace(ctx, f.base+"users"))
	u, err := cache.Fetch(ctx, c, users, f.loader(1))
	require.NoError(t, err)
	assert.Equal(t, "ann-v2", u.Name, "the key is in the namespace the function names")
	u, err = cache.Fetch(ctx, c, orders, mustNotLoad(t))
	require.NoError(t, err)
	assert.Equal(t, "ann", u.Name, "another namespace keeps its entries")
}
