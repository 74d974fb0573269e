package cache_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/cache"
)

func TestWriteReturnsFnErrorAndStillInvalidates(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	c := f.cache(nil)
	key := f.key("user", 1)
	_, err := cache.Fetch(ctx, c, key, f.loader(1))
	require.NoError(t, err)
	boom := errors.New("deadlock")
	err = c.Write(ctx, []string{key}, func(ctx context.Context) error {
		_, err := cache.Fetch(ctx, c, key, f.loader(1)) // refilled in between
		require.NoError(t, err)
		return boom
	})
	assert.ErrorIs(t, err, boom)
	assert.Equal(t, "absent", f.kind(key))
}

func TestWriteCancelledContextStillInvalidatesAfter(t *testing.T) {
	f := newFixture(t)
	c := f.cache(nil)
	key := f.key("user", 1)
	ctx, cancel := context.WithCancel(context.Background())
	err := c.Write(ctx, []string{key}, func(context.Context) error {
		_, err := cache.Fetch(context.Background(), c, key, f.loader(1))
		require.NoError(t, err)
		f.rename(1, "ann-v2")
		cancel() // the caller gives up after the commit
		return nil
	})
	require.NoError(t, err)
	assert.Equal(t, "absent", f.kind(key))
}

func TestDelayedInvalidation(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	c := f.cache(&cache.Options{DelayedInvalidation: 20 * time.Millisecond})
	key := f.key("user", 1)
	require.NoError(t, c.Write(ctx, []string{key}, func(context.Context) error { return nil }))
	assert.Equal(t, uint64(2), c.Stats().Invalidations, "before and after fn")
	require.Eventually(t, func() bool { return c.Stats().Invalidations == 3 }, 10*time.Second, 5*time.Millisecond,
		"and once more after DelayedInvalidation")

	// Close cancels pending ones.
	c2 := f.cache(&cache.Options{DelayedInvalidation: time.Hour})
	require.NoError(t, c2.Write(ctx, []string{key}, func(context.Context) error { return nil }))
	require.NoError(t, c2.Close())
	require.NoError(t, c2.Write(ctx, []string{key}, func(context.Context) error { return nil }), "usable after Close")
	require.NoError(t, c2.Close())
}

func TestInvalidateManyKeys(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	rdb, calls := counted(t)
	c := mustNew(t, rdb, &cache.Options{Prefix: f.base + "-gen:"})
	defer c.Close()
	keys := make([]string, 1200)
	for i := range keys {
		keys[i] = f.key("user", int64(i))
		require.NoError(t, f.rdb.Set(ctx, keys[i], "x", time.Minute).Err())
	}
	require.NoError(t, c.Invalidate(ctx, keys...))
	assert.Equal(t, int64(3), calls.n.Load(), "pipelined, 512 keys a round trip")
	assert.Zero(t, f.rdb.Exists(ctx, keys[:100]...).Val())
	assert.Equal(t, uint64(len(keys)), c.Stats().Invalidations)
	require.NoError(t, c.Invalidate(ctx))

	tc := f.cache(&cache.Options{TombstoneTTL: 2 * time.Second})
	require.NoError(t, tc.Invalidate(ctx, keys[0], keys[1]))
	assert.Equal(t, "tombstone", f.kind(keys[0]))
	ttl := f.rdb.PTTL(ctx, keys[1]).Val()
	assert.True(t, ttl > time.Second && ttl <= 2*time.Second, strconv.Itoa(int(ttl)))
}

// A panic in fn, which may follow a commit, still invalidates the keys
// after it, and goes on up to the caller.
func TestWritePanicStillInvalidates(t *testing.T) {
	for _, strong := range []bool{false, true} {
		t.Run("strong="+strconv.FormatBool(strong), func(t *testing.T) {
			f := newFixture(t)
			ctx := context.Background()
			w, reader := f.cache(&cache.Options{Strong: strong}), f.cache(nil)
			key := f.key("user", 1)
			assert.PanicsWithValue(t, "after commit", func() {
				_ = w.Write(ctx, []string{key}, func(ctx context.Context) error {
					_, err := cache.Fetch(ctx, reader, key, f.loader(1)) // the old row, filled unless strong
					require.NoError(t, err)
					f.rename(1, "ann-v2")
					panic("after commit")
				})
			})
			assert.Equal(t, "absent", f.kind(key), "invalidated after fn")
			u, err := cache.Fetch(ctx, reader, key, f.loader(1))
			require.NoError(t, err)
			assert.Equal(t, "ann-v2", u.Name)
		})
	}
}
