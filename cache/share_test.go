package cache_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/cache"
)

// Callers of a key that arrive while its GET is under way share the next
// GET, never the one under way: that one may have read the value before an
// invalidation the caller saw return (R10 for reads). Here A's GET has read
// ann when a writer commits ann-v2 and invalidates from another process;
// B and 31 others call Fetch after that. They all get ann-v2, and they
// share one GET between them.
func TestSharedGetNeverPredatesTheCaller(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	c, remote := f.cache(nil), f.cache(nil)
	key := f.key("user", 1)
	_, err := cache.Fetch(ctx, c, key, f.loader(1)) // cached: ann
	require.NoError(t, err)

	var gets atomic.Int32
	held, release := make(chan struct{}), make(chan struct{})
	cache.SetHookAfterGet(c, func(string) {
		if gets.Add(1) == 1 {
			close(held) // A's GET has read ann
			<-release
		}
	})
	a := f.goFetch(ctx, c, key, 1)
	<-held
	f.rename(1, "ann-v2")
	require.NoError(t, remote.Invalidate(ctx, key))

	const n = 32
	arrived := make(chan struct{}, n)
	var wg sync.WaitGroup
	got := make(chan user, n)
	for range n {
		wg.Go(func() {
			arrived <- struct{}{}
			u, err := cache.Fetch(ctx, c, key, f.loader(1))
			assert.NoError(t, err)
			got <- u
		})
	}
	for range n {
		<-arrived
	}
	close(release)
	assert.Equal(t, "ann", (<-a).Name, "A started before the invalidation")
	wg.Wait()
	close(got)
	for u := range got {
		assert.Equal(t, "ann-v2", u.Name, "a caller that started after the invalidation returned")
	}
	// A's GET, then one GET shared by the others (a few more if some had
	// not yet registered when it was sent), and the GETs of their flight.
	assert.Less(t, gets.Load(), int32(n/2), "the later callers share GETs")
}
