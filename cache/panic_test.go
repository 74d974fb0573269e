package cache_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/cache"
)

// panicCodec is JSONCodec whose Marshal panics once armed.
type panicCodec struct {
	cache.JSONCodec
	armed atomic.Bool
}

func (p *panicCodec) Marshal(v any) ([]byte, error) {
	if p.armed.Load() {
		panic("codec broke")
	}
	return p.JSONCodec.Marshal(v)
}

// A codec panic after the load, on the miss path: the caller gets a
// *PanicError, and the lease does not stay behind to hold other processes
// off the key until LeaseTTL.
func TestCodecPanicOnMissGivesLeaseBack(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	codec := &panicCodec{}
	codec.armed.Store(true)
	c := f.cache(&cache.Options{Codec: codec})
	key := f.key("user", 1)

	_, err := cache.Fetch(ctx, c, key, f.loader(1))
	require.ErrorIs(t, err, cache.ErrLoaderPanic)
	var pe *cache.PanicError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, "codec broke", pe.Value)
	n, err := f.rdb.Exists(ctx, key).Result()
	require.NoError(t, err)
	assert.Zero(t, n, "the lease was given back")

	// Another process fills at once, without waiting for the lease.
	u, err := cache.Fetch(ctx, f.cache(&cache.Options{LeaseWait: time.Millisecond}), key, f.loader(1))
	require.NoError(t, err)
	assert.Equal(t, "ann", u.Name)
	raw, err := f.rdb.Get(ctx, key).Bytes()
	require.NoError(t, err)
	assert.Equal(t, "value", cache.KindOf(raw), "the other process filled")
}

// A codec panic in an early refresh (a background goroutine) must not end
// the process: the refresh fails, is logged, and the value it replaced is
// put back.
func TestCodecPanicInEarlyRefresh(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	codec := &panicCodec{}
	c := f.cache(&cache.Options{Codec: codec, EarlyRefresh: 1e12}) // every hit refreshes
	key := f.key("user", 1)
	_, err := cache.Fetch(ctx, c, key, f.loader(1))
	require.NoError(t, err)
	before, err := f.rdb.Get(ctx, key).Bytes()
	require.NoError(t, err)

	codec.armed.Store(true)
	u, err := cache.Fetch(ctx, c, key, f.loader(1)) // a hit that refreshes
	require.NoError(t, err)
	assert.Equal(t, "ann", u.Name)
	require.NoError(t, c.Close()) // waits for the refresh
	assert.Equal(t, uint64(1), c.Stats().EarlyRefreshes)
	after, err := f.rdb.Get(ctx, key).Bytes()
	require.NoError(t, err)
	assert.Equal(t, before, after, "the refreshed value is back, not the refresh lease")
}

// The same for FetchMany: the panic is an error, and no lease stays.
func TestCodecPanicInFetchManyGivesLeasesBack(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	codec := &panicCodec{}
	codec.armed.Store(true)
	c := f.cache(&cache.Options{Codec: codec})
	k1, k2 := f.key("user", 1), f.key("user", 2)
	bl := &batchLoader{f: f, ids: map[string]int64{k1: 1, k2: 2}}
	_, err := cache.FetchMany(ctx, c, []string{k1, k2}, bl.load)
	require.ErrorIs(t, err, cache.ErrLoaderPanic)
	n, err := f.rdb.Exists(ctx, k1, k2).Result()
	require.NoError(t, err)
	assert.Zero(t, n, "the leases were given back")
}
