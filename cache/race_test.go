package cache_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/singleflight"

	"github.com/cacheaside/cacheaside/cache"
)

// R1: a reader reads v1, a writer commits v2 and deletes, the reader sets v1.
func TestRaceR1StaleSetAfterDelete(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()

	// Plain cache-aside in the same interleaving leaves v1 in Redis for good.
	naive := f.key("naive", 1)
	v1, err := f.query(ctx, 1) // reader: GET missed, SELECT
	require.NoError(t, err)
	f.rename(1, "ann-v2")                                       // writer: UPDATE, commit
	require.NoError(t, f.rdb.Del(ctx, naive).Err())             // writer: DEL
	require.NoError(t, f.rdb.Set(ctx, naive, v1.Name, 0).Err()) // reader: SET
	assert.Equal(t, "ann", f.rdb.Get(ctx, naive).Val(), "plain cache-aside is stale")
	f.rename(1, "ann")

	// The same interleaving through Fetch: the reader holds a lease while it
	// reads, the writer's Invalidate removes it, the fill is refused.
	reader, writer := f.cache(nil), f.cache(nil)
	key := f.key("user", 1)
	loaded, resume := make(chan struct{}), make(chan struct{})
	var once sync.Once
	cache.SetHookBeforeFill(reader, func(string) { once.Do(func() { close(loaded); <-resume }) })
	got := make(chan user)
	go func() {
		u, err := cache.Fetch(ctx, reader, key, f.loader(1))
		assert.NoError(t, err)
		got <- u
	}()
	<-loaded
	assert.Equal(t, "lease", f.kind(key), "the reader leases the key before it reads")
	f.rename(1, "ann-v2")
	require.NoError(t, writer.Invalidate(ctx, key))
	close(resume)
	assert.Equal(t, "ann", (<-got).Name, "the reader's own read predates the write")

	assert.Equal(t, "absent", f.kind(key), "the stale fill was refused")
	assert.Equal(t, uint64(1), reader.Stats().FillsRefused)
	u, err := cache.Fetch(ctx, reader, key, f.loader(1))
	require.NoError(t, err)
	assert.Equal(t, "ann-v2", u.Name)
	u, err = cache.Fetch(ctx, writer, key, mustNotLoad(t))
	require.NoError(t, err)
	assert.Equal(t, "ann-v2", u.Name)
}

// R1 with tombstones: a tombstone also takes the lease, and readers that
// meet it read the source without filling.
func TestRaceR1WithTombstone(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	c := f.cache(&cache.Options{TombstoneTTL: time.Minute})
	key := f.key("user", 1)
	loaded, resume := make(chan struct{}), make(chan struct{})
	var once sync.Once
	cache.SetHookBeforeFill(c, func(string) { once.Do(func() { close(loaded); <-resume }) })
	done := f.goFetch(ctx, c, key, 1)
	<-loaded
	f.rename(1, "ann-v2")
	require.NoError(t, c.Invalidate(ctx, key))
	close(resume)
	<-done
	assert.Equal(t, "tombstone", f.kind(key))
	for range 2 {
		u, err := cache.Fetch(ctx, c, key, f.loader(1))
		require.NoError(t, err)
		assert.Equal(t, "ann-v2", u.Name)
	}
	assert.Equal(t, int64(3), f.loads.Load(), "readers load past a tombstone")
	assert.Equal(t, "tombstone", f.kind(key), "and do not fill")
}

// R2: a writer deletes, a reader fills v1, the writer commits v2.
func TestRaceR2DeleteThenWrite(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	writer, reader := f.cache(nil), f.cache(nil)
	key := f.key("user", 1)

	// Without the invalidation after the commit, the cache keeps v1.
	require.NoError(t, writer.Invalidate(ctx, key))
	u, err := cache.Fetch(ctx, reader, key, f.loader(1))
	require.NoError(t, err)
	assert.Equal(t, "ann", u.Name)
	f.rename(1, "ann-v2")
	u, err = cache.Fetch(ctx, reader, key, mustNotLoad(t))
	require.NoError(t, err)
	assert.Equal(t, "ann", u.Name, "a delete before the write alone leaves the old row cached")

	// Write invalidates again after fn.
	err = writer.Write(ctx, []string{key}, func(ctx context.Context) error {
		u, err := cache.Fetch(ctx, reader, key, f.loader(1))
		require.NoError(t, err)
		assert.Equal(t, "ann-v2", u.Name)
		assert.Equal(t, "value", f.kind(key), "a reader filled the old row before the commit")
		_, err = f.db.ExecContext(ctx, "UPDATE users SET name = 'ann-v3' WHERE id = 1")
		return err
	})
	require.NoError(t, err)
	u, err = cache.Fetch(ctx, reader, key, f.loader(1))
	require.NoError(t, err)
	assert.Equal(t, "ann-v3", u.Name)
}

// R6: two fills land in the wrong order.
func TestRaceR6OutOfOrderFills(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()

	// Plain cache-aside: the later fill carries the older read.
	naive := f.key("naive", 1)
	require.NoError(t, f.rdb.Set(ctx, naive, "ann-v2", 0).Err()) // B read v2, set
	require.NoError(t, f.rdb.Set(ctx, naive, "ann", 0).Err())    // A read v1 earlier, sets last
	assert.Equal(t, "ann", f.rdb.Get(ctx, naive).Val(), "plain cache-aside is stale")

	a, b, w := f.cache(nil), f.cache(nil), f.cache(nil)
	key := f.key("user", 1)
	loaded, resume := make(chan struct{}), make(chan struct{})
	var once sync.Once
	cache.SetHookBeforeFill(a, func(string) { once.Do(func() { close(loaded); <-resume }) })
	done := f.goFetch(ctx, a, key, 1)
	<-loaded // A read v1
	f.rename(1, "ann-v2")
	require.NoError(t, w.Invalidate(ctx, key))
	u, err := cache.Fetch(ctx, b, key, f.loader(1)) // B reads v2 and fills
	require.NoError(t, err)
	assert.Equal(t, "ann-v2", u.Name)
	close(resume) // A fills last
	assert.Equal(t, "ann", (<-done).Name)

	u, err = cache.Fetch(ctx, w, key, mustNotLoad(t))
	require.NoError(t, err)
	assert.Equal(t, "ann-v2", u.Name, "only the current lease holder filled")
	assert.Equal(t, uint64(1), a.Stats().FillsRefused)
}

// R10: a Fetch that starts after Invalidate returned joins an in-process
// load that began before it.
func TestRaceR10JoinedOldFlight(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()

	// A plain singleflight hands the later caller the older load.
	var g singleflight.Group
	entered, release := make(chan struct{}), make(chan struct{})
	first := g.DoChan("k", func() (any, error) { close(entered); <-release; return "ann", nil })
	<-entered // the load has read v1; v2 is committed and invalidated now
	second := g.DoChan("k", func() (any, error) { return "ann-v2", nil })
	close(release)
	<-first
	assert.Equal(t, "ann", (<-second).Val, "a plain singleflight joins the old load")

	c := f.cache(nil)
	key := f.key("user", 1)
	entered, release = make(chan struct{}), make(chan struct{})
	var calls int
	var mu sync.Mutex
	load := func(ctx context.Context) (user, error) {
		u, err := f.query(ctx, 1)
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		if n == 1 {
			close(entered)
			<-release
		}
		return u, err
	}
	oldDone := make(chan user)
	go func() {
		u, err := cache.Fetch(ctx, c, key, load)
		assert.NoError(t, err)
		oldDone <- u
	}()
	<-entered // the first flight has read v1
	f.rename(1, "ann-v2")
	require.NoError(t, c.Invalidate(ctx, key))

	// Started after Invalidate returned: must not join the first flight,
	// which stays blocked until after this Fetch returned (the timeout only
	// turns a hang into a failure).
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	u, err := cache.Fetch(tctx, c, key, load)
	require.NoError(t, err)
	assert.Equal(t, "ann-v2", u.Name)
	close(release)
	assert.Equal(t, "ann", (<-oldDone).Name)
	assert.Equal(t, 2, calls)
	u, err = cache.Fetch(ctx, c, key, mustNotLoad(t))
	require.NoError(t, err)
	assert.Equal(t, "ann-v2", u.Name, "the old flight's fill was refused")
}

// WriteStrong: readers in other processes see the write as soon as it
// commits, and nobody fills while it runs.
func TestStrongWriteReadYourWrites(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	reader := f.cache(nil)
	key := f.key("user", 1)
	_, err := cache.Fetch(ctx, reader, key, f.loader(1))
	require.NoError(t, err)

	// Default Write: between the commit and its final invalidation, a value
	// filled after its first invalidation is still served.
	plain := f.cache(nil)
	err = plain.Write(ctx, []string{key}, func(ctx context.Context) error {
		_, err := cache.Fetch(ctx, reader, key, f.loader(1)) // fills ann
		require.NoError(t, err)
		f.rename(1, "ann-v2")
		u, err := cache.Fetch(ctx, reader, key, mustNotLoad(t))
		require.NoError(t, err)
		assert.Equal(t, "ann", u.Name, "default mode serves the old row until fn returns")
		return nil
	})
	require.NoError(t, err)

	strong := f.cache(&cache.Options{Strong: true})
	loadsBefore := f.loads.Load()
	err = strong.Write(ctx, []string{key}, func(ctx context.Context) error {
		assert.Equal(t, "tombstone", f.kind(key))
		u, err := cache.Fetch(ctx, reader, key, f.loader(1))
		require.NoError(t, err)
		assert.Equal(t, "ann-v2", u.Name, "before the commit: the committed row")
		f.rename(1, "ann-v3")
		u, err = cache.Fetch(ctx, reader, key, f.loader(1))
		require.NoError(t, err)
		assert.Equal(t, "ann-v3", u.Name, "after the commit: the write, at once")
		assert.Equal(t, "tombstone", f.kind(key), "nobody filled")
		_, deadline := ctx.Deadline()
		assert.True(t, deadline, "fn's context ends with the tombstones")
		return nil
	})
	require.NoError(t, err)
	assert.Equal(t, int64(2), f.loads.Load()-loadsBefore)
	assert.Equal(t, "absent", f.kind(key))
	u, err := cache.Fetch(ctx, reader, key, f.loader(1))
	require.NoError(t, err)
	assert.Equal(t, "ann-v3", u.Name)
	assert.Equal(t, "value", f.kind(key))
}

// R10 across processes: the invalidation comes from another process (the
// binlog invalidator runs in one process only), so this process's flight
// epoch does not move; a Fetch that starts afterwards joins the old flight
// but does not take its result.
func TestRaceR10RemoteInvalidation(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	c, remote := f.cache(nil), f.cache(nil)
	key := f.key("user", 1)
	loaded, resume := make(chan struct{}), make(chan struct{})
	var once sync.Once
	cache.SetHookBeforeFill(c, func(string) { once.Do(func() { close(loaded); <-resume }) })
	var mu sync.Mutex
	var flights []string
	joined := make(chan struct{})
	cache.SetHookJoined(c, func(fk string) {
		mu.Lock()
		defer mu.Unlock()
		flights = append(flights, fk)
		if len(flights) == 2 {
			close(joined)
		}
	})
	oldDone := make(chan user)
	go func() {
		u, err := cache.Fetch(ctx, c, key, f.loader(1))
		assert.NoError(t, err)
		oldDone <- u
	}()
	<-loaded // the flight holds the lease and has read v1
	f.rename(1, "ann-v2")
	require.NoError(t, remote.Invalidate(ctx, key))

	newDone := make(chan user)
	go func() {
		u, err := cache.Fetch(ctx, c, key, f.loader(1))
		assert.NoError(t, err)
		newDone <- u
	}()
	<-joined
	mu.Lock()
	assert.Equal(t, flights[0], flights[1], "the later Fetch joined the old flight")
	mu.Unlock()
	close(resume)
	assert.Equal(t, "ann", (<-oldDone).Name)
	assert.Equal(t, "ann-v2", (<-newDone).Name, "but did not take its result")
	assert.Equal(t, int64(2), f.loads.Load())
	u, err := cache.Fetch(ctx, remote, key, mustNotLoad(t))
	require.NoError(t, err)
	assert.Equal(t, "ann-v2", u.Name)
}
