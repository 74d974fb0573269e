package bloom_test

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/bloom"
)

// nameHook records the names of the commands a client sends.
type nameHook struct {
	mu    sync.Mutex
	names []string
}

func (h *nameHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *nameHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.record(cmd)
		return next(ctx, cmd)
	}
}
func (h *nameHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			h.record(c)
		}
		return next(ctx, cmds)
	}
}
func (h *nameHook) record(c redis.Cmder) {
	h.mu.Lock()
	h.names = append(h.names, strings.ToLower(c.Name()))
	h.mu.Unlock()
}

func TestWarmWhenCurrentAllocatesNothing(t *testing.T) {
	ctx := context.Background()
	key := env.Prefix(t) + "bloom"
	f, _ := newFilter(t, key, fastOpts(1000))
	require.NoError(t, f.Warm(ctx, keyRange("user:", 0, 100)))
	g, rdb := newFilter(t, key, fastOpts(1000))
	hook := &nameHook{}
	rdb.AddHook(hook)
	read := false
	require.NoError(t, g.Warm(ctx, func(yield func(string, error) bool) { read = true }))
	assert.False(t, read)
	assert.NotContains(t, hook.names, "setbit", "a Warm of a current filter allocated a bitmap")
	assert.NotContains(t, hook.names, "hincrby")
}

func TestAbandonedBuildExpires(t *testing.T) {
	ctx := context.Background()
	key := env.Prefix(t) + "bloom"
	opts := fastOpts(1000)
	opts.BuildTimeout = time.Hour
	f, rdb := newFilter(t, key, opts)
	require.NoError(t, f.Warm(ctx, keyRange("user:", 0, 100)))
	inScan, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- f.Rebuild(ctx, func(yield func(string, error) bool) {
			close(inScan)
			<-release
			yield("user:1", nil)
		})
	}()
	<-inScan
	spec := rdb.HGet(ctx, key, "next").Val()
	id, err := strconv.ParseUint(strings.Split(spec, ":")[0], 10, 64)
	require.NoError(t, err, spec)
	ttl := rdb.PTTL(ctx, f.BitmapKey(id)).Val()
	assert.Positive(t, ttl, "a bitmap being built must expire if its builder dies")
	assert.LessOrEqual(t, ttl, time.Hour)
	close(release)
	require.NoError(t, <-done)
	assert.Equal(t, id, f.Stats().Version)
	assert.Equal(t, time.Duration(-1), rdb.PTTL(ctx, f.BitmapKey(id)).Val(), "the current bitmap must not expire")
}

func TestWarmKeepsPrevForDropDelay(t *testing.T) {
	key := env.Prefix(t) + "bloom"
	opts := fastOpts(1000)
	opts.DropDelay = time.Minute
	swapped := make(chan bloom.Progress, 1)
	opts.Progress = func(p bloom.Progress) {
		if p.Done {
			swapped <- p
		}
	}
	a, rdb := newFilter(t, key, opts)
	require.NoError(t, a.Warm(context.Background(), keyRange("user:", 0, 100)))
	old := (<-swapped).Version
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Rebuild(ctx, keyRange("user:", 0, 100)) }()
	<-swapped // a now waits DropDelay before it drops old

	b, _ := newFilter(t, key, fastOpts(1000))
	require.NoError(t, b.Warm(context.Background(), keyRange("user:", 0, 100)))
	assert.Equal(t, int64(1), rdb.Exists(context.Background(), a.BitmapKey(old)).Val(),
		"another instance's Warm dropped the replaced version before DropDelay")
	cancel()
	require.NoError(t, <-done)
}

func TestFillReportsFalsePositiveRate(t *testing.T) {
	ctx := context.Background()
	f, _ := newFilter(t, env.Prefix(t)+"bloom", fastOpts(10_000))
	_, err := f.Fill(ctx)
	require.ErrorIs(t, err, bloom.ErrNotWarm)
	require.NoError(t, f.Warm(ctx, keyRange("user:", 0, 10_000)))
	fl, err := f.Fill(ctx)
	require.NoError(t, err)
	t.Logf("at 1x: %+v", fl)
	assert.Equal(t, f.Params().M, fl.Bits)
	assert.InDelta(t, 0.01, fl.FalsePositiveRate, 0.005)
	assert.InEpsilon(t, 10_000, fl.Items, 0.05)
	keys := slices.Collect(func(yield func(string) bool) {
		for i := 10_000; i < 20_000; i++ {
			if !yield("user:" + strconv.Itoa(i)) {
				return
			}
		}
	})
	require.NoError(t, f.Add(ctx, keys...))
	fl, err = f.Fill(ctx)
	require.NoError(t, err)
	t.Logf("at 2x: %+v", fl)
	assert.InDelta(t, 0.157, fl.FalsePositiveRate, 0.03)
	assert.InEpsilon(t, 20_000, fl.Items, 0.05)
}
