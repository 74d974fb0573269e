package cache_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/cache"
)

// A loader that ignores its ctx: callers without deadlines, and callers
// that come later, get ErrLoadTimeout past LoadTimeout instead of waiting
// for ever, and the next caller loads anew.
func TestLoaderIgnoringContextReleasesCallers(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	const loadTimeout = 200 * time.Millisecond
	c := f.cache(&cache.Options{LoadTimeout: loadTimeout})
	key := f.key("user", 1)
	stuck, started := make(chan struct{}), make(chan struct{}, 1)
	t.Cleanup(func() { close(stuck) })
	hang := func(context.Context) (user, error) {
		started <- struct{}{}
		<-stuck // ignores ctx
		return user{}, nil
	}
	const callers = 3
	errs := make(chan error, callers)
	for range callers {
		go func() {
			_, err := cache.Fetch(ctx, c, key, hang)
			errs <- err
		}()
	}
	<-started
	for range callers {
		select {
		case err := <-errs:
			assert.ErrorIs(t, err, cache.ErrLoadTimeout)
		case <-time.After(20 * loadTimeout):
			require.FailNow(t, "Fetch still waits for a loader that ignores its ctx")
		}
	}
	// The next caller starts a new load, and finds no lease left behind.
	u, err := cache.Fetch(ctx, c, key, f.loader(1))
	require.NoError(t, err)
	assert.Equal(t, "ann", u.Name)
	assert.Equal(t, int64(1), f.loads.Load())
	raw, err := f.rdb.Get(ctx, key).Bytes()
	require.NoError(t, err)
	assert.Equal(t, "value", cache.KindOf(raw), "it filled: the timed-out load's lease was given back")
}
