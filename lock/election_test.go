package lock_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/lock"
)

// electionGoroutines counts the goroutines that run code of an Election.
func electionGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "cacheaside/lock.(*Election)") {
			n++
		}
	}
	return n
}

// recv receives from ch, failing the test instead of hanging after 20s.
func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(20 * time.Second):
		t.Fatalf("nothing received within 20s")
		panic("unreachable")
	}
}

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// term is one leadership as runTerms reports its end.
type term struct {
	epoch uint64
	cause error // why fn's context ended
}

// runTerms runs e in a goroutine until ctx ends, with an fn that sends its
// epoch on started, waits for its context to end, sends the term on ended and
// returns ret. Run's result goes to runDone.
func runTerms(ctx context.Context, e *lock.Election, ret error) (started <-chan uint64, ended <-chan term, runDone <-chan error) {
	s, en, d := make(chan uint64, 2), make(chan term, 2), make(chan error, 1)
	go func() {
		d <- e.Run(ctx, func(ctx context.Context, epoch uint64) error {
			s <- epoch
			<-ctx.Done()
			en <- term{epoch, context.Cause(ctx)}
			return ret
		})
	}()
	return s, en, d
}

func TestElectionFnResultEndsRun(t *testing.T) {
	ctx := context.Background()
	rdb := env.RedisClient(t)
	key := env.Prefix(t) + "election"
	e := lock.NewElection(rdb, key, &lock.ElectionOptions{TTL: time.Second})

	var epochs []uint64
	for range 3 {
		err := e.Run(ctx, func(ctx context.Context, epoch uint64) error {
			epochs = append(epochs, epoch)
			return nil
		})
		require.NoError(t, err, "fn returned nil while leader")
		assert.Zero(t, rdb.Exists(ctx, key).Val(), "the lock is released when Run returns")
	}
	assert.Equal(t, []uint64{1, 2, 3}, epochs, "the epoch grows with every leadership")
	assert.Equal(t, "3", rdb.Get(ctx, key+":epoch").Val())

	boom := errors.New("boom")
	err := e.Run(ctx, func(ctx context.Context, epoch uint64) error { return boom })
	assert.ErrorIs(t, err, boom, "fn's error while leader is fatal")
	assert.Zero(t, rdb.Exists(ctx, key).Val(), "the lock is released after a fatal error")
	assert.Zero(t, electionGoroutines())
}

func TestElectionCancel(t *testing.T) {
	rdb := env.RedisClient(t)
	key := env.Prefix(t) + "election"
	e := lock.NewElection(rdb, key, &lock.ElectionOptions{TTL: time.Second})

	ctx, cancel := context.WithCancel(context.Background())
	leading := make(chan struct{})
	fnDone := make(chan struct{})
	runDone := make(chan error, 1)
	go func() {
		runDone <- e.Run(ctx, func(ctx context.Context, epoch uint64) error {
			defer close(fnDone)
			close(leading)
			<-ctx.Done()
			return ctx.Err()
		})
	}()
	recv(t, leading)
	// Several refreshes pass while fn runs.
	waitFor(t, func() bool { return rdb.PTTL(context.Background(), key).Val() > 900*time.Millisecond })
	cancel()
	assert.NoError(t, recv(t, runDone), "Run returns nil after cancellation")
	select {
	case <-fnDone:
	default:
		t.Fatal("Run returned before fn")
	}
	assert.Zero(t, rdb.Exists(context.Background(), key).Val(), "the lock is released on a cancelled context")
	assert.Zero(t, electionGoroutines(), "no goroutine left behind")

	// A Run on a context that has already ended does nothing.
	assert.NoError(t, e.Run(ctx, func(context.Context, uint64) error {
		t.Error("fn ran on a cancelled context")
		return nil
	}))
}

func TestElectionRefreshes(t *testing.T) {
	rdb := env.RedisClient(t)
	key := env.Prefix(t) + "election"
	const ttl = 500 * time.Millisecond
	e := lock.NewElection(rdb, key, &lock.ElectionOptions{TTL: ttl})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	leading := make(chan string, 1)
	runDone := make(chan error, 1)
	go func() {
		runDone <- e.Run(ctx, func(ctx context.Context, epoch uint64) error {
			leading <- rdb.Get(ctx, key).Val()
			<-ctx.Done()
			return nil
		})
	}()
	token := recv(t, leading)
	// Three TTLs later the same token still holds the key: the leader
	// refreshed it, and never lost leadership (fn would have run again).
	deadline := time.Now().Add(3 * ttl)
	for time.Now().Before(deadline) {
		require.Equal(t, token, rdb.Get(ctx, key).Val())
		time.Sleep(ttl / 10)
	}
	assert.Empty(t, leading)
	cancel()
	assert.NoError(t, recv(t, runDone))
}

func TestElectionLostLockCampaignsAgain(t *testing.T) {
	rdb := env.RedisClient(t)
	key := env.Prefix(t) + "election"
	logs := &syncBuffer{}
	e := lock.NewElection(rdb, key, &lock.ElectionOptions{
		TTL:    time.Second,
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	started, ended, runDone := runTerms(ctx, e, errors.New("fn failed because its context ended"))
	first := recv(t, started)
	// Someone else takes the key, as after an expiry that the leader missed.
	require.NoError(t, rdb.Set(context.Background(), key, "intruder", 500*time.Millisecond).Err())
	lost := recv(t, ended)
	assert.Equal(t, first, lost.epoch)
	assert.ErrorIs(t, lost.cause, lock.ErrNotHeld, "the cause tells fn why")
	second := recv(t, started)
	assert.Greater(t, second, first, "the next leadership has a higher epoch")
	assert.Contains(t, logs.String(), "leadership lost")
	cancel()
	assert.NoError(t, recv(t, runDone), "an error caused by the lost leadership is not fatal")
	assert.Zero(t, electionGoroutines())
}

func TestElectionOneLeaderAtATime(t *testing.T) {
	const candidates = 4
	rdb := env.RedisClient(t)
	key := env.Prefix(t) + "election"
	ctx := context.Background()

	var inside, violations atomic.Int32
	var mu sync.Mutex
	var epochs []uint64
	var wg sync.WaitGroup
	for range candidates {
		e := lock.NewElection(rdb, key, &lock.ElectionOptions{TTL: 500 * time.Millisecond})
		wg.Go(func() {
			// Each candidate leads once, briefly, and then its Run returns.
			err := e.Run(ctx, func(ctx context.Context, epoch uint64) error {
				if inside.Add(1) != 1 {
					violations.Add(1)
				}
				defer inside.Add(-1)
				mu.Lock()
				epochs = append(epochs, epoch)
				mu.Unlock()
				time.Sleep(20 * time.Millisecond)
				return nil
			})
			assert.NoError(t, err)
		})
	}
	wg.Wait()
	assert.Zero(t, violations.Load(), "two candidates led at once")
	require.Len(t, epochs, candidates)
	for i := 1; i < len(epochs); i++ {
		assert.Greater(t, epochs[i], epochs[i-1], "epochs follow the order of the leaderships: %v", epochs)
	}
}

func TestElectionRedisDown(t *testing.T) {
	_, srv := env.Faults(t)
	t.Cleanup(func() { _ = srv.Start() }) // a failed test leaves Redis running for the next
	rdb := env.RedisClient(t)
	key := env.Prefix(t) + "election"
	const ttl = time.Second
	logs := &syncBuffer{}
	e := lock.NewElection(rdb, key, &lock.ElectionOptions{TTL: ttl, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	started, ended, runDone := runTerms(ctx, e, nil)
	first := recv(t, started)
	stopped := time.Now()
	require.NoError(t, srv.Stop())
	cause := recv(t, ended).cause
	stepDown := time.Since(stopped)
	assert.ErrorIs(t, cause, lock.ErrNotHeld)
	assert.ErrorContains(t, cause, "no refresh confirmed")
	require.NoError(t, srv.Start())
	second := recv(t, started)
	assert.Greater(t, second, first, "the epoch survives a clean restart and grows")
	cancel()
	assert.NoError(t, recv(t, runDone))
	assert.Contains(t, logs.String(), "leadership lost")
	assert.Zero(t, electionGoroutines())
	t.Logf("TTL %v: the leader stepped down %v after Redis stopped", ttl, stepDown)
}

func TestElectionConfig(t *testing.T) {
	rdb := env.RedisClient(t)
	fn := func(context.Context, uint64) error { return nil }
	for _, tc := range []struct {
		name string
		e    *lock.Election
		want string
	}{
		{"nil client", lock.NewElection(nil, "k", nil), "Redis client"},
		{"empty key", lock.NewElection(rdb, "", nil), "key"},
		{"short ttl", lock.NewElection(rdb, "k", &lock.ElectionOptions{TTL: time.Millisecond}), "ElectionOptions.TTL"},
		{"negative ttl", lock.NewElection(rdb, "k", &lock.ElectionOptions{TTL: -time.Second}), "ElectionOptions.TTL"},
		{"slow refresh", lock.NewElection(rdb, "k", &lock.ElectionOptions{TTL: time.Second, RefreshEvery: time.Second}), "ElectionOptions.RefreshEvery"},
		{"negative refresh", lock.NewElection(rdb, "k", &lock.ElectionOptions{RefreshEvery: -1}), "ElectionOptions.RefreshEvery"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.ErrorContains(t, tc.e.Run(context.Background(), fn), tc.want)
		})
	}
	assert.ErrorContains(t, lock.NewElection(rdb, "k", nil).Run(context.Background(), nil), "func")
}

// A leader that returns ErrStepDown gives up its lock without ending Run:
// a standby takes over, and the one that stepped down campaigns again.
func TestElectionStepDown(t *testing.T) {
	rdb := env.RedisClient(t)
	key := env.Prefix(t) + "election"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type lead struct {
		who   string
		epoch uint64
		token string
	}
	leads := make(chan lead, 4)
	stepDown := make(chan struct{}, 1)
	stepDown <- struct{}{} // the first leader steps down once
	run := func(who string) <-chan error {
		done := make(chan error, 1)
		e := lock.NewElection(rdb, key, &lock.ElectionOptions{TTL: time.Second})
		go func() {
			done <- e.Run(ctx, func(ctx context.Context, epoch uint64) error {
				l, ok := lock.FromContext(ctx)
				if !ok {
					return errors.New("no lock in fn's context")
				}
				leads <- lead{who, epoch, l.Token()}
				select {
				case <-stepDown:
					return fmt.Errorf("store refused: %w", lock.ErrStepDown)
				case <-ctx.Done():
					return nil
				}
			})
		}()
		return done
	}
	aDone := run("a")
	first := recv(t, leads)
	assert.Equal(t, first.token, rdb.Get(ctx, key).Val(), "FromContext gives the held lock")
	bDone := run("b")
	second := recv(t, leads)
	assert.Greater(t, second.epoch, first.epoch, "a new leadership after the step-down")
	assert.NotEqual(t, first.token, second.token)
	cancel()
	assert.NoError(t, recv(t, aDone), "a step-down does not end Run")
	assert.NoError(t, recv(t, bDone))
}
