package bloom_test

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/bloom"
)

// insertIDs inserts ids [from, to) into table (id) in batches.
func insertIDs(t *testing.T, db *sql.DB, table string, from, to int) {
	t.Helper()
	for lo := from; lo < to; lo += 1000 {
		var b strings.Builder
		fmt.Fprintf(&b, "INSERT INTO %s (id) VALUES ", table)
		for i := lo; i < min(lo+1000, to); i++ {
			if i > lo {
				b.WriteByte(',')
			}
			b.WriteString("(" + strconv.Itoa(i) + ")")
		}
		_, err := db.Exec(b.String())
		require.NoError(t, err)
	}
}

func TestWarmFromMariaDBScan(t *testing.T) {
	ctx := context.Background()
	db, _ := env.NewDatabase(t)
	_, err := db.Exec("CREATE TABLE users (id BIGINT UNSIGNED PRIMARY KEY, email VARCHAR(100))")
	require.NoError(t, err)
	_, err = db.Exec("CREATE TABLE orders (shop INT, id INT, PRIMARY KEY (shop, id))")
	require.NoError(t, err)
	const n = 20_000
	insertIDs(t, db, "users", 1, n+1)
	_, err = db.Exec("INSERT INTO orders VALUES (1, 7), (2, 42)")
	require.NoError(t, err)

	opts := fastOpts(n)
	opts.Local = true
	opts.ProgressEvery = 5000
	var progress []bloom.Progress
	opts.Progress = func(p bloom.Progress) { progress = append(progress, p) }
	key := env.Prefix(t) + "bloom"
	f, _ := newFilter(t, key, opts)
	assert.True(t, f.MayContain(ctx, "user:1"), "not warm: may contain")

	require.NoError(t, f.Warm(ctx, bloom.Scan(ctx, db, "user:", "SELECT id FROM users")))
	require.NoError(t, f.Check(ctx))
	var counts []int64
	for _, p := range progress {
		counts = append(counts, p.Keys)
	}
	assert.Equal(t, []int64{5000, 10000, 15000, 20000, 20000}, counts)
	assert.True(t, progress[len(progress)-1].Done)

	runLocal(t, f)
	for i := 1; i <= n; i++ {
		require.True(t, f.MayContain(ctx, "user:"+strconv.Itoa(i)), "user:%d", i)
	}
	fp := 0
	for i := n + 1; i <= 2*n; i++ {
		if f.MayContain(ctx, "user:"+strconv.Itoa(i)) {
			fp++
		}
	}
	assert.Less(t, fp, n/50, "false positives among %d absent ids", n)
	remote := bloom.New(env.RedisClient(t), key, opts)
	for i := 1; i <= n; i += 97 {
		require.True(t, remote.MayContain(ctx, "user:"+strconv.Itoa(i)))
	}

	// Warm does nothing once a version is current.
	require.NoError(t, f.Warm(ctx, func(yield func(string, error) bool) {
		t.Error("Warm read keys although the filter is warm")
	}))

	// Two columns make one key.
	orders, _ := newFilter(t, key+":orders", fastOpts(100))
	require.NoError(t, orders.Warm(ctx, bloom.Scan(ctx, db, "order:", "SELECT shop, id FROM orders")))
	assert.True(t, orders.MayContain(ctx, "order:1:7"))
	assert.True(t, orders.MayContain(ctx, "order:2:42"))
	assert.False(t, orders.MayContain(ctx, "order:1:42"))
}

func TestWarmScanErrorLeavesNothing(t *testing.T) {
	ctx := context.Background()
	db, _ := env.NewDatabase(t)
	key := env.Prefix(t) + "bloom"
	f, rdb := newFilter(t, key, fastOpts(100))
	err := f.Warm(ctx, bloom.Scan(ctx, db, "user:", "SELECT id FROM no_such_table"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no_such_table")
	assert.ErrorIs(t, f.Check(ctx), bloom.ErrNotWarm)
	h := rdb.HGetAll(ctx, key).Val()
	assert.NotContains(t, h, "next", "the failed build must be unlisted")
	keys, err := rdb.Keys(ctx, key+":v*").Result()
	require.NoError(t, err)
	assert.Empty(t, keys, "the failed build's bitmap must be deleted")
	// A later Warm works.
	require.NoError(t, f.Warm(ctx, keyRange("user:", 0, 10)))
	assert.NoError(t, f.Check(ctx))
}

// TestRebuildUnderConcurrentAddsLosesNone rebuilds from a MariaDB table
// while two instances insert rows and add their keys, and readers look up
// every key whose Add returned. The scan is held halfway until adds have
// happened during the build.
func TestRebuildUnderConcurrentAddsLosesNone(t *testing.T) {
	ctx := context.Background()
	db, _ := env.NewDatabase(t)
	_, err := db.Exec("CREATE TABLE items (id BIGINT PRIMARY KEY)")
	require.NoError(t, err)
	const initial = 5000
	insertIDs(t, db, "items", 0, initial)

	key := env.Prefix(t) + "bloom"
	builder, rdb := newFilter(t, key, fastOpts(50_000))
	adders := make([]*bloom.Filter, 2)
	for i := range adders {
		adders[i], _ = newFilter(t, key, fastOpts(50_000))
	}
	reader, _ := newFilter(t, key, fastOpts(50_000))
	scan := func() bloom.Keys { return bloom.Scan(ctx, db, "item:", "SELECT id FROM items") }
	require.NoError(t, builder.Warm(ctx, scan()))
	oldVersion := builder.Stats().Version

	var nextID atomic.Int64
	nextID.Store(initial)
	var mu sync.Mutex
	var added []string // keys whose Add returned
	midway, enough := make(chan struct{}), make(chan struct{})
	var afterMidway atomic.Int64
	stop := make(chan struct{})
	var workers sync.WaitGroup
	var errs atomic.Int64
	for _, f := range adders {
		workers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				id := nextID.Add(1)
				if _, err := db.Exec("INSERT INTO items (id) VALUES (?)", id); err != nil {
					errs.Add(1)
					return
				}
				k := "item:" + strconv.FormatInt(id, 10)
				if err := f.Add(ctx, k); err != nil {
					errs.Add(1)
					return
				}
				mu.Lock()
				added = append(added, k)
				mu.Unlock()
				select {
				case <-midway:
					if afterMidway.Add(1) == 100 {
						close(enough)
					}
				default:
				}
			}
		})
	}
	var falseNeg, checks atomic.Int64
	workers.Go(func() {
		rng := rand.New(rand.NewPCG(3, 4))
		for {
			select {
			case <-stop:
				return
			default:
			}
			mu.Lock()
			n := len(added)
			var k string
			if n > 0 {
				k = added[rng.IntN(n)]
			}
			mu.Unlock()
			if n == 0 {
				continue
			}
			checks.Add(1)
			if !reader.MayContain(ctx, k) {
				falseNeg.Add(1)
			}
			checks.Add(1)
			if !reader.MayContain(ctx, "item:"+strconv.Itoa(rng.IntN(initial))) {
				falseNeg.Add(1)
			}
		}
	})

	held := func(yield func(string, error) bool) {
		i := 0
		for k, err := range scan() {
			if i == initial/2 {
				close(midway)
				<-enough
			}
			i++
			if !yield(k, err) {
				return
			}
		}
	}
	require.NoError(t, builder.Rebuild(ctx, held))
	newVersion := builder.Stats().Version
	// Some adds after the swap, too.
	mu.Lock()
	target := len(added) + 50
	mu.Unlock()
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(added) >= target }, 30*time.Second, time.Millisecond)
	close(stop)
	workers.Wait()
	require.Zero(t, errs.Load())

	assert.NotEqual(t, oldVersion, newVersion)
	assert.Zero(t, rdb.Exists(ctx, builder.BitmapKey(oldVersion)).Val(), "the old version is dropped")
	h := rdb.HGetAll(ctx, key).Val()
	assert.NotContains(t, h, "prev")
	assert.NotContains(t, h, "next")
	assert.Zero(t, falseNeg.Load(), "false negatives in %d lookups during the rebuild", checks.Load())

	rows, err := db.Query("SELECT id FROM items")
	require.NoError(t, err)
	defer rows.Close()
	missing, total := 0, 0
	for rows.Next() {
		var id int64
		require.NoError(t, rows.Scan(&id))
		total++
		if !reader.MayContain(ctx, "item:"+strconv.FormatInt(id, 10)) {
			missing++
		}
	}
	require.NoError(t, rows.Err())
	assert.Zero(t, missing, "rows missing from the rebuilt filter, of %d", total)
	assert.Greater(t, total, initial+150)
	assert.Zero(t, reader.Stats().FailOpen, "readers never lost the filter")
}

func TestRebuildForgetsDeletedKeys(t *testing.T) {
	ctx := context.Background()
	f, _ := newFilter(t, env.Prefix(t)+"bloom", fastOpts(2000))
	require.NoError(t, f.Warm(ctx, keyRange("user:", 0, 2000)))
	require.NoError(t, f.Rebuild(ctx, keyRange("user:", 0, 1000)))
	gone := 0
	for i := 1000; i < 2000; i++ {
		if !f.MayContain(ctx, "user:"+strconv.Itoa(i)) {
			gone++
		}
	}
	assert.Greater(t, gone, 900, "deleted keys answer \"cannot contain\" after a rebuild")
	for i := range 1000 {
		require.True(t, f.MayContain(ctx, "user:"+strconv.Itoa(i)))
	}
}

func TestConcurrentBuilds(t *testing.T) {
	ctx := context.Background()
	key := env.Prefix(t) + "bloom"
	opts := fastOpts(1000)
	opts.BuildTimeout = time.Second
	a, _ := newFilter(t, key, opts)
	b, rdb := newFilter(t, key, opts)
	require.NoError(t, a.Warm(ctx, keyRange("user:", 0, 100)))

	started, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- a.Rebuild(ctx, func(yield func(string, error) bool) {
			close(started)
			<-release
			for i := range 100 {
				if !yield("user:"+strconv.Itoa(i), nil) {
					return
				}
			}
		})
	}()
	<-started
	assert.ErrorIs(t, b.Rebuild(ctx, keyRange("user:", 0, 100)), bloom.ErrBuilding)
	assert.NoError(t, b.Warm(ctx, func(yield func(string, error) bool) {
		t.Error("Warm read keys although a version is current")
	}))
	// Past BuildTimeout, b takes the stalled build over; a finds its swap refused.
	time.Sleep(opts.BuildTimeout + 50*time.Millisecond) // BuildTimeout is wall-clock by definition
	require.NoError(t, b.Rebuild(ctx, keyRange("user:", 0, 100)))
	close(release)
	assert.ErrorIs(t, <-done, bloom.ErrBuilding)
	keys, err := rdb.Keys(ctx, key+":v*").Result()
	require.NoError(t, err)
	assert.Equal(t, []string{b.BitmapKey(b.Stats().Version)}, keys, "only the current bitmap is left")
	for i := range 100 {
		assert.True(t, a.MayContain(ctx, "user:"+strconv.Itoa(i)))
	}
}
