package bloom_test

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/bloom"
)

// TestLocalCopySilentResubscribe: the subscription connection dies while
// Run is between two reads (busy applying an add, say), and go-redis
// reconnects and subscribes again on its own. The adds published in
// between are lost to the copy; it must stop answering until it has
// reloaded, even though adds keep arriving on the new connection.
func TestLocalCopySilentResubscribe(t *testing.T) {
	ctx := context.Background()
	key := env.Prefix(t) + "bloom"
	other, rdb := newFilter(t, key, fastOpts(2000))
	require.NoError(t, other.Warm(ctx, keyRange("user:", 0, 2000)))

	opts := fastOpts(2000)
	opts.Local = true
	local, _ := newFilter(t, key, opts)
	var hold atomic.Bool
	parked, release := make(chan struct{}), make(chan struct{})
	local.SetBeforeReceive(func() {
		if hold.CompareAndSwap(true, false) {
			parked <- struct{}{}
			<-release
		}
	})
	var releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) }) // before runLocal's: Run must not stay parked
	runLocal(t, local)
	lost := absentKey(t, local)
	require.Positive(t, local.Stats().Local, "answered by the local copy")

	hold.Store(true)
	<-parked // the reader is between two reads
	require.NoError(t, rdb.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err())
	require.Eventually(t, func() bool {
		return rdb.PubSubNumSub(ctx, local.Channel()).Val()[local.Channel()] == 0
	}, 5*time.Second, time.Millisecond)
	require.NoError(t, other.Add(ctx, lost)) // published to no one
	// go-redis subscribes again by itself when Run's next ping finds the
	// connection dead (unless Run gives up on the connection first).
	require.Eventually(t, func() bool {
		return rdb.PubSubNumSub(ctx, local.Channel()).Val()[local.Channel()] == 1 || !local.Stats().Live
	}, 5*time.Second, time.Millisecond, "the subscription never came back")
	releaseOnce.Do(func() { close(release) })

	// Adds keep arriving on the new connection, as they do in production.
	stop := make(chan struct{})
	adder := make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				adder <- nil
				return
			case <-time.After(20 * time.Millisecond):
			}
			if err := other.Add(ctx, "later:"+strconv.Itoa(i)); err != nil {
				adder <- err
				return
			}
		}
	}()
	defer func() {
		close(stop)
		require.NoError(t, <-adder)
	}()
	assert.Eventually(t, func() bool { return local.MayContain(ctx, lost) }, 3*time.Second, time.Millisecond,
		"a key whose add was lost with the subscription is still reported absent by the local copy")
}

// TestLocalCopyKeysDeletedWithoutDisconnect: the filter's keys vanish
// (FLUSHALL, eviction, DEL) while the copy stays subscribed. An add for
// the vanished filter must take every copy out of service at once, not
// after the next periodic check.
func TestLocalCopyKeysDeletedWithoutDisconnect(t *testing.T) {
	ctx := context.Background()
	key := env.Prefix(t) + "bloom"
	other, rdb := newFilter(t, key, fastOpts(2000))
	require.NoError(t, other.Warm(ctx, keyRange("user:", 0, 2000)))
	opts := fastOpts(2000)
	opts.Local = true
	opts.ParamsRefresh = time.Minute // no periodic check during the test
	local, _ := newFilter(t, key, opts)
	runLocal(t, local)
	gone := absentKey(t, local)
	require.Positive(t, local.Stats().Local, "answered by the local copy")

	for _, k := range rdb.Keys(ctx, key+"*").Val() {
		require.NoError(t, rdb.Del(ctx, k).Err())
	}
	// An instance that starts now finds no filter: its Add writes nothing.
	fresh, _ := newFilter(t, key, fastOpts(2000))
	require.NoError(t, fresh.Add(ctx, gone))
	assert.Eventually(t, func() bool { return local.MayContain(ctx, gone) }, time.Second, time.Millisecond,
		"the copy answers from a version whose keys are gone")
	assert.ErrorIs(t, local.Check(ctx), bloom.ErrNotWarm)
}

// TestLocalCopyBitmapDeletedWithoutAdds: the current bitmap alone is
// deleted and nobody adds: the periodic check takes the copy out of
// service.
func TestLocalCopyBitmapDeletedWithoutAdds(t *testing.T) {
	ctx := context.Background()
	key := env.Prefix(t) + "bloom"
	other, local, rdb := newLocalPair(t, key, 2000)
	require.NoError(t, other.Warm(ctx, keyRange("user:", 0, 2000)))
	absent := absentKey(t, other)
	require.Eventually(t, func() bool { return !local.MayContain(ctx, absent) && local.Stats().Local > 0 }, 5*time.Second, time.Millisecond)
	require.NoError(t, rdb.Del(ctx, other.BitmapKey(other.Stats().Version)).Err())
	assert.Eventually(t, func() bool { return local.MayContain(ctx, absent) }, 5*time.Second, time.Millisecond,
		"the copy answers from a bitmap that is gone")
}
