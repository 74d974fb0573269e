package bloom_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/bloom"
)

// keyRange yields prefix+i for i in [from, to).
func keyRange(prefix string, from, to int) bloom.Keys {
	return func(yield func(string, error) bool) {
		for i := from; i < to; i++ {
			if !yield(prefix+strconv.Itoa(i), nil) {
				return
			}
		}
	}
}

// absentKey returns a key that f answers "cannot contain" for.
func absentKey(t *testing.T, f *bloom.Filter) string {
	t.Helper()
	for i := range 1000 {
		k := "absent:" + strconv.Itoa(i)
		if !f.MayContain(context.Background(), k) {
			return k
		}
	}
	t.Fatal("no absent key found: the filter answers \"may contain\" to everything")
	return ""
}

func TestFalsePositiveRateAtOneMillion(t *testing.T) {
	ctx := context.Background()
	const n, target = 1_000_000, 0.01
	opts := fastOpts(n)
	opts.Local = true
	var progress []bloom.Progress
	opts.Progress = func(p bloom.Progress) { progress = append(progress, p) }
	opts.ProgressEvery = 250_000
	key := env.Prefix(t) + "bloom"
	f, rdb := newFilter(t, key, opts)

	require.NoError(t, f.Warm(ctx, keyRange("user:", 0, n)))
	require.Len(t, progress, 5)
	assert.Equal(t, bloom.Progress{Version: progress[4].Version, Keys: n, Done: true}, progress[4])
	assert.Equal(t, int64(250_000), progress[0].Keys)
	size, err := rdb.StrLen(ctx, f.BitmapKey(progress[4].Version)).Result()
	require.NoError(t, err)
	t.Logf("m=%d k=%d: %d bytes in Redis, %.2f bytes per key", f.Params().M, f.Params().K, size, float64(size)/n)

	runLocal(t, f)
	before := f.Stats()
	falseNeg := 0
	for i := range n {
		if !f.MayContain(ctx, "user:"+strconv.Itoa(i)) {
			falseNeg++
		}
	}
	assert.Zero(t, falseNeg, "false negatives among the %d keys added", n)
	falsePos := 0
	for i := n; i < 2*n; i++ {
		if f.MayContain(ctx, "user:"+strconv.Itoa(i)) {
			falsePos++
		}
	}
	rate := float64(falsePos) / n
	t.Logf("false-positive rate %.5f at %d keys (target %.3f, %.2fx)", rate, n, target, rate/target)
	assert.LessOrEqual(t, rate, 1.2*target)
	assert.Greater(t, rate, target/2, "suspiciously few false positives: is the filter measuring anything?")
	assert.Equal(t, uint64(2*n), f.Stats().Local-before.Local, "every lookup was answered by the local copy")

	// The Redis path answers exactly as the local copy: same bits, same order.
	remote := bloom.New(env.RedisClient(t), key, opts)
	var wg sync.WaitGroup
	var disagree, remoteNeg atomic.Int64
	for g := range 8 {
		wg.Go(func() {
			for i := g; i < 4000; i += 8 {
				member := "user:" + strconv.Itoa(i*97)
				if !remote.MayContain(ctx, member) {
					remoteNeg.Add(1)
				}
				absent := "user:" + strconv.Itoa(n+i*31)
				if remote.MayContain(ctx, absent) != f.MayContain(ctx, absent) {
					disagree.Add(1)
				}
			}
		})
	}
	wg.Wait()
	assert.Zero(t, remoteNeg.Load(), "false negatives through Redis")
	assert.Zero(t, disagree.Load(), "Redis and local copy disagree")
	assert.Zero(t, remote.Stats().FailOpen)
}

func TestNotWarmFailsOpen(t *testing.T) {
	ctx := context.Background()
	f, _ := newFilter(t, env.Prefix(t)+"bloom", fastOpts(1000))
	assert.True(t, f.MayContain(ctx, "user:1"))
	assert.ErrorIs(t, f.Check(ctx), bloom.ErrNotWarm)
	assert.NoError(t, f.Add(ctx, "user:1"), "nothing to add to before the filter is warmed")
	s := f.Stats()
	assert.Equal(t, uint64(1), s.FailOpen)
	assert.Zero(t, s.Absent)
	assert.Zero(t, s.Version)
}

func TestInvalidOptions(t *testing.T) {
	ctx := context.Background()
	f, _ := newFilter(t, env.Prefix(t)+"bloom", &bloom.Options{FalsePositiveRate: 1.5})
	err := f.Check(ctx)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "FalsePositiveRate")
	assert.Error(t, f.Add(ctx, "k"))
	assert.Error(t, f.Warm(ctx, keyRange("k", 0, 1)))
	assert.True(t, f.MayContain(ctx, "k"))
}

func TestFilterKeyDeletedMidRun(t *testing.T) {
	ctx := context.Background()
	key := env.Prefix(t) + "bloom"
	f, local, rdb := newLocalPair(t, key, 1000)
	require.NoError(t, f.Warm(ctx, keyRange("user:", 0, 500)))
	absent := absentKey(t, f)
	require.Eventually(t, func() bool { return !local.MayContain(ctx, absent) && local.Stats().Local > 0 },
		5*time.Second, time.Millisecond, "local copy never loaded")

	// The bitmap goes: both answer "may contain".
	require.NoError(t, rdb.Del(ctx, f.BitmapKey(f.Stats().Version)).Err())
	failOpen := f.Stats().FailOpen
	assert.True(t, f.MayContain(ctx, absent))
	assert.Greater(t, f.Stats().FailOpen, failOpen)
	// An Add finds the bitmap missing and tells the local copies.
	require.NoError(t, f.Add(ctx, "user:new"))
	assert.True(t, f.MayContain(ctx, "user:new"))
	require.Eventually(t, func() bool { return local.MayContain(ctx, absent) }, 5*time.Second, time.Millisecond)
	assert.True(t, local.MayContain(ctx, "user:new"))
	assert.Zero(t, rdb.Exists(ctx, f.BitmapKey(f.Stats().Version)).Val(), "Add must not recreate a deleted bitmap")

	// Warm again, then the parameters hash goes.
	require.NoError(t, f.Delete(ctx))
	require.NoError(t, f.Warm(ctx, keyRange("user:", 0, 500)))
	absent = absentKey(t, f)
	require.Eventually(t, func() bool { return !local.MayContain(ctx, absent) }, 5*time.Second, time.Millisecond)
	require.NoError(t, rdb.Del(ctx, key).Err())
	require.Eventually(t, func() bool { return f.MayContain(ctx, absent) && local.MayContain(ctx, absent) },
		5*time.Second, time.Millisecond, "a filter whose parameters are gone must fail open")
	assert.ErrorIs(t, f.Check(ctx), bloom.ErrNotWarm)
}

func TestParameterMismatch(t *testing.T) {
	ctx := context.Background()
	key := env.Prefix(t) + "bloom"
	f1, rdb := newFilter(t, key, fastOpts(1000))
	f2, _ := newFilter(t, key, fastOpts(5000))
	require.NoError(t, f1.Warm(ctx, keyRange("user:", 0, 500)))
	require.NoError(t, f1.Check(ctx))
	absent := absentKey(t, f1)

	err := f2.Check(ctx)
	require.ErrorIs(t, err, bloom.ErrMismatch)
	var mm *bloom.MismatchError
	require.ErrorAs(t, err, &mm)
	assert.Equal(t, f1.Params(), mm.Stored)
	assert.Equal(t, f2.Params(), mm.Configured)
	assert.Contains(t, err.Error(), "ExpectedItems")
	assert.True(t, f2.MayContain(ctx, absent), "a mismatched instance fails open")
	// It still adds with the stored parameters, so the others see its keys.
	require.NoError(t, f2.Add(ctx, "user:from-f2"))
	assert.True(t, f1.MayContain(ctx, "user:from-f2"))

	// A hash version this package does not know: no bits can be computed.
	v := f1.Stats().Version
	p := f1.Params()
	require.NoError(t, rdb.HSet(ctx, key, "cur", strconv.FormatUint(v, 10)+":"+strconv.FormatUint(p.M, 10)+":"+strconv.FormatUint(p.K, 10)+":99").Err())
	require.ErrorIs(t, f1.Check(ctx), bloom.ErrMismatch)
	assert.True(t, f1.MayContain(ctx, absent))
	assert.ErrorIs(t, f1.Add(ctx, "user:x"), bloom.ErrMismatch)

	// A storage format this package does not know.
	require.NoError(t, rdb.HSet(ctx, key, "format", "9").Err())
	err = f1.Check(ctx)
	require.ErrorAs(t, err, &mm)
	assert.Equal(t, "9", mm.Format)
	assert.ErrorIs(t, f1.Add(ctx, "user:y"), bloom.ErrMismatch)
	assert.ErrorIs(t, f1.Rebuild(ctx, keyRange("user:", 0, 10)), bloom.ErrMismatch)
	assert.True(t, f1.MayContain(ctx, absent))
}

func TestRebuildWithNewOptionsIsDetected(t *testing.T) {
	ctx := context.Background()
	key := env.Prefix(t) + "bloom"
	small, _ := newFilter(t, key, fastOpts(1000))
	big, _ := newFilter(t, key, fastOpts(20_000))
	require.NoError(t, small.Warm(ctx, keyRange("user:", 0, 1000)))
	require.ErrorIs(t, big.Check(ctx), bloom.ErrMismatch)
	require.NoError(t, big.Rebuild(ctx, keyRange("user:", 0, 1000)))
	require.NoError(t, big.Check(ctx))
	require.ErrorIs(t, small.Check(ctx), bloom.ErrMismatch)
	assert.True(t, small.MayContain(ctx, absentKey(t, big)))
}

func TestRedisStoppedFailsOpen(t *testing.T) {
	_, srv := env.Faults(t)
	ctx := context.Background()
	key := env.Prefix(t) + "bloom"
	fast := &redis.Options{MaxRetries: -1, DialTimeout: 300 * time.Millisecond, ReadTimeout: 300 * time.Millisecond}
	rdb := env.NewRedis(fast)
	t.Cleanup(func() { rdb.Close() })
	f := bloom.New(rdb, key, fastOpts(1000))
	t.Cleanup(func() { _ = f.Delete(context.Background()) })
	opts := fastOpts(1000)
	opts.Local = true
	lrdb := env.NewRedis(fast)
	t.Cleanup(func() { lrdb.Close() })
	local := bloom.New(lrdb, key, opts)
	runLocal(t, local)

	require.NoError(t, f.Warm(ctx, keyRange("user:", 0, 500)))
	absent := absentKey(t, f)
	require.Eventually(t, func() bool { return !local.MayContain(ctx, absent) }, 5*time.Second, time.Millisecond)

	require.NoError(t, srv.Stop())
	t.Cleanup(func() { _ = srv.Start() })
	assert.True(t, f.MayContain(ctx, absent))
	assert.Error(t, f.Add(ctx, "user:during-outage"))
	assert.Error(t, f.Check(ctx))
	require.Eventually(t, func() bool { return !local.Stats().Live }, 10*time.Second, time.Millisecond,
		"the local copy must stop answering when it can no longer receive adds")
	assert.True(t, local.MayContain(ctx, absent))

	require.NoError(t, srv.Start())
	// The script cache is empty after a restart: lookups and adds load it again.
	require.Eventually(t, func() bool { return !f.MayContain(ctx, absent) }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, f.Add(ctx, "user:after-outage"))
	assert.True(t, f.MayContain(ctx, "user:after-outage"))
	require.Eventually(t, func() bool { return local.Stats().Live }, 20*time.Second, 10*time.Millisecond)
	assert.True(t, local.MayContain(ctx, "user:after-outage"))
	assert.False(t, local.MayContain(ctx, absent))
}

// TestNoFalseNegativesAcrossInstances hunts for false negatives: two
// instances add keys while readers on both look up every key whose Add has
// returned.
func TestNoFalseNegativesAcrossInstances(t *testing.T) {
	ctx := context.Background()
	key := env.Prefix(t) + "bloom"
	fs := make([]*bloom.Filter, 2)
	for i := range fs {
		fs[i], _ = newFilter(t, key, fastOpts(50_000))
	}
	require.NoError(t, fs[0].Warm(ctx, keyRange("warm:", 0, 10_000)))

	const perWriter = 1500
	var latest [2]atomic.Int64 // highest i whose Add returned, per writer
	for i := range latest {
		latest[i].Store(-1)
	}
	var writers, readers sync.WaitGroup
	stop := make(chan struct{})
	var errs, checks, falseNeg atomic.Int64
	for w := range 2 {
		writers.Go(func() {
			for i := range perWriter {
				if err := fs[w].Add(ctx, "w"+strconv.Itoa(w)+":"+strconv.Itoa(i)); err != nil {
					errs.Add(1)
					return
				}
				latest[w].Store(int64(i))
			}
		})
	}
	for r := range 4 {
		readers.Go(func() {
			f := fs[r%2]
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				default:
				}
				w := (r + j) % 2
				hi := latest[w].Load()
				if hi < 0 {
					continue
				}
				// The newest key and an older one.
				for _, i := range []int64{hi, int64(j) % (hi + 1)} {
					checks.Add(1)
					if !f.MayContain(ctx, "w"+strconv.Itoa(w)+":"+strconv.FormatInt(i, 10)) {
						falseNeg.Add(1)
					}
				}
				checks.Add(1)
				if !f.MayContain(ctx, "warm:"+strconv.Itoa(j%10_000)) {
					falseNeg.Add(1)
				}
			}
		})
	}
	writers.Wait()
	close(stop)
	readers.Wait()
	require.Zero(t, errs.Load())
	assert.Zero(t, falseNeg.Load(), "false negatives in %d lookups", checks.Load())
	assert.Greater(t, checks.Load(), int64(1000))
	for w := range 2 {
		for i := range perWriter {
			assert.True(t, fs[1-w].MayContain(ctx, "w"+strconv.Itoa(w)+":"+strconv.Itoa(i)))
		}
	}
	for _, f := range fs {
		assert.Zero(t, f.Stats().FailOpen)
	}
}

func TestRunNeedsLocal(t *testing.T) {
	f, _ := newFilter(t, env.Prefix(t)+"bloom", fastOpts(1000))
	assert.True(t, errors.Is(f.Run(context.Background()), bloom.ErrNoLocal))
}

// TestClusterKeyNeedsHashTag: on a Redis Cluster the scripts touch the
// hash, the bitmaps and the channel at once, so they must share a slot.
func TestClusterKeyNeedsHashTag(t *testing.T) {
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{env.RedisAddr()}})
	t.Cleanup(func() { cc.Close() })
	f := bloom.New(cc, "users:bloom", nil)
	err := f.Add(context.Background(), "user:1")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "hash tag")
	assert.True(t, f.MayContain(context.Background(), "user:1"), "a misconfigured filter fails open")
	assert.NotContains(t, fmt.Sprint(bloom.New(cc, "{users}:bloom", nil).Check(context.Background())), "hash tag")
}
