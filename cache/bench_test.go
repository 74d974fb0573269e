package cache_test

import (
	"context"
	"encoding/json"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/cache"
)

// profile is a typical cached row, about 300 bytes of JSON.
type profile struct {
	ID        int64     `json:"id"`
	Email     string    `json:"email"`
	Name      string    `json:"name"`
	Country   string    `json:"country"`
	Plan      string    `json:"plan"`
	Balance   string    `json:"balance"`
	Verified  bool      `json:"verified"`
	Logins    int       `json:"logins"`
	Tags      []string  `json:"tags"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

func newProfile(id int64) profile {
	at := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	return profile{
		ID: id, Email: "user" + strconv.FormatInt(id, 10) + "@example.com", Name: "Ann Example",
		Country: "NL", Plan: "business", Balance: "1234.56", Verified: true, Logins: 42,
		Tags: []string{"beta", "newsletter", "vip"}, CreatedAt: at, UpdatedAt: at.Add(time.Hour),
	}
}

func profileLoader(id int64) cache.LoaderFunc[profile] {
	return func(context.Context) (profile, error) { return newProfile(id), nil }
}

// benchClients returns a Cache and, on its own connection pool, a raw
// client, both on the harness's Redis, and a unique key start.
// benchClients returns a Cache and a raw client on go-redis's default
// options, which ignore context deadlines (so Fetch does not bound its
// requests, see Options.RedisTimeout).
func benchClients(b *testing.B) (*cache.Cache, *redis.Client, string) {
	return benchClientsOn(b, env.RedisClient)
}

// benchClientsOn is benchClients with clients made by client.
func benchClientsOn(b *testing.B, client func(testing.TB) *redis.Client) (*cache.Cache, *redis.Client, string) {
	base := uniqueBase(b)
	c := mustNew(b, client(b), &cache.Options{Prefix: base + "-gen:", TTL: time.Hour})
	return c, client(b), base
}

// recommendedClient returns a client of the harness's Redis with the
// options the package documentation recommends, closed at the end.
func recommendedClient(t testing.TB) *redis.Client {
	rdb := env.NewRedis(&redis.Options{
		ContextTimeoutEnabled: true,
		DialTimeout:           100 * time.Millisecond,
		ReadTimeout:           100 * time.Millisecond,
		WriteTimeout:          100 * time.Millisecond,
		PoolTimeout:           100 * time.Millisecond,
	})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// setRaw stores, for the raw client's side of a comparison, the JSON of
// profile first+i at keys[i], for an hour, in one pipeline.
func setRaw(b *testing.B, rdb *redis.Client, first int64, keys ...string) {
	ctx := context.Background()
	pipe := rdb.Pipeline()
	for i, k := range keys {
		data, _ := json.Marshal(newProfile(first + int64(i)))
		pipe.Set(ctx, k, data, time.Hour)
	}
	_, err := pipe.Exec(ctx)
	require.NoError(b, err)
}

// rawGet is the raw client's read of one profile: GET and json.Unmarshal.
func rawGet(ctx context.Context, rdb *redis.Client, key string) (profile, error) {
	var p profile
	data, err := rdb.Get(ctx, key).Bytes()
	if err == nil {
		err = json.Unmarshal(data, &p)
	}
	return p, err
}

// rawMGet is the raw client's read of many profiles: MGET and
// json.Unmarshal of each value into a map.
func rawMGet(ctx context.Context, rdb *redis.Client, keys []string) (map[string]profile, error) {
	vals, err := rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, err
	}
	m := make(map[string]profile, len(keys))
	for i, v := range vals {
		var p profile
		if err := json.Unmarshal([]byte(v.(string)), &p); err != nil {
			return nil, err
		}
		m[keys[i]] = p
	}
	return m, nil
}

// profilesLoader is a batch loader of profiles numbered by position.
func profilesLoader(_ context.Context, keys []string) (map[string]profile, error) {
	m := make(map[string]profile, len(keys))
	for i, k := range keys {
		m[k] = newProfile(int64(i))
	}
	return m, nil
}

// reportVsRaw reports the means of the alternated Fetch and raw reads of a
// VsRaw benchmark and their ratio.
func reportVsRaw(b *testing.B, fetchNs, rawNs time.Duration) {
	b.ReportMetric(float64(fetchNs.Nanoseconds())/float64(b.N), "fetch-ns/op")
	b.ReportMetric(float64(rawNs.Nanoseconds())/float64(b.N), "raw-ns/op")
	b.ReportMetric(float64(fetchNs)/float64(rawNs), "fetch/raw")
}

func BenchmarkFetchHit(b *testing.B) {
	c, _, base := benchClients(b)
	ctx := context.Background()
	key := base + "user:1"
	load := profileLoader(1)
	_, err := cache.Fetch(ctx, c, key, load)
	require.NoError(b, err)
	b.ReportAllocs()
	for b.Loop() {
		if p, err := cache.Fetch(ctx, c, key, load); err != nil || p.ID != 1 {
			b.Fatal(p, err)
		}
	}
}

func BenchmarkRawGetJSON(b *testing.B) {
	_, rdb, base := benchClients(b)
	ctx := context.Background()
	key := base + "raw:1"
	setRaw(b, rdb, 1, key)
	b.ReportAllocs()
	for b.Loop() {
		if p, err := rawGet(ctx, rdb, key); err != nil || p.ID != 1 {
			b.Fatal(p, err)
		}
	}
}

func BenchmarkFetchHitParallel(b *testing.B) {
	c, _, base := benchClients(b)
	ctx := context.Background()
	key := base + "user:1"
	load := profileLoader(1)
	_, err := cache.Fetch(ctx, c, key, load)
	require.NoError(b, err)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if p, err := cache.Fetch(ctx, c, key, load); err != nil || p.ID != 1 {
				b.Error(p, err)
				return
			}
		}
	})
}

func BenchmarkRawGetJSONParallel(b *testing.B) {
	_, rdb, base := benchClients(b)
	ctx := context.Background()
	key := base + "raw:1"
	setRaw(b, rdb, 1, key)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if p, err := rawGet(ctx, rdb, key); err != nil || p.ID != 1 {
				b.Error(p, err)
				return
			}
		}
	})
}

// BenchmarkFetchHitVsRaw alternates one Fetch hit and one raw GET +
// json.Unmarshal of the same value, so that both see the same machine load,
// and reports each one's mean and their ratio.
func BenchmarkFetchHitVsRaw(b *testing.B) {
	benchFetchHitVsRaw(b, env.RedisClient)
}

// BenchmarkFetchHitVsRawBounded is BenchmarkFetchHitVsRaw on clients with
// the recommended options: Fetch bounds each GET with Options.RedisTimeout.
func BenchmarkFetchHitVsRawBounded(b *testing.B) {
	benchFetchHitVsRaw(b, recommendedClient)
}

func benchFetchHitVsRaw(b *testing.B, client func(testing.TB) *redis.Client) {
	c, rdb, base := benchClientsOn(b, client)
	ctx := context.Background()
	key, rawKey := base+"user:1", base+"raw:1"
	load := profileLoader(1)
	_, err := cache.Fetch(ctx, c, key, load)
	require.NoError(b, err)
	setRaw(b, rdb, 1, rawKey)
	var fetchNs, rawNs time.Duration
	b.ReportAllocs()
	for b.Loop() {
		t0 := time.Now()
		p, err := cache.Fetch(ctx, c, key, load)
		t1 := time.Now()
		if err != nil || p.ID != 1 {
			b.Fatal(p, err)
		}
		q, err := rawGet(ctx, rdb, rawKey)
		t2 := time.Now()
		if err != nil || q.ID != 1 {
			b.Fatal(q, err)
		}
		fetchNs += t1.Sub(t0)
		rawNs += t2.Sub(t1)
	}
	reportVsRaw(b, fetchNs, rawNs)
}

const batchSize = 100

func batchKeys(base, ns string) []string {
	keys := make([]string, batchSize)
	for i := range keys {
		keys[i] = base + ns + ":" + strconv.Itoa(i)
	}
	return keys
}

func BenchmarkFetchManyHit(b *testing.B) {
	c, _, base := benchClients(b)
	ctx := context.Background()
	keys := batchKeys(base, "user")
	load := profilesLoader
	_, err := cache.FetchMany(ctx, c, keys, load)
	require.NoError(b, err)
	b.ReportAllocs()
	for b.Loop() {
		if m, err := cache.FetchMany(ctx, c, keys, load); err != nil || len(m) != batchSize {
			b.Fatal(len(m), err)
		}
	}
}

func BenchmarkRawMGetJSON(b *testing.B) {
	_, rdb, base := benchClients(b)
	ctx := context.Background()
	keys := batchKeys(base, "raw")
	setRaw(b, rdb, 0, keys...)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := rawMGet(ctx, rdb, keys); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFetchManyHitVsRaw alternates one FetchMany of 100 cached keys
// and one raw MGET + json.Unmarshal of 100 values, and reports their ratio.
func BenchmarkFetchManyHitVsRaw(b *testing.B) {
	c, rdb, base := benchClients(b)
	ctx := context.Background()
	keys, rawKeys := batchKeys(base, "user"), batchKeys(base, "raw")
	load := profilesLoader
	_, err := cache.FetchMany(ctx, c, keys, load)
	require.NoError(b, err)
	setRaw(b, rdb, 0, rawKeys...)
	var fetchNs, rawNs time.Duration
	for b.Loop() {
		t0 := time.Now()
		m, err := cache.FetchMany(ctx, c, keys, load)
		t1 := time.Now()
		if err != nil || len(m) != batchSize {
			b.Fatal(len(m), err)
		}
		_, err = rawMGet(ctx, rdb, rawKeys)
		t2 := time.Now()
		if err != nil {
			b.Fatal(err)
		}
		fetchNs += t1.Sub(t0)
		rawNs += t2.Sub(t1)
	}
	reportVsRaw(b, fetchNs, rawNs)
}

// BenchmarkStampede is one cold key read at once by 4 Cache instances (as
// 4 processes would, each with its own connection pool) x 250 goroutines,
// with a 20ms load from MariaDB. It reports loads per cold key and how much
// later than the load's end the waiters got the value.
func BenchmarkStampede(b *testing.B) {
	f := newFixture(b)
	const procs, goroutines = 4, 250
	caches := make([]*cache.Cache, procs)
	for i := range caches {
		caches[i] = f.cache(&cache.Options{Prefix: f.base + "-gen:"})
	}
	var loads atomic.Int64
	var overs, waits, floors []time.Duration
	round := 0
	pct := func(s []time.Duration, q float64) float64 {
		return float64(s[int(q*float64(len(s)-1))].Microseconds()) / 1000
	}
	for b.Loop() {
		round++
		key := f.key("user", int64(round))
		var loadEnd atomic.Int64
		load := func(ctx context.Context) (user, error) {
			loads.Add(1)
			var u user
			err := f.db.QueryRowContext(ctx, "SELECT id, name FROM users WHERE id = 1 AND SLEEP(0.02) = 0").Scan(&u.ID, &u.Name)
			loadEnd.Store(time.Now().UnixNano())
			return u, err
		}
		done := make([]int64, procs*goroutines)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for p, c := range caches {
			for g := range goroutines {
				wg.Go(func() {
					<-start
					if _, err := cache.Fetch(context.Background(), c, key, load); err != nil {
						b.Error(err)
					}
					done[p*goroutines+g] = time.Now().UnixNano()
				})
			}
		}
		t0 := time.Now()
		close(start)
		wg.Wait()
		end := loadEnd.Load()
		for _, d := range done {
			overs = append(overs, time.Duration(max(d-end, 0)))
			waits = append(waits, time.Duration(d-t0.UnixNano()))
		}
		floors = append(floors, wakeAll(procs*goroutines)...)
	}
	slices.Sort(floors)
	b.ReportMetric(pct(floors, 0.99), "p99-floor-ms")
	slices.Sort(overs)
	slices.Sort(waits)
	b.ReportMetric(float64(loads.Load())/float64(round), "loads/key")
	b.ReportMetric(pct(waits, 0.99), "p99-wait-ms")
	b.ReportMetric(pct(overs, 0.50), "p50-after-load-ms")
	b.ReportMetric(pct(overs, 0.99), "p99-after-load-ms")
}

// wakeAll is the floor of the stampede's "after load" figure on this
// machine: n goroutines blocked on one channel, each noting how long after
// it closed it ran again.
func wakeAll(n int) []time.Duration {
	gate := make(chan struct{})
	after := make([]time.Duration, n)
	var wg sync.WaitGroup
	var opened atomic.Int64
	for i := range n {
		wg.Go(func() {
			<-gate
			after[i] = time.Duration(time.Now().UnixNano() - opened.Load())
		})
	}
	time.Sleep(10 * time.Millisecond) // let them all block
	opened.Store(time.Now().UnixNano())
	close(gate)
	wg.Wait()
	return after
}

func BenchmarkInvalidate100Keys(b *testing.B) {
	c, _, base := benchClients(b)
	ctx := context.Background()
	keys := batchKeys(base, "user")
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Invalidate(ctx, keys...); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRawDel100Keys(b *testing.B) {
	_, rdb, base := benchClients(b)
	ctx := context.Background()
	keys := batchKeys(base, "user")
	b.ReportAllocs()
	for b.Loop() {
		pipe := rdb.Pipeline()
		for _, k := range keys {
			pipe.Del(ctx, k)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHotKey runs 32 goroutines reading one key, through Fetch and as
// raw GET + json.Unmarshal, in the same run: concurrent Fetches of the key
// share GETs (share.go), raw GETs do not.
func BenchmarkHotKey(b *testing.B) {
	c, rdb, base := benchClients(b)
	ctx := context.Background()
	key, rawKey := base+"user:1", base+"raw:1"
	load := profileLoader(1)
	_, err := cache.Fetch(ctx, c, key, load)
	require.NoError(b, err)
	setRaw(b, rdb, 1, rawKey)
	parallelism := max(1, 32/runtime.GOMAXPROCS(0))
	b.Run("cacheaside", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(parallelism)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if p, err := cache.Fetch(ctx, c, key, load); err != nil || p.ID != 1 {
					b.Error(p, err)
					return
				}
			}
		})
	})
	b.Run("raw", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(parallelism)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if p, err := rawGet(ctx, rdb, rawKey); err != nil || p.ID != 1 {
					b.Error(p, err)
					return
				}
			}
		})
	})
}
