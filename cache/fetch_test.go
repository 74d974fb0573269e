package cache_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/cache"
)

func TestFetchFillsThenHits(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	c := f.cache(nil)
	key := f.key("user", 1)
	for range 3 {
		u, err := cache.Fetch(ctx, c, key, f.loader(1))
		require.NoError(t, err)
		assert.Equal(t, user{1, "ann"}, u)
	}
	assert.Equal(t, int64(1), f.loads.Load())
	s := c.Stats()
	assert.Equal(t, uint64(2), s.Hits)
	assert.Equal(t, uint64(1), s.Misses)
	assert.Equal(t, uint64(1), s.Loads)
	assert.Equal(t, "value", f.kind(key))
}

func TestNotFoundIsCached(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	c := f.cache(&cache.Options{NotFoundTTL: 20 * time.Second, Jitter: 0.5})
	key := f.key("user", 9)
	for range 3 {
		_, err := cache.Fetch(ctx, c, key, f.loader(9))
		assert.ErrorIs(t, err, cache.ErrNotFound)
	}
	assert.Equal(t, int64(1), f.loads.Load())
	assert.Equal(t, uint64(2), c.Stats().NotFoundHits)
	assert.Equal(t, "not-found", f.kind(key))
	ttl := f.rdb.PTTL(ctx, key).Val()
	assert.True(t, ttl > 9*time.Second && ttl <= 20*time.Second, "jittered not-found TTL, got %v", ttl)

	// The row appears; its insert invalidates the key (race R9).
	_, err := f.db.Exec("INSERT INTO users VALUES (9, 'ivy')")
	require.NoError(t, err)
	require.NoError(t, c.Invalidate(ctx, key))
	u, err := cache.Fetch(ctx, c, key, f.loader(9))
	require.NoError(t, err)
	assert.Equal(t, "ivy", u.Name)
}

type filterFunc func(key string) bool

func (f filterFunc) MayContain(_ context.Context, key string) bool { return f(key) }

func TestFilterRejectsWithoutRoundTrip(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	rdb, calls := counted(t)
	known := f.key("user", 1)
	c := mustNew(t, rdb, &cache.Options{Prefix: f.base + "-gen:", Filter: filterFunc(func(k string) bool { return k == known })})
	defer c.Close()

	_, err := cache.Fetch(ctx, c, f.key("user", 404), f.loader(404))
	assert.ErrorIs(t, err, cache.ErrNotFound)
	m, err := cache.FetchMany(ctx, c, []string{f.key("user", 405)}, func(context.Context, []string) (map[string]user, error) {
		t.Error("batch loader called for a rejected key")
		return nil, nil
	})
	require.NoError(t, err)
	assert.Empty(t, m)
	assert.Zero(t, calls.n.Load(), "no Redis round trip for a rejected key")
	assert.Zero(t, f.loads.Load())
	assert.Equal(t, uint64(2), c.Stats().FilterRejects)

	u, err := cache.Fetch(ctx, c, known, f.loader(1))
	require.NoError(t, err)
	assert.Equal(t, "ann", u.Name)
}

func TestTTLJitterSpread(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	c := f.cache(&cache.Options{TTL: 100 * time.Second, Jitter: 0.2})
	const n = 200
	keys := make([]string, n)
	for i := range keys {
		keys[i] = f.key("user", int64(i))
	}
	_, err := cache.FetchMany(ctx, c, keys, func(_ context.Context, ks []string) (map[string]user, error) {
		m := make(map[string]user, len(ks))
		for i, k := range ks {
			m[k] = user{ID: int64(i), Name: "u" + strconv.Itoa(i)}
		}
		return m, nil
	})
	require.NoError(t, err)
	pipe := f.rdb.Pipeline()
	cmds := make([]interface{ Val() time.Duration }, n)
	for i, k := range keys {
		cmds[i] = pipe.PTTL(ctx, k)
	}
	_, err = pipe.Exec(ctx)
	require.NoError(t, err)
	lo, hi := time.Hour, time.Duration(0)
	for _, cmd := range cmds {
		d := cmd.Val()
		lo, hi = min(lo, d), max(hi, d)
	}
	// Uniform over [80s, 100s]: 200 draws miss either end fifth with
	// probability 0.8^200 (1e-19).
	assert.GreaterOrEqual(t, lo, 79*time.Second)
	assert.LessOrEqual(t, hi, 100*time.Second)
	assert.Less(t, lo, 84*time.Second, "lowest TTL near TTL*(1-Jitter)")
	assert.Greater(t, hi, 96*time.Second, "highest TTL near TTL")

	// A per-call TTL replaces Options.TTL, jittered too.
	key := f.key("other", 1)
	_, err = cache.Fetch(ctx, c, key, f.loader(1), cache.WithTTL(time.Hour))
	require.NoError(t, err)
	d := f.rdb.PTTL(ctx, key).Val()
	assert.True(t, d > 47*time.Minute && d <= time.Hour, "got %v", d)
	assert.InDelta(t, float64(d.Milliseconds()), float64(cache.TTLOf(f.stored(key))), 2000, "logical expiry matches")
}

func TestCallerCancelDoesNotFailOthers(t *testing.T) {
	f := newFixture(t)
	c := f.cache(nil)
	key := f.key("user", 1)
	entered, release := make(chan struct{}), make(chan struct{})
	var loaderCtx context.Context
	load := func(ctx context.Context) (user, error) {
		loaderCtx = ctx
		close(entered)
		<-release
		return f.query(ctx, 1)
	}
	ctx1, cancel1 := context.WithCancel(context.Background())
	first := make(chan error)
	go func() {
		_, err := cache.Fetch(ctx1, c, key, load)
		first <- err
	}()
	<-entered // the load runs for the first caller
	var wg sync.WaitGroup
	got := make([]user, 3)
	for i := range got {
		wg.Go(func() {
			u, err := cache.Fetch(context.Background(), c, key, load)
			assert.NoError(t, err)
			got[i] = u
		})
	}
	cancel1()
	assert.ErrorIs(t, <-first, context.Canceled, "the cancelled caller returns while the load is blocked")
	assert.NoError(t, loaderCtx.Err(), "the load does not inherit the caller's cancel")
	close(release)
	wg.Wait()
	for _, u := range got {
		assert.Equal(t, "ann", u.Name)
	}
	u, err := cache.Fetch(context.Background(), c, key, mustNotLoad(t))
	require.NoError(t, err)
	assert.Equal(t, "ann", u.Name, "the load filled the key")
}

func TestLoaderPanicReachesEveryCaller(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	c := f.cache(nil)
	key := f.key("user", 1)
	release := make(chan struct{})
	load := func(context.Context) (user, error) {
		<-release
		panic("boom")
	}
	var wg sync.WaitGroup
	errs := make([]error, 5)
	for i := range errs {
		wg.Go(func() { _, errs[i] = cache.Fetch(ctx, c, key, load) })
	}
	close(release)
	wg.Wait()
	for _, err := range errs {
		require.ErrorIs(t, err, cache.ErrLoaderPanic)
		var pe *cache.PanicError
		require.ErrorAs(t, err, &pe)
		assert.Equal(t, "boom", pe.Value)
		assert.Contains(t, string(pe.Stack), "TestLoaderPanicReachesEveryCaller")
	}
	assert.Equal(t, "absent", f.kind(key), "the lease was given back")
	u, err := cache.Fetch(ctx, c, key, f.loader(1))
	require.NoError(t, err)
	assert.Equal(t, "ann", u.Name)
}

func TestLoaderErrorIsNotCached(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	c := f.cache(nil)
	key := f.key("user", 1)
	boom := errors.New("db down")
	_, err := cache.Fetch(ctx, c, key, func(context.Context) (user, error) { return user{}, boom })
	assert.ErrorIs(t, err, boom)
	assert.Equal(t, "absent", f.kind(key))
	u, err := cache.Fetch(ctx, c, key, f.loader(1))
	require.NoError(t, err)
	assert.Equal(t, "ann", u.Name)
}

func TestCorruptEntryIsReplaced(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	c := f.cache(nil)
	for i, junk := range []string{
		"not ours",
		"\xca\x01\x01\x00\x00\x00\x00\x00{broken json",
		"\xca\x09\x01\x00\x00\x00\x00\x00{}", // a future format version
		"",
	} {
		key := f.key("user"+strconv.Itoa(i), 1)
		require.NoError(t, f.rdb.Set(ctx, key, junk, 0).Err())
		u, err := cache.Fetch(ctx, c, key, f.loader(1))
		require.NoError(t, err)
		assert.Equal(t, "ann", u.Name)
		assert.Equal(t, "value", f.kind(key), "replaced: %q", junk)
		_, err = cache.Fetch(ctx, c, key, mustNotLoad(t))
		require.NoError(t, err)
	}
	assert.Equal(t, uint64(4), c.Stats().Corrupt)

	// Another Redis type is not ours to overwrite: served from the source.
	key := f.key("hash", 1)
	require.NoError(t, f.rdb.HSet(ctx, key, "a", "b").Err())
	u, err := cache.Fetch(ctx, c, key, f.loader(1))
	require.NoError(t, err)
	assert.Equal(t, "ann", u.Name)
	assert.Equal(t, "hash", f.rdb.Type(ctx, key).Val())
	assert.False(t, c.Stats().BreakerOpen)
}

func TestLeaseWaitIsBounded(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	holder := f.cache(&cache.Options{LeaseTTL: time.Minute})
	waiter := f.cache(&cache.Options{LeaseWait: 50 * time.Millisecond, LeasePoll: 5 * time.Millisecond})
	key := f.key("user", 1)
	loaded, resume := make(chan struct{}), make(chan struct{})
	cache.SetHookAfterLoad(holder, func(string) { close(loaded); <-resume })
	done := f.goFetch(ctx, holder, key, 1)
	<-loaded // the holder's lease stays for a minute
	u, err := cache.Fetch(ctx, waiter, key, f.loader(1))
	require.NoError(t, err)
	assert.Equal(t, "ann", u.Name, "past LeaseWait the waiter loads by itself")
	assert.Equal(t, "lease", f.kind(key), "without filling")
	assert.Equal(t, uint64(1), waiter.Stats().LeaseWaits)
	close(resume)
	<-done
	assert.Equal(t, "value", f.kind(key))
}

func TestLeaseWaiterGetsTheFill(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	holder, waiter := f.cache(nil), f.cache(nil)
	key := f.key("user", 1)
	loaded, resume := make(chan struct{}), make(chan struct{})
	cache.SetHookBeforeFill(holder, func(string) { close(loaded); <-resume })
	var once sync.Once
	cache.SetHookLeaseWaited(waiter, func(string) { once.Do(func() { close(resume) }) })
	done := f.goFetch(ctx, holder, key, 1)
	<-loaded
	u, err := cache.Fetch(ctx, waiter, key, mustNotLoad(t))
	require.NoError(t, err)
	assert.Equal(t, "ann", u.Name)
	<-done
	assert.Equal(t, uint64(1), waiter.Stats().LeaseWaits)
}

func TestEarlyRefreshKeepsServing(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	// A huge beta makes every hit refresh.
	refresher := f.cache(&cache.Options{EarlyRefresh: 1e12})
	other := f.cache(nil)
	key := f.key("user", 1)
	_, err := cache.Fetch(ctx, refresher, key, f.loader(1))
	require.NoError(t, err)
	f.rename(1, "ann-v2")

	loading, release := make(chan struct{}), make(chan struct{})
	slow := func(ctx context.Context) (user, error) {
		close(loading)
		<-release
		return f.query(ctx, 1)
	}
	u, err := cache.Fetch(ctx, refresher, key, slow)
	require.NoError(t, err)
	assert.Equal(t, "ann", u.Name, "the hit returns at once")
	<-loading
	assert.Equal(t, "refresh", f.kind(key))
	u, err = cache.Fetch(ctx, other, key, mustNotLoad(t))
	require.NoError(t, err)
	assert.Equal(t, "ann", u.Name, "readers are served during the refresh")
	close(release)
	require.NoError(t, refresher.Close()) // waits for the refresh
	assert.Equal(t, uint64(1), refresher.Stats().EarlyRefreshes)
	u, err = cache.Fetch(ctx, other, key, mustNotLoad(t))
	require.NoError(t, err)
	assert.Equal(t, "ann-v2", u.Name)

	// An invalidation during a refresh refuses its fill.
	loading, release = make(chan struct{}), make(chan struct{})
	second := f.cache(&cache.Options{EarlyRefresh: 1e12})
	_, err = cache.Fetch(ctx, second, key, slow)
	require.NoError(t, err)
	<-loading
	f.rename(1, "ann-v3")
	require.NoError(t, other.Invalidate(ctx, key))
	close(release)
	require.NoError(t, second.Close())
	assert.Equal(t, "absent", f.kind(key))
}
