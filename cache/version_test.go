package cache_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/cache"
)

// item is a row with a version column; it implements cache.Versioner.
type item struct {
	ID      int64  `json:"id"`
	Name    string `json:"name"`
	Version int64  `json:"version"`
}

func (i item) CacheVersion() int64 { return i.Version }

var _ cache.Versioner = item{}

// queryer is a *sql.DB or a *sql.Tx.
type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// newItems adds an items table holding item 1 ("a", version 1) to the
// fixture's database.
func newItems(t *testing.T) *fixture {
	f := newFixture(t)
	_, err := f.db.Exec("CREATE TABLE items (id BIGINT PRIMARY KEY, name VARCHAR(64) NOT NULL, version BIGINT NOT NULL)")
	require.NoError(t, err)
	_, err = f.db.Exec("INSERT INTO items VALUES (1, 'a', 1)")
	require.NoError(t, err)
	return f
}

// itemLoader reads item id through q, counting its calls.
func (f *fixture) itemLoader(q queryer, id int64) cache.LoaderFunc[item] {
	return func(ctx context.Context) (item, error) {
		f.loads.Add(1)
		var it item
		err := q.QueryRowContext(ctx, "SELECT id, name, version FROM items WHERE id = ?", id).Scan(&it.ID, &it.Name, &it.Version)
		if errors.Is(err, sql.ErrNoRows) {
			return it, cache.ErrNotFound
		}
		return it, err
	}
}

// laggingReplica returns a REPEATABLE READ snapshot of the database taken
// now: reads through it keep returning the rows as they are now, like a
// replica that has not applied the writes that follow.
func laggingReplica(t *testing.T, db *sql.DB) *sql.Tx {
	tx, err := db.BeginTx(context.Background(), &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback() })
	var n int
	require.NoError(t, tx.QueryRow("SELECT COUNT(*) FROM items").Scan(&n)) // the snapshot starts here
	return tx
}

// update commits a new name and version for item id on the primary.
func (f *fixture) update(id int64, name string, version int64) {
	f.t.Helper()
	_, err := f.db.Exec("UPDATE items SET name = ?, version = ? WHERE id = ?", name, version, id)
	require.NoError(f.t, err)
}

func mustNotLoadItem(t testing.TB) cache.LoaderFunc[item] {
	return func(context.Context) (item, error) {
		t.Error("loader called; the value should have come from Redis")
		return item{}, errors.New("unexpected load")
	}
}

// r4 caches item 1 at version 1, takes a lagging replica, commits version 2
// on the primary, invalidates with invalidate, and reads through the
// replica: the race R4 interleaving.
func r4(t *testing.T, invalidate func(c *cache.Cache, key string) error) (*fixture, *cache.Cache, string) {
	ctx := context.Background()
	f := newItems(t)
	c := f.cache(&cache.Options{KeepVersionFloors: true})
	key := f.key("item", 1)
	v, err := cache.Fetch(ctx, c, key, f.itemLoader(f.db, 1))
	require.NoError(t, err)
	require.Equal(t, int64(1), v.Version)

	replica := laggingReplica(t, f.db)
	f.update(1, "b", 2)
	require.NoError(t, invalidate(c, key))

	v, err = cache.Fetch(ctx, c, key, f.itemLoader(replica, 1))
	require.NoError(t, err)
	require.Equal(t, item{1, "a", 1}, v, "the replica still has version 1")
	return f, c, key
}

func TestR4PlainInvalidateLetsLaggingFillLand(t *testing.T) {
	_, c, key := r4(t, func(c *cache.Cache, key string) error { return c.Invalidate(context.Background(), key) })
	// The stale row is cached: every later read gets version 1.
	v, err := cache.Fetch(context.Background(), c, key, mustNotLoadItem(t))
	require.NoError(t, err)
	assert.Equal(t, int64(1), v.Version)
}

func TestR4VersionedTombstoneRefusesLaggingFill(t *testing.T) {
	ctx := context.Background()
	f, c, key := r4(t, func(c *cache.Cache, key string) error {
		return c.InvalidateVersions(context.Background(), cache.KeyVersion{Key: key, Version: 2})
	})
	assert.Equal(t, uint64(1), c.Stats().FillsRefused)
	ver, ok := cache.VersionOf(f.stored(key))
	assert.True(t, ok)
	assert.Equal(t, uint64(2), ver, "the tombstone is back in place of the refused lease")
	assert.Equal(t, "tombstone", f.kind(key))

	// The primary has version 2: that fill is accepted, and reads hit it.
	v, err := cache.Fetch(ctx, c, key, f.itemLoader(f.db, 1))
	require.NoError(t, err)
	assert.Equal(t, item{1, "b", 2}, v)
	assert.Equal(t, "value", f.kind(key))
	v, err = cache.Fetch(ctx, c, key, mustNotLoadItem(t))
	require.NoError(t, err)
	assert.Equal(t, item{1, "b", 2}, v)
	ver, _ = cache.VersionOf(f.stored(key))
	assert.Equal(t, uint64(2), ver, "the value records its version")
	assert.Equal(t, uint64(1), c.Stats().FillsRefused)
}

// floored returns a fixture with items, a Cache with KeepVersionFloors and
// the key of item 1, which holds a versioned tombstone at ver.
func floored(t *testing.T, ver int64) (*fixture, *cache.Cache, string) {
	f := newItems(t)
	c := f.cache(&cache.Options{KeepVersionFloors: true})
	key := f.key("item", 1)
	require.NoError(t, c.InvalidateVersions(context.Background(), cache.KeyVersion{Key: key, Version: ver}))
	return f, c, key
}

// fixed is a loader returning it, counting its calls.
func (f *fixture) fixed(it item, err error) cache.LoaderFunc[item] {
	return func(context.Context) (item, error) {
		f.loads.Add(1)
		return it, err
	}
}

func TestVersionedTombstonesOutOfOrder(t *testing.T) {
	ctx := context.Background()
	f, c, key := floored(t, 3)
	require.NoError(t, c.InvalidateVersions(ctx, cache.KeyVersion{Key: key, Version: 2}))
	ver, ok := cache.VersionOf(f.stored(key))
	require.True(t, ok)
	assert.Equal(t, uint64(3), ver, "a lower tombstone does not replace a higher one")

	_, err := cache.Fetch(ctx, c, key, f.fixed(item{1, "b", 2}, nil))
	require.NoError(t, err)
	assert.Equal(t, "tombstone", f.kind(key), "version 2 is below the floor")
	_, err = cache.Fetch(ctx, c, key, f.fixed(item{1, "c", 3}, nil))
	require.NoError(t, err)
	assert.Equal(t, "value", f.kind(key))

	// A lower tombstone still removes the value, but keeps its version.
	require.NoError(t, c.InvalidateVersions(ctx, cache.KeyVersion{Key: key, Version: 2}))
	assert.Equal(t, "tombstone", f.kind(key))
	ver, _ = cache.VersionOf(f.stored(key))
	assert.Equal(t, uint64(3), ver)
	// A higher one replaces it.
	require.NoError(t, c.InvalidateVersions(ctx, cache.KeyVersion{Key: key, Version: 4}))
	ver, _ = cache.VersionOf(f.stored(key))
	assert.Equal(t, uint64(4), ver)
	ttl := f.rdb.PTTL(ctx, key).Val()
	assert.Greater(t, ttl, 50*time.Second, "Options.VersionTTL defaults to a minute")
	assert.LessOrEqual(t, ttl, time.Minute)
}

func TestVersionedTombstoneOverLeaseKeepsFloor(t *testing.T) {
	ctx := context.Background()
	f, c, key := floored(t, 3)
	cache.SetHookAfterLoad(c, func(string) {
		assert.Equal(t, "lease", f.kind(key))
		// A late, lower invalidation arrives while the lease (floor 3) loads.
		assert.NoError(t, c.InvalidateVersions(ctx, cache.KeyVersion{Key: key, Version: 2}))
	})
	v, err := cache.Fetch(ctx, c, key, f.fixed(item{1, "x", 5}, nil))
	require.NoError(t, err)
	assert.Equal(t, int64(5), v.Version)
	assert.Equal(t, uint64(1), c.Stats().FillsRefused, "the lease was replaced")
	assert.Equal(t, "tombstone", f.kind(key))
	ver, _ := cache.VersionOf(f.stored(key))
	assert.Equal(t, uint64(3), ver, "the tombstone kept the lease's floor")
}

func TestVersionedTombstoneNonVersionerNotFilled(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	c := f.cache(&cache.Options{KeepVersionFloors: true})
	key, key2 := f.key("user", 1), f.key("user", 2)
	require.NoError(t, c.InvalidateVersions(ctx, cache.KeyVersion{Key: key}, cache.KeyVersion{Key: key2}))
	for range 2 {
		u, err := cache.Fetch(ctx, c, key, f.loader(1))
		require.NoError(t, err)
		assert.Equal(t, "ann", u.Name)
		m, err := cache.FetchMany(ctx, c, []string{key2}, func(ctx context.Context, keys []string) (map[string]user, error) {
			f.loads.Add(1)
			u, err := f.query(ctx, 2)
			return map[string]user{key2: u}, err
		})
		require.NoError(t, err)
		assert.Equal(t, "bob", m[key2].Name)
	}
	assert.Equal(t, int64(4), f.loads.Load(), "nothing was filled: every read loads")
	assert.Equal(t, "tombstone", f.kind(key))
	assert.Equal(t, "tombstone", f.kind(key2))
}

func TestVersionedTombstoneNotFound(t *testing.T) {
	ctx := context.Background()
	f := newItems(t)
	c := f.cache(&cache.Options{KeepVersionFloors: true})
	deleted, absentOK := f.key("item", 7), f.key("item", 8)
	require.NoError(t, c.InvalidateVersions(ctx,
		cache.KeyVersion{Key: deleted, Version: 2}, cache.KeyVersion{Key: absentOK, Version: 0}))
	for _, k := range []string{deleted, absentOK} {
		_, err := cache.Fetch(ctx, c, k, f.itemLoader(f.db, 7))
		require.ErrorIs(t, err, cache.ErrNotFound)
	}
	assert.Equal(t, "tombstone", f.kind(deleted), "not-found is refused over a positive version")
	assert.Equal(t, "not-found", f.kind(absentOK), "version 0: not-found may fill")
	assert.Equal(t, uint64(1), c.Stats().FillsRefused)
}

func TestVersionedFetchMany(t *testing.T) {
	ctx := context.Background()
	f := newItems(t)
	c := f.cache(&cache.Options{KeepVersionFloors: true})
	stale, fresh, plain, gone := f.key("item", 1), f.key("item", 2), f.key("item", 3), f.key("item", 4)
	require.NoError(t, c.InvalidateVersions(ctx, cache.KeyVersion{Key: stale, Version: 2},
		cache.KeyVersion{Key: fresh, Version: 2}, cache.KeyVersion{Key: gone, Version: 2}))
	load := func(ctx context.Context, keys []string) (map[string]item, error) {
		return map[string]item{stale: {1, "a", 1}, fresh: {2, "b", 2}, plain: {3, "c", 1}}, nil
	}
	m, err := cache.FetchMany(ctx, c, []string{stale, fresh, plain, gone}, load)
	require.NoError(t, err)
	assert.Len(t, m, 3, "the caller gets what the source said")
	assert.Equal(t, uint64(2), c.Stats().FillsRefused, "version 1 and not-found are below the floor of 2")
	assert.Equal(t, "tombstone", f.kind(stale))
	assert.Equal(t, "tombstone", f.kind(gone))
	assert.Equal(t, "value", f.kind(fresh))
	assert.Equal(t, "value", f.kind(plain))
	ver, _ := cache.VersionOf(f.stored(stale))
	assert.Equal(t, uint64(2), ver)
}

func TestVersionedDeadLeaseIsTakenOverWithItsFloor(t *testing.T) {
	ctx := context.Background()
	f := newItems(t)
	c := f.cache(&cache.Options{LeaseTTL: time.Second, KeepVersionFloors: true})
	key := f.key("item", 1)
	// A holder took a lease over a tombstone of version 2 ten seconds ago and
	// died; the floor lasts another minute.
	now := uint64(time.Now().UnixMilli())
	require.NoError(t, f.rdb.Set(ctx, key, cache.VersionedLease(2, now-10_000, 70_000), time.Minute).Err())
	_, err := cache.Fetch(ctx, c, key, f.fixed(item{1, "a", 1}, nil))
	require.NoError(t, err)
	assert.Equal(t, "tombstone", f.kind(key), "version 1 was refused; the floor is back as a tombstone")
	ver, _ := cache.VersionOf(f.stored(key))
	assert.Equal(t, uint64(2), ver)
	ttl := f.rdb.PTTL(ctx, key).Val()
	assert.Greater(t, ttl, 50*time.Second, "the floor keeps its expiry")
	assert.LessOrEqual(t, ttl, time.Minute)
	_, err = cache.Fetch(ctx, c, key, f.fixed(item{1, "b", 2}, nil))
	require.NoError(t, err)
	assert.Equal(t, "value", f.kind(key))
}

// requireFloor asserts that key holds a versioned tombstone at ver.
func (f *fixture) requireFloor(key string, ver uint64) {
	f.t.Helper()
	require.Equal(f.t, "tombstone", f.kind(key))
	got, ok := cache.VersionOf(f.stored(key))
	require.True(f.t, ok, "the tombstone carries a version")
	require.Equal(f.t, ver, got)
}

// checkFloor asserts that the floor at key is ver: an older fill is
// refused and leaves the floor, ver itself fills.
func (f *fixture) checkFloor(c *cache.Cache, key string, ver int64) {
	f.t.Helper()
	ctx := context.Background()
	refused := c.Stats().FillsRefused
	v, err := cache.Fetch(ctx, c, key, f.fixed(item{1, "old", ver - 1}, nil))
	require.NoError(f.t, err)
	require.Equal(f.t, ver-1, v.Version, "the caller gets what it loaded")
	require.Equal(f.t, refused+1, c.Stats().FillsRefused, "the older row is not stored")
	f.requireFloor(key, uint64(ver))
	_, err = cache.Fetch(ctx, c, key, f.fixed(item{1, "new", ver}, nil))
	require.NoError(f.t, err)
	require.Equal(f.t, "value", f.kind(key))
	v, err = cache.Fetch(ctx, c, key, mustNotLoadItem(f.t))
	require.NoError(f.t, err)
	require.Equal(f.t, item{1, "new", ver}, v)
}

func TestPlainInvalidateKeepsFloor(t *testing.T) {
	ctx := context.Background()
	f, c, key := floored(t, 3)
	require.NoError(t, c.Invalidate(ctx, key))
	f.requireFloor(key, 3)
	ttl := f.rdb.PTTL(ctx, key).Val()
	assert.Greater(t, ttl, 50*time.Second, "the floor keeps Options.VersionTTL")
	f.checkFloor(c, key, 3)

	// The value filled at version 3 records it: a plain invalidation of it
	// (Write's, arriving after the binlog's) leaves that floor.
	require.NoError(t, c.Invalidate(ctx, key))
	f.checkFloor(c, key, 3)
}

func TestPlainInvalidateOverFloorKillsLease(t *testing.T) {
	ctx := context.Background()
	f, c, key := floored(t, 3)
	cache.SetHookAfterLoad(c, func(string) {
		assert.Equal(t, "lease", f.kind(key))
		assert.NoError(t, c.Invalidate(ctx, key))
	})
	v, err := cache.Fetch(ctx, c, key, f.fixed(item{1, "x", 5}, nil))
	require.NoError(t, err)
	assert.Equal(t, int64(5), v.Version)
	assert.Equal(t, uint64(1), c.Stats().FillsRefused, "the lease was replaced")
	f.requireFloor(key, 3)
}

func TestPlainInvalidateWithoutFloor(t *testing.T) {
	ctx := context.Background()
	f := newItems(t)
	c := f.cache(&cache.Options{KeepVersionFloors: true})
	zero, plain := f.key("item", 1), f.key("item", 2)
	require.NoError(t, c.InvalidateVersions(ctx, cache.KeyVersion{Key: zero, Version: 0}))
	_, err := cache.Fetch(ctx, c, plain, f.fixed(item{2, "p", 0}, nil))
	require.NoError(t, err)
	require.Equal(t, "value", f.kind(plain))
	_, ok := cache.VersionOf(f.stored(plain))
	require.False(t, ok, "version 0 is not recorded")
	require.NoError(t, c.Invalidate(ctx, zero, plain))
	assert.Equal(t, int64(0), f.rdb.Exists(ctx, zero, plain).Val(), "a floor of 0 and an unversioned value are deleted")

	ct := f.cache(&cache.Options{TombstoneTTL: time.Minute, KeepVersionFloors: true})
	require.NoError(t, c.InvalidateVersions(ctx, cache.KeyVersion{Key: zero, Version: 0}))
	require.NoError(t, ct.Invalidate(ctx, zero))
	assert.Equal(t, "tombstone", f.kind(zero))
	_, ok = cache.VersionOf(f.stored(zero))
	assert.False(t, ok, "a plain tombstone")
}

func TestWriteKeepsFloor(t *testing.T) {
	ctx := context.Background()
	f, c, key := floored(t, 3)
	require.NoError(t, c.Write(ctx, []string{key}, func(context.Context) error {
		f.requireFloor(key, 3)
		return nil
	}))
	f.checkFloor(c, key, 3)
}

func TestWriteStrongKeepsFloor(t *testing.T) {
	ctx := context.Background()
	f, c, key := floored(t, 3)
	require.NoError(t, c.WriteStrong(ctx, []string{key}, func(context.Context) error {
		f.requireFloor(key, 3)
		// Until the write is done nothing fills, not even a row at the floor.
		v, err := cache.Fetch(ctx, c, key, f.fixed(item{1, "during", 3}, nil))
		require.NoError(t, err)
		assert.Equal(t, int64(3), v.Version)
		f.requireFloor(key, 3)
		return nil
	}))
	assert.Equal(t, uint64(0), c.Stats().FillsRefused, "the strong tombstone took no lease")
	f.checkFloor(c, key, 3)
}

func TestPlainInvalidateKeepsFloorWithoutScripts(t *testing.T) {
	ctx := context.Background()
	f := newItems(t)
	c := f.cache(&cache.Options{KeepVersionFloors: true})
	keys := []string{f.key("item", 1), f.key("item", 2), f.key("item", 3)}
	for _, k := range keys {
		require.NoError(t, c.InvalidateVersions(ctx, cache.KeyVersion{Key: k, Version: 3}))
	}
	require.NoError(t, f.rdb.ScriptFlush(ctx).Err())
	require.NoError(t, c.Invalidate(ctx, keys...))
	for _, k := range keys {
		f.requireFloor(k, 3)
	}
	require.NoError(t, f.rdb.ScriptFlush(ctx).Err())
	require.NoError(t, c.Invalidate(ctx, keys[0]))
	f.requireFloor(keys[0], 3)
}

// An early refresh must not fill an older row than the value it refreshes
// records (a loader reading a lagging replica): the value's version is the
// refresh lease's floor.
func TestEarlyRefreshKeepsVersionFloor(t *testing.T) {
	f := newItems(t)
	ctx := context.Background()
	replica := laggingReplica(t, f.db) // still at version 1
	f.update(1, "b", 2)
	c := f.cache(&cache.Options{EarlyRefresh: 1e12}) // every hit refreshes
	key := f.key("item", 1)
	it, err := cache.Fetch(ctx, c, key, f.itemLoader(f.db, 1)) // fills version 2
	require.NoError(t, err)
	require.Equal(t, int64(2), it.Version)

	it, err = cache.Fetch(ctx, c, key, f.itemLoader(replica, 1)) // a hit; the refresh reads the replica
	require.NoError(t, err)
	assert.Equal(t, int64(2), it.Version)
	require.NoError(t, c.Close()) // waits for the refresh
	assert.Equal(t, uint64(1), c.Stats().EarlyRefreshes)
	assert.Equal(t, uint64(1), c.Stats().FillsRefused, "the older row was refused")

	it, err = cache.Fetch(ctx, f.cache(nil), key, mustNotLoadItem(t))
	require.NoError(t, err)
	assert.Equal(t, item{ID: 1, Name: "b", Version: 2}, it, "the refreshed value stays")
}

// A hold (a WriteStrong or TombstoneTTL window kept over a floor, see
// KeepVersionFloors) written by a process whose clock runs behind the
// reader's by more than the hold: by the reader's clock it is over, by
// Redis's it is not. Redis's clock decides: nothing fills through it.
func TestHoldDecidedByRedisClock(t *testing.T) {
	f := newItems(t)
	ctx := context.Background()
	c := f.cache(nil)
	const life, hold = 60_000, 10_000 // ms
	writerNow := uint64(time.Now().Add(-20 * time.Second).UnixMilli())
	stone := cache.VersionedHold(1, writerNow+hold, life-hold)
	k1, k2 := f.key("item", 1), f.key("item", 2)
	for _, k := range []string{k1, k2} {
		require.NoError(t, f.rdb.Set(ctx, k, stone, life*time.Millisecond).Err())
	}

	it, err := cache.Fetch(ctx, c, k1, f.itemLoader(f.db, 1))
	require.NoError(t, err)
	assert.Equal(t, "a", it.Name)
	m, err := cache.FetchMany(ctx, c, []string{k2}, func(ctx context.Context, keys []string) (map[string]item, error) {
		it, err := f.itemLoader(f.db, 1)(ctx)
		return map[string]item{k2: it}, err
	})
	require.NoError(t, err)
	assert.Equal(t, "a", m[k2].Name)
	for _, k := range []string{k1, k2} {
		raw, err := f.rdb.Get(ctx, k).Bytes()
		require.NoError(t, err)
		assert.Equal(t, "tombstone", cache.KindOf(raw), "%s: nothing filled through the hold", k)
	}
}

// A versioned tombstone for an earlier commit of the row (the binlog
// invalidator catching up) that lands while WriteStrong's fn runs must
// not end WriteStrong's hold: a reader would fill the old row during fn,
// and serve it after the commit (read-your-writes lost).
func TestVersionedTombstoneKeepsWriteStrongHold(t *testing.T) {
	for _, keep := range []bool{false, true} {
		f := newItems(t)
		ctx := context.Background()
		writer := f.cache(&cache.Options{KeepVersionFloors: keep})
		binlog, reader := f.cache(&cache.Options{KeepVersionFloors: keep}), f.cache(&cache.Options{KeepVersionFloors: keep})
		key := f.key("item", 1)
		_, err := cache.Fetch(ctx, reader, key, f.itemLoader(f.db, 1)) // records version 1
		require.NoError(t, err)

		require.NoError(t, writer.WriteStrong(ctx, []string{key}, func(ctx context.Context) error {
			require.NoError(t, binlog.InvalidateVersions(ctx, cache.KeyVersion{Key: key, Version: 1}))
			it, err := cache.Fetch(ctx, reader, key, f.itemLoader(f.db, 1))
			require.NoError(t, err)
			assert.Equal(t, "a", it.Name, "not committed yet")
			raw, err := f.rdb.Get(ctx, key).Bytes()
			require.NoError(t, err)
			assert.Equal(t, "tombstone", cache.KindOf(raw), "keep floors %v: nothing filled during the write", keep)
			_, err = f.db.ExecContext(ctx, "UPDATE items SET name = 'b', version = 2 WHERE id = 1")
			return err
		}))
		it, err := cache.Fetch(ctx, reader, key, f.itemLoader(f.db, 1))
		require.NoError(t, err)
		assert.Equal(t, "b", it.Name)
	}
}
