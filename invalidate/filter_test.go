package invalidate_test

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/binlog"
	"github.com/cacheaside/cacheaside/bloom"
	"github.com/cacheaside/cacheaside/invalidate"
)

// TestFilterErrorDoesNotBlockInvalidation: the filter in Redis was stored
// by a version of bloom with a hash this one cannot compute, so every Add
// fails with a *bloom.MismatchError. Retrying cannot cure that; the
// invalidator must delete the filter (which then answers "may contain")
// and go on invalidating, not retry the batch for ever.
func TestFilterErrorDoesNotBlockInvalidation(t *testing.T) {
	ctx := context.Background()
	rdb := env.RedisClient(t)
	key := env.Prefix(t) + "bloom"
	filter := bloom.New(rdb, key, &bloom.Options{ExpectedItems: 1000})
	require.NoError(t, filter.Warm(ctx, bloom.FromSeq(func(yield func(string) bool) {})))
	p := filter.Params()
	spec := strconv.FormatUint(filter.Stats().Version, 10) + ":" + strconv.FormatUint(p.M, 10) + ":" + strconv.FormatUint(p.K, 10) + ":99"
	require.NoError(t, rdb.HSet(ctx, key, "cur", spec).Err())
	require.ErrorIs(t, filter.Add(ctx, "probe"), bloom.ErrMismatch)

	s := newStack(t, stackOptions{inv: &invalidate.Options{Filter: filter, RetryMax: 20 * time.Millisecond}})
	_, err := s.db.Exec("INSERT INTO users (id, email, name) VALUES (1, 'ann@example.com', 'Ann')")
	require.NoError(t, err)
	assert.Eventually(t, func() bool { return s.applied.count(userKey(s.prefix, 1)) > 0 }, 10*time.Second, time.Millisecond,
		"the insert's invalidation never happened: the filter's error holds it back")
	assert.Equal(t, uint64(1), s.inv.Stats().FilterResets)
	assert.ErrorIs(t, filter.Check(ctx), bloom.ErrNotWarm, "the filter must be deleted, to fail open")
	assert.True(t, filter.MayContain(ctx, userKey(s.prefix, 1)))
}

// gatedFilter holds the invalidator's Adds while held is set, until
// release is closed.
type gatedFilter struct {
	*bloom.Filter
	held    atomic.Bool
	release chan struct{}
}

func (g *gatedFilter) Add(ctx context.Context, keys ...string) error {
	if g.held.Load() {
		select {
		case <-g.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return g.Filter.Add(ctx, keys...)
}

// TestRebuildWaitsForInvalidator: a writer adds a key before a rebuild
// begins and commits the row after the rebuild's scan; the new version
// lacks the key until the invalidator's Add after the commit. Without
// BeforeSwap the swap installs it anyway and the row reads "cannot
// contain"; with BeforeSwap = WaitApplied the swap waits for the
// invalidator.
func TestRebuildWaitsForInvalidator(t *testing.T) {
	ctx := context.Background()
	rdb := env.RedisClient(t)
	key := env.Prefix(t) + "bloom"
	opts := func() *bloom.Options {
		return &bloom.Options{ExpectedItems: 1000, ParamsRefresh: 50 * time.Millisecond, DropDelay: 50 * time.Millisecond}
	}
	gate := &gatedFilter{Filter: bloom.New(rdb, key, opts()), release: make(chan struct{})}
	t.Cleanup(func() { _ = gate.Delete(context.Background()) })
	s := newStack(t, stackOptions{inv: &invalidate.Options{Filter: gate}})
	require.NoError(t, gate.Warm(ctx, bloom.Scan(ctx, s.db, s.prefix+"user:", "SELECT id FROM users")))

	// The rebuild's keys: the scan, then the writer's commit.
	scanThenCommit := func(id int) bloom.Keys {
		return func(yield func(string, error) bool) {
			for k, err := range bloom.Scan(ctx, s.db, s.prefix+"user:", "SELECT id FROM users") {
				if !yield(k, err) {
					return
				}
			}
			if _, err := s.db.Exec("INSERT INTO users (id, email, name) VALUES (?, ?, 'U')", id, fmt.Sprintf("u%d@example.com", id)); err != nil {
				yield("", err)
			}
		}
	}
	writer := bloom.New(rdb, key, opts())

	// Without BeforeSwap: the row reads "cannot contain" after the swap.
	gate.held.Store(true)
	require.NoError(t, writer.Add(ctx, userKey(s.prefix, 1)))
	require.NoError(t, bloom.New(rdb, key, opts()).Rebuild(ctx, scanThenCommit(1)))
	assert.False(t, writer.MayContain(ctx, userKey(s.prefix, 1)),
		"without BeforeSwap the swap installs a version without the committed row")
	close(gate.release)
	require.Eventually(t, func() bool { return writer.MayContain(ctx, userKey(s.prefix, 1)) }, 10*time.Second, time.Millisecond)

	// With BeforeSwap waiting for the invalidator, here through a second,
	// standby instance. The gate opens once the rebuild polls the
	// checkpoint (or, were it not to wait, once it has swapped); the key
	// must be there at the moment of the swap.
	watched := &watchedCheckpoints{loadingStore: s.invOpts.Checkpoints.(loadingStore), loaded: make(chan struct{})}
	standbyOpts := s.invOpts
	standbyOpts.Checkpoints = watched
	standby := invalidate.New(newStream(t, env), s.cache, s.rdb, s.rules, &standbyOpts)
	gate.release = make(chan struct{})
	gate.held.Store(true)
	atSwap := make(chan bool, 1)
	o := opts()
	o.BeforeSwap = func(ctx context.Context) error {
		watched.armed.Store(true)
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return standby.WaitApplied(ctx)
	}
	o.Progress = func(p bloom.Progress) {
		if p.Done {
			atSwap <- bloom.New(rdb, key, opts()).MayContain(ctx, userKey(s.prefix, 2))
		}
	}
	require.NoError(t, writer.Add(ctx, userKey(s.prefix, 2)))
	done := make(chan error, 1)
	go func() { done <- bloom.New(rdb, key, o).Rebuild(ctx, scanThenCommit(2)) }()
	var answer bool
	select {
	case <-watched.loaded:
		close(gate.release)
		answer = <-atSwap
	case answer = <-atSwap:
		close(gate.release)
	}
	require.NoError(t, <-done)
	assert.True(t, answer, "the swap installed a version without the committed row")
	assert.True(t, writer.MayContain(ctx, userKey(s.prefix, 2)))
	assert.True(t, writer.MayContain(ctx, userKey(s.prefix, 1)))
}

// watchedCheckpoints closes loaded at the first Load after armed is set.
// loadingStore is a checkpoint store whose position can be read without a
// claim, as WaitApplied needs.
type loadingStore interface {
	binlog.ClaimStore
	Load(context.Context) (binlog.Position, error)
}

type watchedCheckpoints struct {
	loadingStore
	armed  atomic.Bool
	loaded chan struct{}
}

func (w *watchedCheckpoints) Load(ctx context.Context) (binlog.Position, error) {
	if w.armed.CompareAndSwap(true, false) {
		close(w.loaded)
	}
	return w.loadingStore.Load(ctx)
}

// TestWarmBeforeFirstStart: the filter is warmed, a row is inserted, and
// only then does the invalidator start for the first time, from the
// server's position at that moment. The row is in neither the scan nor
// the stream: the filter must not report it absent.
func TestWarmBeforeFirstStart(t *testing.T) {
	ctx := context.Background()
	rdb := env.RedisClient(t)
	key := env.Prefix(t) + "bloom"
	filter := bloom.New(rdb, key, &bloom.Options{ExpectedItems: 1000})
	t.Cleanup(func() { _ = filter.Delete(context.Background()) })
	s := newStack(t, stackOptions{inv: &invalidate.Options{Filter: filter}, external: true})
	require.NoError(t, filter.Warm(ctx, bloom.Scan(ctx, s.db, s.prefix+"user:", "SELECT id FROM users")))
	_, err := s.db.Exec("INSERT INTO users (id, email, name) VALUES (1, 'ann@example.com', 'Ann')")
	require.NoError(t, err)

	s.inv = s.newInvalidator(t)
	s.stop = s.run(t)
	assert.True(t, filter.MayContain(ctx, userKey(s.prefix, 1)), "a row committed between the Warm and the first start reads \"cannot contain\"")
	assert.Equal(t, uint64(1), s.inv.Stats().FilterResets)

	// Warmed again after the start, it holds the row, and the rows after.
	require.NoError(t, filter.Warm(ctx, bloom.Scan(ctx, s.db, s.prefix+"user:", "SELECT id FROM users")))
	_, err = s.db.Exec("INSERT INTO users (id, email, name) VALUES (2, 'bob@example.com', 'Bob')")
	require.NoError(t, err)
	s.fence(t)
	assert.True(t, filter.MayContain(ctx, userKey(s.prefix, 1)))
	assert.True(t, filter.MayContain(ctx, userKey(s.prefix, 2)))
	assert.False(t, filter.MayContain(ctx, userKey(s.prefix, 3)), "the warmed filter answers")
}
