package cache_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/cache"
)

// An early refresh whose hit is followed by an invalidation from another
// process, before the refresh lease goes in: the lease must not bring the
// invalidated value back, neither while the refresh loads nor after its
// load fails.
func TestEarlyRefreshAfterRemoteInvalidation(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	remote := f.cache(nil)
	key := f.key("user", 1)
	loading, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	defer free()
	cache.SetHookLeaseWaited(remote, func(string) { free() })
	h := &scriptHook{before: func() {
		// Between the hit's GET and the refresh lease: v2 commits and
		// another process invalidates.
		f.rename(1, "ann-v2")
		assert.NoError(t, remote.Invalidate(ctx, key))
	}}
	c := f.cacheOn(hooked(t, h), &cache.Options{EarlyRefresh: 1e12}) // every hit refreshes
	_, err := cache.Fetch(ctx, c, key, f.loader(1))
	require.NoError(t, err)

	h.armed.Store(true)
	u, err := cache.Fetch(ctx, c, key, func(context.Context) (user, error) {
		close(loading)
		<-release
		return user{}, errors.New("source unavailable")
	})
	require.NoError(t, err)
	assert.Equal(t, "ann", u.Name, "the hit predates the write")
	<-loading // the refresh loads, under a lease taken after the invalidation

	u, err = cache.Fetch(ctx, remote, key, f.loader(1))
	require.NoError(t, err)
	assert.Equal(t, "ann-v2", u.Name, "the old value is not served after Invalidate returned")
	free()
	require.NoError(t, c.Close()) // waits for the refresh, whose load failed
	u, err = cache.Fetch(ctx, c, key, mustNotLoad(t))
	require.NoError(t, err)
	assert.Equal(t, "ann-v2", u.Name, "the old value was not restored")
	assert.Zero(t, c.Stats().EarlyRefreshes, "no refresh lease went in")
}

// A Fetch that starts after another process's invalidation and joins an
// early refresh must not take the value the refresh's lease attempt found
// before that invalidation.
func TestEarlyRefreshResultPredatesRemoteInvalidation(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	other, remote := f.cache(nil), f.cache(nil)
	key := f.key("user", 1)
	joined := make(chan struct{}, 8)
	got := make(chan user, 1)
	h := &scriptHook{}
	c := f.cacheOn(hooked(t, h), &cache.Options{EarlyRefresh: 1e12})
	cache.SetHookJoined(c, func(string) { joined <- struct{}{} })
	h.before = func() {
		// Another process refilled the old row meanwhile (other bytes: its
		// TTL differs), so the refresh lease does not go in and the refresh
		// takes the value it found instead.
		assert.NoError(t, other.Invalidate(ctx, key))
		_, err := cache.Fetch(ctx, other, key, f.loader(1), cache.WithTTL(time.Hour))
		assert.NoError(t, err)
	}
	h.after = func() {
		// Before the refresh returns: v2 commits, another process
		// invalidates, then a Fetch starts here and joins the refresh.
		f.rename(1, "ann-v2")
		assert.NoError(t, remote.Invalidate(ctx, key))
		go func() {
			u, err := cache.Fetch(ctx, c, key, f.loader(1))
			assert.NoError(t, err)
			got <- u
		}()
		<-joined
	}
	_, err := cache.Fetch(ctx, c, key, f.loader(1))
	require.NoError(t, err)
	<-joined // the first Fetch's own flight

	h.armed.Store(true)
	_, err = cache.Fetch(ctx, c, key, f.loader(1))
	require.NoError(t, err)
	assert.Equal(t, "ann-v2", (<-got).Name, "started after Invalidate returned: the new row")
	require.NoError(t, c.Close())
	u, err := cache.Fetch(ctx, remote, key, mustNotLoad(t))
	require.NoError(t, err)
	assert.Equal(t, "ann-v2", u.Name)
}
