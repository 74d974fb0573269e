package lock_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/internal/testenv"
	"github.com/cacheaside/cacheaside/lock"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	testenv.Main(m, &env, testenv.Children{
		"mutex": mutexChild,
		"elect": electChild,
	})
}

// The package's narrow client interface takes every go-redis client.
var (
	_ lock.Client = (*redis.Client)(nil)
	_ lock.Client = (*redis.ClusterClient)(nil)
	_ lock.Client = (*redis.Ring)(nil)
	_ lock.Client = redis.UniversalClient(nil)
)

func TestObtainRefreshRelease(t *testing.T) {
	ctx := context.Background()
	rdb := env.RedisClient(t)
	key := env.Prefix(t) + "lock"

	l, err := lock.Obtain(ctx, rdb, key, 10*time.Second, nil)
	require.NoError(t, err)
	assert.Equal(t, key, l.Key())
	assert.Len(t, l.Token(), 32, "128 bits, hex")
	assert.Equal(t, l.Token(), rdb.Get(ctx, key).Val(), "the key holds the token")
	pttl := rdb.PTTL(ctx, key).Val()
	assert.True(t, pttl > 9*time.Second && pttl <= 10*time.Second, "PX ttl, got %v", pttl)

	_, err = lock.TryObtain(ctx, rdb, key, time.Second)
	assert.ErrorIs(t, err, lock.ErrNotObtained, "a held lock is not obtained twice")

	require.NoError(t, l.Refresh(ctx, 20*time.Second))
	left, err := l.TTL(ctx)
	require.NoError(t, err)
	assert.True(t, left > 19*time.Second && left <= 20*time.Second, "refreshed ttl, got %v", left)

	require.NoError(t, l.Release(ctx))
	assert.Zero(t, rdb.Exists(ctx, key).Val(), "release deletes the key")
	assert.ErrorIs(t, l.Release(ctx), lock.ErrNotHeld, "a second release")
	_, err = l.TTL(ctx)
	assert.ErrorIs(t, err, lock.ErrNotHeld)

	l2, err := lock.TryObtain(ctx, rdb, key, time.Second)
	require.NoError(t, err, "a released lock is free")
	assert.NotEqual(t, l.Token(), l2.Token(), "every lock has its own token")
	require.NoError(t, l2.Release(ctx))
}

func TestTTLIsMilliseconds(t *testing.T) {
	ctx := context.Background()
	rdb := env.RedisClient(t)
	key := env.Prefix(t) + "lock"

	l, err := lock.TryObtain(ctx, rdb, key, 1500*time.Millisecond)
	require.NoError(t, err)
	pttl := rdb.PTTL(ctx, key).Val()
	assert.True(t, pttl > time.Second && pttl <= 1500*time.Millisecond, "got %v", pttl)

	_, err = lock.TryObtain(ctx, rdb, key+"2", 500*time.Microsecond)
	assert.ErrorContains(t, err, "shorter than 1ms")
	assert.ErrorContains(t, l.Refresh(ctx, 0), "shorter than 1ms")
}

func TestExpiry(t *testing.T) {
	ctx := context.Background()
	rdb := env.RedisClient(t)
	key := env.Prefix(t) + "lock"

	old, err := lock.TryObtain(ctx, rdb, key, 50*time.Millisecond)
	require.NoError(t, err)
	waitExpired(t, old)

	assert.ErrorIs(t, old.Refresh(ctx, time.Minute), lock.ErrNotHeld, "an expired lock is not revived")
	assert.Zero(t, rdb.Exists(ctx, key).Val(), "a failed refresh creates nothing")
	_, err = old.TTL(ctx)
	assert.ErrorIs(t, err, lock.ErrNotHeld)

	next, err := lock.TryObtain(ctx, rdb, key, time.Minute)
	require.NoError(t, err, "an expired lock is free")

	// The old holder can neither extend nor release the new holder's lock.
	assert.ErrorIs(t, old.Refresh(ctx, time.Millisecond), lock.ErrNotHeld)
	assert.ErrorIs(t, old.Release(ctx), lock.ErrNotHeld)
	assert.Equal(t, next.Token(), rdb.Get(ctx, key).Val(), "the new holder keeps its lock")
	left, err := next.TTL(ctx)
	require.NoError(t, err)
	assert.Greater(t, left, 50*time.Second, "the old holder's refresh did not shorten it")
	require.NoError(t, next.Release(ctx))
}

// waitExpired polls until the lock's key has expired.
func waitExpired(t *testing.T, l *lock.Lock) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := l.TTL(context.Background())
		if errors.Is(err, lock.ErrNotHeld) {
			return
		}
		require.NoError(t, err)
		require.True(t, time.Now().Before(deadline), "the lock did not expire")
		time.Sleep(10 * time.Millisecond)
	}
}

func TestReleaseOfAnotherHoldersLockIsRefused(t *testing.T) {
	ctx := context.Background()
	rdb := env.RedisClient(t)
	key := env.Prefix(t) + "lock"

	a, err := lock.TryObtain(ctx, rdb, key, time.Minute)
	require.NoError(t, err)
	// Another holder's token replaces a's, as after a's lock expired and
	// someone else took it.
	require.NoError(t, rdb.Set(ctx, key, "someone-else", 30*time.Second).Err())

	assert.ErrorIs(t, a.Release(ctx), lock.ErrNotHeld)
	assert.ErrorIs(t, a.Refresh(ctx, time.Hour), lock.ErrNotHeld)
	_, err = a.TTL(ctx)
	assert.ErrorIs(t, err, lock.ErrNotHeld)
	assert.Equal(t, "someone-else", rdb.Get(ctx, key).Val(), "another holder's key is left alone")
	assert.LessOrEqual(t, rdb.TTL(ctx, key).Val(), 30*time.Second, "and its ttl too")
}

func TestObtainWithOwnTokenIsIdempotent(t *testing.T) {
	ctx := context.Background()
	rdb := env.RedisClient(t)
	key := env.Prefix(t) + "lock"
	opts := &lock.Options{Token: "worker-7", Retry: lock.NoRetry()}

	first, err := lock.Obtain(ctx, rdb, key, time.Second, opts)
	require.NoError(t, err)
	second, err := lock.Obtain(ctx, rdb, key, time.Minute, opts)
	require.NoError(t, err, "the token that holds the key obtains again (a retried SET)")
	assert.Greater(t, rdb.PTTL(ctx, key).Val(), 50*time.Second, "and resets the ttl")
	_, err = lock.Obtain(ctx, rdb, key, time.Minute, &lock.Options{Token: "worker-8", Retry: lock.NoRetry()})
	assert.ErrorIs(t, err, lock.ErrNotObtained, "another token does not")
	require.NoError(t, second.Release(ctx))
	assert.ErrorIs(t, first.Release(ctx), lock.ErrNotHeld, "both values name the same lock")
}

func TestObtainWaitsForRelease(t *testing.T) {
	ctx := context.Background()
	rdb := env.RedisClient(t)
	key := env.Prefix(t) + "lock"

	held, err := lock.TryObtain(ctx, rdb, key, time.Minute)
	require.NoError(t, err)

	tried := make(chan struct{})
	got := make(chan error, 1)
	go func() {
		// A retry strategy that reports each wait lets the test release the
		// lock once the waiter has failed at least once.
		var once sync.Once
		l, err := lock.Obtain(ctx, rdb, key, time.Minute, &lock.Options{
			Retry: notify{lock.Backoff{Min: time.Millisecond, Max: 20 * time.Millisecond}, func() { once.Do(func() { close(tried) }) }},
		})
		if err == nil {
			err = l.Release(ctx)
		}
		got <- err
	}()
	select {
	case <-tried:
	case err := <-got:
		t.Fatalf("Obtain returned %v while the lock was held", err)
	}
	require.NoError(t, held.Release(ctx))
	assert.NoError(t, recv(t, got), "the waiter obtains the released lock")
}

// notify is a RetryStrategy that calls f before each wait.
type notify struct {
	lock.RetryStrategy
	f func()
}

func (n notify) Waits() func() (time.Duration, bool) {
	next := n.RetryStrategy.Waits()
	return func() (time.Duration, bool) { n.f(); return next() }
}

func TestObtainWaitIsBounded(t *testing.T) {
	ctx := context.Background()
	rdb := env.RedisClient(t)
	key := env.Prefix(t) + "lock"
	held, err := lock.TryObtain(ctx, rdb, key, time.Minute)
	require.NoError(t, err)
	defer held.Release(ctx)

	_, err = lock.Obtain(ctx, rdb, key, time.Minute, &lock.Options{Retry: lock.Backoff{Min: time.Millisecond, Max: 5 * time.Millisecond, Limit: 30 * time.Millisecond}})
	assert.ErrorIs(t, err, lock.ErrNotObtained, "Backoff.Limit bounds the wait")
	_, err = lock.Obtain(ctx, rdb, key, 50*time.Millisecond, nil)
	assert.ErrorIs(t, err, lock.ErrNotObtained, "by default the wait is bounded by the TTL asked for")

	cctx, cancel := context.WithCancelCause(ctx)
	cause := errors.New("caller gave up")
	var attempts atomic.Int32
	_, err = lock.Obtain(cctx, rdb, key, time.Minute, &lock.Options{
		Retry: notify{lock.Backoff{Min: time.Millisecond, Max: 5 * time.Millisecond}, func() {
			if attempts.Add(1) == 3 {
				cancel(cause)
			}
		}},
	})
	assert.ErrorIs(t, err, lock.ErrNotObtained, "the end of ctx ends the wait")
	assert.ErrorIs(t, err, cause, "with ctx's cause")
	assert.Equal(t, int32(3), attempts.Load())

	_, err = lock.Obtain(ctx, rdb, key, time.Minute, &lock.Options{Retry: lock.NoRetry()})
	assert.ErrorIs(t, err, lock.ErrNotObtained)
	assert.Equal(t, held.Token(), rdb.Get(ctx, key).Val())
}

func TestReleaseIgnoresCancellation(t *testing.T) {
	rdb := env.RedisClient(t)
	key := env.Prefix(t) + "lock"
	ctx, cancel := context.WithCancel(context.Background())
	l, err := lock.TryObtain(ctx, rdb, key, time.Minute)
	require.NoError(t, err)
	cancel()
	require.NoError(t, l.Release(ctx), "a cancelled caller still releases")
	assert.Zero(t, rdb.Exists(context.Background(), key).Val())

	expired, stop := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer stop()
	l, err = lock.TryObtain(context.Background(), rdb, key, time.Minute)
	require.NoError(t, err)
	require.NoError(t, l.Release(expired), "so does one past its deadline")
	assert.Zero(t, rdb.Exists(context.Background(), key).Val())
}

// TestMutualExclusionGoroutines has many goroutines contend for one lock.
// Each marks itself inside the critical section with an atomic counter that
// must read 1 on entry; the race detector cannot see the ordering that Redis
// provides, so plain variables would not do.
func TestMutualExclusionGoroutines(t *testing.T) {
	const workers, rounds = 32, 12
	ctx := context.Background()
	rdb := env.NewRedis(&redis.Options{PoolSize: workers})
	t.Cleanup(func() { rdb.Close() })
	key := env.Prefix(t) + "lock"

	var inside, entries, violations atomic.Int32
	start := make(chan struct{})
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			<-start
			for range rounds {
				l, err := lock.Obtain(ctx, rdb, key, 10*time.Second, &lock.Options{
					Retry: lock.Backoff{Min: time.Millisecond, Max: 10 * time.Millisecond, Limit: 30 * time.Second},
				})
				if !assert.NoError(t, err) {
					return
				}
				if inside.Add(1) != 1 {
					violations.Add(1)
				}
				entries.Add(1)
				time.Sleep(100 * time.Microsecond) // widen the window a second holder would hit
				inside.Add(-1)
				assert.NoError(t, l.Release(ctx))
			}
		})
	}
	close(start)
	wg.Wait()
	assert.Zero(t, violations.Load(), "two holders were inside at once")
	assert.Equal(t, int32(workers*rounds), entries.Load())
}

func TestRedisRestartWhileHeld(t *testing.T) {
	_, srv := env.Faults(t)
	t.Cleanup(func() { _ = srv.Start() }) // a failed test leaves Redis running for the next
	ctx := context.Background()
	rdb := env.RedisClient(t)
	key := env.Prefix(t) + "lock"

	// A clean restart (SIGTERM flushes the append-only file) keeps the lock:
	// the holder still holds it, refreshes and releases it; nobody else gets it.
	l, err := lock.TryObtain(ctx, rdb, key, time.Minute)
	require.NoError(t, err)
	require.NoError(t, srv.Restart())
	_, err = lock.TryObtain(ctx, rdb, key, time.Minute)
	assert.ErrorIs(t, err, lock.ErrNotObtained, "the lock survives a clean restart")
	assert.NoError(t, l.Refresh(ctx, time.Minute), "its holder refreshes it (scripts reload after the restart)")

	// While Redis is down, every call fails with a Redis error, never with a
	// verdict about the lock.
	require.NoError(t, srv.Stop())
	_, err = lock.TryObtain(ctx, rdb, key+"-other", time.Minute)
	assert.Error(t, err)
	assert.NotErrorIs(t, err, lock.ErrNotObtained)
	err = l.Refresh(ctx, time.Minute)
	assert.Error(t, err)
	assert.NotErrorIs(t, err, lock.ErrNotHeld)
	require.NoError(t, srv.Start())
	require.NoError(t, l.Release(ctx), "the holder releases once Redis is back")

	// A crash may or may not lose the last second of writes. Either way the
	// holder's view and everyone else's agree: the holder refreshes, or
	// another process obtains, never both.
	l, err = lock.TryObtain(ctx, rdb, key, time.Minute)
	require.NoError(t, err)
	require.NoError(t, srv.Kill())
	require.NoError(t, srv.Start())
	refreshErr := l.Refresh(ctx, time.Minute)
	other, obtainErr := lock.TryObtain(ctx, rdb, key, time.Minute)
	if refreshErr == nil {
		assert.ErrorIs(t, obtainErr, lock.ErrNotObtained, "the holder kept the lock, so nobody else gets it")
		require.NoError(t, l.Release(ctx))
	} else {
		assert.ErrorIs(t, refreshErr, lock.ErrNotHeld, "the crash lost the lock and the holder is told so")
		require.NoError(t, obtainErr, "the lost lock is free")
		require.NoError(t, other.Release(ctx))
	}
	t.Logf("after SIGKILL the lock was kept: %v", refreshErr == nil)

	// A Redis that comes back without its data (a failover to a replica that
	// missed the SET) frees the lock: the holder learns it at its next refresh.
	l, err = lock.TryObtain(ctx, rdb, key, time.Minute)
	require.NoError(t, err)
	require.NoError(t, srv.Stop())
	require.NoError(t, srv.Wipe())
	require.NoError(t, srv.Start())
	assert.ErrorIs(t, l.Refresh(ctx, time.Minute), lock.ErrNotHeld)
	other, err = lock.TryObtain(ctx, rdb, key, time.Minute)
	require.NoError(t, err)
	require.NoError(t, other.Release(ctx))
}
