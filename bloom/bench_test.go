package bloom_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/bloom"
)

// benchKeys is the filter's size in the benchmarks; lookups are of ids that
// do not exist, the case the filter is for.
const benchKeys = 100_000

func absentIDs() []string {
	ids := make([]string, 4096)
	for i := range ids {
		ids[i] = "user:" + strconv.Itoa(benchKeys+i)
	}
	return ids
}

func warmBench(b *testing.B, opts *bloom.Options) *bloom.Filter {
	b.Helper()
	f, _ := newFilter(b, env.Prefix(b)+"bloom", opts)
	require.NoError(b, f.Warm(context.Background(), keyRange("user:", 0, benchKeys)))
	return f
}

// BenchmarkMayContain compares the three ways of answering "does this id
// exist?" for ids that do not: the local copy, the filter in Redis, and a
// cache-style not-found entry (a raw go-redis GET of a small key).
func BenchmarkMayContain(b *testing.B) {
	ctx := context.Background()
	ids := absentIDs()

	b.Run("local", func(b *testing.B) {
		opts := fastOpts(benchKeys)
		opts.Local = true
		opts.ParamsRefresh = time.Minute
		f := warmBench(b, opts)
		runLocal(b, f)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			f.MayContain(ctx, ids[i%len(ids)])
		}
		require.Equal(b, f.Stats().Lookups, f.Stats().Local)
		reportBitmapBytes(b, f)
	})

	b.Run("redis", func(b *testing.B) {
		f := warmBench(b, fastOpts(benchKeys))
		f.MayContain(ctx, ids[0]) // read the parameters
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			f.MayContain(ctx, ids[i%len(ids)])
		}
		require.Zero(b, f.Stats().FailOpen)
		reportBitmapBytes(b, f)
	})

	b.Run("not-found-entry-GET", func(b *testing.B) {
		rdb := env.RedisClient(b)
		p := env.Prefix(b)
		pipe := rdb.Pipeline()
		for _, id := range ids {
			// A not-found entry as a cache stores one: a short header, a TTL.
			pipe.Set(ctx, p+id, "\x01N\x00\x00\x00\x00\x00\x00\x00\x00", time.Hour)
		}
		_, err := pipe.Exec(ctx)
		require.NoError(b, err)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if err := rdb.Get(ctx, p+ids[i%len(ids)]).Err(); err != nil {
				b.Fatal(err)
			}
		}
		size, err := rdb.MemoryUsage(ctx, p+ids[0]).Result()
		require.NoError(b, err)
		b.ReportMetric(float64(size), "bytes/absent-id")
	})
}

// reportBitmapBytes reports the Redis memory of f's bitmap per key it was sized for.
func reportBitmapBytes(b *testing.B, f *bloom.Filter) {
	b.Helper()
	rdb := env.RedisClient(b)
	size, err := rdb.MemoryUsage(context.Background(), f.BitmapKey(f.Stats().Version)).Result()
	require.NoError(b, err)
	b.ReportMetric(float64(size)/benchKeys, "bytes/key")
}

// BenchmarkAdd is one key added per call: one round trip that runs the
// add script (check the listed versions, set the bits, count and publish
// them), with and without a local copy to update, paired with a raw
// go-redis GET in the same run.
func BenchmarkAdd(b *testing.B) {
	ctx := context.Background()
	b.Run("redis", func(b *testing.B) {
		f := warmBench(b, fastOpts(benchKeys))
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if err := f.Add(ctx, "new:"+strconv.Itoa(i)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("local", func(b *testing.B) {
		opts := fastOpts(benchKeys)
		opts.Local = true
		opts.ParamsRefresh = time.Minute
		f := warmBench(b, opts)
		runLocal(b, f)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if err := f.Add(ctx, "new:"+strconv.Itoa(i)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("raw-GET", func(b *testing.B) {
		rdb := env.RedisClient(b)
		k := env.Prefix(b) + "k"
		require.NoError(b, rdb.Set(ctx, k, "\x01N\x00\x00\x00\x00\x00\x00\x00\x00", time.Hour).Err())
		b.ReportAllocs()
		for b.Loop() {
			if err := rdb.Get(ctx, k).Err(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkWarm is a build of 100,000 keys (read into a local filter, one
// pipeline to merge it into Redis, one script to swap it in) and a Delete.
func BenchmarkWarm(b *testing.B) {
	ctx := context.Background()
	rdb := env.RedisClient(b)
	p := env.Prefix(b)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		f := bloom.New(rdb, p+strconv.Itoa(i), fastOpts(benchKeys))
		if err := f.Warm(ctx, keyRange("user:", 0, benchKeys)); err != nil {
			b.Fatal(err)
		}
		if err := f.Delete(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/benchKeys, "ns/key")
}
