package cache_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/cache"
)

// R10 across processes, for generations: a flight takes its lease
// (stamped with generation G) and reads v1; another process commits v2
// and bumps the namespace; a Fetch here that has learnt the new
// generation finds the flight's lease, stale to it, and joins the flight.
// It must not take v1: its read postdates the bump.
func TestR10NamespaceBumpFromAnotherProcess(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	remote := f.cache(nil)
	c := f.cache(&cache.Options{GenerationRefresh: time.Millisecond})
	key := f.key("user", 1)
	joined := make(chan string, 8)
	cache.SetHookJoined(c, func(fk string) { joined <- fk })
	loaded, release := make(chan struct{}), make(chan struct{})
	first := make(chan user, 1)
	go func() {
		u, err := cache.Fetch(ctx, c, key, func(ctx context.Context) (user, error) {
			u, err := f.query(ctx, 1) // v1, under a lease stamped with G
			close(loaded)
			<-release
			return u, err
		})
		assert.NoError(t, err)
		first <- u
	}()
	fk := <-joined
	<-loaded
	f.rename(1, "ann-v2")
	require.NoError(t, remote.InvalidateNamespace(ctx, f.base+"user"))
	time.Sleep(2 * time.Millisecond) // past GenerationRefresh: the next read here learns the bump

	got := make(chan user, 1)
	go func() {
		u, err := cache.Fetch(ctx, c, key, f.loader(1))
		assert.NoError(t, err)
		got <- u
	}()
	require.Equal(t, fk, <-joined, "the second Fetch joined the first one's flight")
	close(release)
	assert.Equal(t, "ann", (<-first).Name, "the first Fetch overlapped the write")
	assert.Equal(t, "ann-v2", (<-got).Name, "the second Fetch read after the bump: not the flight's older row")
	u, err := cache.Fetch(ctx, c, key, mustNotLoad(t))
	require.NoError(t, err)
	assert.Equal(t, "ann-v2", u.Name, "and what stays cached is the new row")
}
