package cache_test

import (
	"context"
	"sort"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/cache"
)

// batchLoader loads users by key from MariaDB, recording each call's keys.
type batchLoader struct {
	f     *fixture
	ids   map[string]int64
	mu    sync.Mutex
	calls [][]string
}

func (b *batchLoader) load(ctx context.Context, keys []string) (map[string]user, error) {
	b.mu.Lock()
	b.calls = append(b.calls, append([]string(nil), keys...))
	b.mu.Unlock()
	m := map[string]user{}
	for _, k := range keys {
		u, err := b.f.query(ctx, b.ids[k])
		if err == cache.ErrNotFound {
			continue
		}
		if err != nil {
			return nil, err
		}
		m[k] = u
	}
	return m, nil
}

func sorted(s []string) []string {
	s = append([]string(nil), s...)
	sort.Strings(s)
	return s
}

func TestFetchMany(t *testing.T) {
	for _, tc := range []struct {
		name   string
		client func(t *testing.T) (redis.UniversalClient, *counter)
	}{
		{"Client", func(t *testing.T) (redis.UniversalClient, *counter) { return counted(t) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			ctx := context.Background()
			rdb, calls := tc.client(t)
			c := mustNew(t, rdb, &cache.Options{Prefix: f.base + "-gen:"})
			defer c.Close()
			k1, k2, k3 := f.key("user", 1), f.key("user", 2), f.key("user", 3)
			bl := &batchLoader{f: f, ids: map[string]int64{k1: 1, k2: 2, k3: 3}}
			_, err := cache.Fetch(ctx, c, k1, f.loader(1))
			require.NoError(t, err)

			m, err := cache.FetchMany(ctx, c, []string{k1, k2, k3, k2}, bl.load)
			require.NoError(t, err)
			assert.Equal(t, map[string]user{k1: {1, "ann"}, k2: {2, "bob"}}, m)
			require.Len(t, bl.calls, 1, "one loader call for all missing keys")
			assert.Equal(t, sorted([]string{k2, k3}), sorted(bl.calls[0]))
			assert.Equal(t, "value", f.kind(k2))
			assert.Equal(t, "not-found", f.kind(k3))

			calls.n.Store(0)
			m, err = cache.FetchMany(ctx, c, []string{k1, k2, k3}, bl.load)
			require.NoError(t, err)
			assert.Len(t, m, 2)
			assert.Len(t, bl.calls, 1, "all hits")
			assert.Equal(t, int64(1), calls.n.Load(), "one round trip on the hit path")
			s := c.Stats()
			assert.Equal(t, uint64(1), s.NotFoundHits)
		})
	}
}

func TestFetchManyWaitsForAnotherProcess(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	holder, batcher := f.cache(nil), f.cache(nil)
	k1, k2 := f.key("user", 1), f.key("user", 2)
	bl := &batchLoader{f: f, ids: map[string]int64{k1: 1, k2: 2}}
	loaded, resume := make(chan struct{}), make(chan struct{})
	cache.SetHookBeforeFill(holder, func(string) { close(loaded); <-resume })
	var once sync.Once
	cache.SetHookLeaseWaited(batcher, func(string) { once.Do(func() { close(resume) }) })
	done := f.goFetch(ctx, holder, k1, 1)
	<-loaded // holder has k1's lease
	m, err := cache.FetchMany(ctx, batcher, []string{k1, k2}, bl.load)
	require.NoError(t, err)
	<-done
	assert.Equal(t, map[string]user{k1: {1, "ann"}, k2: {2, "bob"}}, m)
	require.Len(t, bl.calls, 1)
	assert.Equal(t, []string{k2}, bl.calls[0], "k1 came from the holder's fill")
	assert.Equal(t, int64(1), f.loads.Load())
}

func TestFetchManyInvalidatedDuringLoad(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	c, w := f.cache(nil), f.cache(nil)
	k1 := f.key("user", 1)
	var once sync.Once
	cache.SetHookBeforeFill(c, func(string) {
		once.Do(func() {
			f.rename(1, "ann-v2")
			assert.NoError(t, w.Invalidate(ctx, k1))
		})
	})
	bl := &batchLoader{f: f, ids: map[string]int64{k1: 1}}
	m, err := cache.FetchMany(ctx, c, []string{k1}, bl.load)
	require.NoError(t, err)
	assert.Equal(t, "ann", m[k1].Name)
	assert.Equal(t, "absent", f.kind(k1), "the fill was refused (R1)")
	assert.Equal(t, uint64(1), c.Stats().FillsRefused)
}

// A key that another process fills with bytes this T does not decode (a
// value of another type or format version) is loaded, not dropped: first
// while FetchMany waits for that process's lease, then between its read and
// its lease.
func TestFetchManyLoadsKeyFilledWithAnotherType(t *testing.T) {
	other := func(context.Context) (string, error) { return "not a user", nil }

	t.Run("await", func(t *testing.T) {
		f := newFixture(t)
		ctx := context.Background()
		holder, batcher := f.cache(nil), f.cache(nil)
		k1 := f.key("user", 1)
		bl := &batchLoader{f: f, ids: map[string]int64{k1: 1}}
		leased, resume, filled := make(chan struct{}), make(chan struct{}), make(chan struct{})
		var once sync.Once
		cache.SetHookLeaseWaited(batcher, func(string) {
			once.Do(func() { close(resume); <-filled })
		})
		go func() {
			defer close(filled)
			_, err := cache.Fetch(ctx, holder, k1, func(ctx context.Context) (string, error) {
				close(leased)
				<-resume
				return other(ctx)
			})
			assert.NoError(t, err)
		}()
		<-leased // holder has k1's lease
		m, err := cache.FetchMany(ctx, batcher, []string{k1}, bl.load)
		require.NoError(t, err)
		assert.Equal(t, map[string]user{k1: {1, "ann"}}, m)
		assert.Equal(t, [][]string{{k1}}, bl.calls)
		assert.Equal(t, uint64(1), batcher.Stats().Corrupt)
	})

	t.Run("acquire", func(t *testing.T) {
		f := newFixture(t)
		ctx := context.Background()
		holder := f.cache(nil)
		k1, k2 := f.key("user", 1), f.key("user", 2)
		h := &scriptHook{before: func() { // between the MGET and the leases
			_, err := cache.Fetch(ctx, holder, k1, other)
			assert.NoError(t, err)
		}}
		batcher := f.cacheOn(hooked(t, h), nil)
		bl := &batchLoader{f: f, ids: map[string]int64{k1: 1, k2: 2}}
		h.armed.Store(true)
		m, err := cache.FetchMany(ctx, batcher, []string{k1, k2}, bl.load)
		require.NoError(t, err)
		assert.Equal(t, map[string]user{k1: {1, "ann"}, k2: {2, "bob"}}, m)
		require.Len(t, bl.calls, 1)
		assert.Equal(t, sorted([]string{k1, k2}), sorted(bl.calls[0]))
		assert.Equal(t, "value", f.kind(k2))
		u, err := cache.Fetch(ctx, batcher, k2, mustNotLoad(t))
		require.NoError(t, err)
		assert.Equal(t, "bob", u.Name, "k2 was filled")
	})
}

// FetchMany's leases and fills complete even if the caller's ctx ends
// while it loads, so no lease is left to hold other processes back.
func TestFetchManyCancelledDuringLoadLeavesNoLease(t *testing.T) {
	f := newFixture(t)
	c := f.cache(nil)
	k1 := f.key("user", 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m, err := cache.FetchMany(ctx, c, []string{k1}, func(context.Context, []string) (map[string]user, error) {
		cancel() // the caller leaves; the loader still answers
		return map[string]user{k1: {1, "ann"}}, nil
	})
	require.NoError(t, err)
	assert.Equal(t, "ann", m[k1].Name)
	assert.Equal(t, "value", f.kind(k1), "filled, not left leased")
}
