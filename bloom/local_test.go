package bloom_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/bloom"
	"github.com/cacheaside/cacheaside/internal/testenv"
)

// adderChild adds BLOOM_N keys "child:<i>" to the filter at BLOOM_KEY, one
// Add at a time, and prints "added <i>" after each Add returned.
func adderChild(ctx context.Context, env *testenv.Env) error {
	n, err := strconv.Atoi(os.Getenv("BLOOM_N"))
	if err != nil {
		return err
	}
	rdb := env.NewRedis(nil)
	defer rdb.Close()
	f := bloom.New(rdb, os.Getenv("BLOOM_KEY"), fastOpts(50_000))
	for i := range n {
		if err := f.Add(ctx, "child:"+strconv.Itoa(i)); err != nil {
			return err
		}
		fmt.Printf("added %d\n", i)
	}
	return nil
}

// TestNoFalseNegativesWithChildProcess: another process adds keys; this one
// looks each up as soon as the other reports its Add returned, through
// Redis (never absent) and through a local copy (present once the add's
// message arrived), while adding keys of its own.
func TestNoFalseNegativesWithChildProcess(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	key := env.Prefix(t) + "bloom"
	remote, local, _ := newLocalPair(t, key, 50_000)
	require.NoError(t, remote.Warm(ctx, keyRange("warm:", 0, 5000)))
	absent := absentKey(t, remote)
	require.Eventually(t, func() bool { return !local.MayContain(ctx, absent) }, 5*time.Second, time.Millisecond)
	failOpen := local.Stats().FailOpen // answers before the copy was loaded

	const n = 1000
	cmd := env.Child(ctx, "adder", "BLOOM_KEY="+key, "BLOOM_N="+strconv.Itoa(n))
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())

	var own sync.WaitGroup
	var ownMissing atomic.Int64
	stop := make(chan struct{})
	own.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			k := "parent:" + strconv.Itoa(i)
			if err := local.Add(ctx, k); err != nil {
				t.Error(err)
				return
			}
			if !local.MayContain(ctx, k) || !remote.MayContain(ctx, k) {
				ownMissing.Add(1)
			}
		}
	})

	seen, remoteMissing, localLate := 0, 0, 0
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		i, ok := strings.CutPrefix(sc.Text(), "added ")
		if !ok {
			continue
		}
		seen++
		if !remote.MayContain(ctx, "child:"+i) {
			remoteMissing++
		}
		if !local.MayContain(ctx, "child:"+i) {
			localLate++
		}
	}
	require.NoError(t, cmd.Wait())
	close(stop)
	own.Wait()
	require.Equal(t, n, seen)
	assert.Zero(t, remoteMissing, "keys another process added, reported absent through Redis")
	assert.Zero(t, ownMissing.Load(), "keys this process added, reported absent")
	t.Logf("local copy: %d of %d keys from the other process were not yet applied when first looked up", localLate, n)
	require.Eventually(t, func() bool {
		for i := range n {
			if !local.MayContain(ctx, "child:"+strconv.Itoa(i)) {
				return false
			}
		}
		return true
	}, 5*time.Second, time.Millisecond, "the local copy never received every add")
	assert.Equal(t, failOpen, local.Stats().FailOpen)
	assert.Zero(t, remote.Stats().FailOpen)
}

type countHook struct{ cmds atomic.Int64 }

func (h *countHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *countHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.cmds.Add(1)
		return next(ctx, cmd)
	}
}
func (h *countHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.cmds.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

func TestLocalCopyNeedsNoRoundTrip(t *testing.T) {
	ctx := context.Background()
	key := env.Prefix(t) + "bloom"
	opts := fastOpts(10_000)
	opts.Local = true
	opts.ParamsRefresh = time.Minute // no periodic checks during the count
	f, rdb := newFilter(t, key, opts)
	hook := &countHook{}
	rdb.AddHook(hook)
	require.NoError(t, f.Warm(ctx, keyRange("user:", 0, 10_000)))
	runLocal(t, f)

	before := hook.cmds.Load()
	absent := 0
	for i := range 10_000 {
		assert.True(t, f.MayContain(ctx, "user:"+strconv.Itoa(i)))
		if !f.MayContain(ctx, "nobody:"+strconv.Itoa(i)) {
			absent++
		}
	}
	assert.Zero(t, hook.cmds.Load()-before, "Redis commands during 20,000 local lookups")
	assert.Greater(t, absent, 9000)
	assert.Equal(t, uint64(20_000), f.Stats().Local)
}

func TestLocalCopyFollowsAddsAndRebuilds(t *testing.T) {
	ctx := context.Background()
	key := env.Prefix(t) + "bloom"
	other, local, _ := newLocalPair(t, key, 2000)
	require.NoError(t, other.Warm(ctx, keyRange("user:", 0, 2000)))
	absent := absentKey(t, other)
	require.Eventually(t, func() bool { return !local.MayContain(ctx, absent) && local.Stats().Local > 0 },
		5*time.Second, time.Millisecond)
	failOpen := local.Stats().FailOpen // answers before the copy was loaded

	// Adds from another instance arrive; this instance's own are there at once.
	require.NoError(t, other.Add(ctx, "user:other"))
	require.Eventually(t, func() bool { return local.MayContain(ctx, "user:other") }, 5*time.Second, time.Millisecond)
	require.NoError(t, local.Add(ctx, "user:own"))
	localBefore := local.Stats().Local
	assert.True(t, local.MayContain(ctx, "user:own"))
	assert.Equal(t, localBefore+1, local.Stats().Local, "answered by the local copy")

	// A rebuild that forgets half the keys reaches the local copy.
	require.NoError(t, other.Rebuild(ctx, keyRange("user:", 0, 1000)))
	require.Eventually(t, func() bool {
		gone := 0
		for i := 1000; i < 2000; i++ {
			if !local.MayContain(ctx, "user:"+strconv.Itoa(i)) {
				gone++
			}
		}
		return gone > 900
	}, 5*time.Second, 10*time.Millisecond, "the local copy never loaded the rebuilt version")
	for i := range 1000 {
		require.True(t, local.MayContain(ctx, "user:"+strconv.Itoa(i)))
	}
	require.NoError(t, other.Add(ctx, "user:after-rebuild"))
	require.Eventually(t, func() bool { return local.MayContain(ctx, "user:after-rebuild") }, 5*time.Second, time.Millisecond)
	assert.Equal(t, failOpen, local.Stats().FailOpen, "the local copy kept answering through the rebuild")
}
