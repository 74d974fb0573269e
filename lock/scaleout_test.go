package lock_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/internal/testenv"
	"github.com/cacheaside/cacheaside/lock"
)

// The tests in this file run the lock and the election on a Redis Cluster
// and under Sentinel, and fail their masters over with the harness's real
// processes: a failover keeps what the replica had received and loses the
// rest, lock keys and epoch counters included.

func TestOnEachRedis(t *testing.T) {
	env.ForEachRedis(t, func(t *testing.T, kind testenv.RedisKind, rdb redis.UniversalClient) {
		ctx := context.Background()
		p := env.Prefix(t)
		// Several keys, so that on the cluster they fall on several masters.
		for i := range 6 {
			key := fmt.Sprintf("%slock:%d", p, i)
			l, err := lock.TryObtain(ctx, rdb, key, time.Minute)
			require.NoError(t, err, key)
			_, err = lock.TryObtain(ctx, rdb, key, time.Minute)
			assert.ErrorIs(t, err, lock.ErrNotObtained, key)
			require.NoError(t, l.Refresh(ctx, 2*time.Minute), key)
			left, err := l.TTL(ctx)
			require.NoError(t, err, key)
			assert.Greater(t, left, time.Minute, key)
			require.NoError(t, l.Release(ctx), key)
			assert.ErrorIs(t, l.Release(ctx), lock.ErrNotHeld, key)
		}

		// Goroutines contending for one lock never overlap.
		key := p + "mutex"
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			holders int
			overlap bool
		)
		for range 8 {
			wg.Go(func() {
				for range 5 {
					l, err := lock.Obtain(ctx, rdb, key, 10*time.Second, nil)
					if !assert.NoError(t, err) {
						return
					}
					mu.Lock()
					holders++
					overlap = overlap || holders > 1
					mu.Unlock()
					mu.Lock()
					holders--
					mu.Unlock()
					assert.NoError(t, l.Release(ctx))
				}
			})
		}
		wg.Wait()
		assert.False(t, overlap, "two holders at once")

		// Every script touches one key, so no hash tags: on the cluster the
		// election's lock key and epoch key fall into different slots.
		if kind == testenv.KindCluster {
			assert.NotEqual(t, testenv.Slot(p+"leader"), testenv.Slot(p+"leader:epoch"))
		}
		e := lock.NewElection(rdb, p+"leader", &lock.ElectionOptions{TTL: time.Second})
		var epochs []uint64
		for range 3 {
			require.NoError(t, e.Run(ctx, func(ctx context.Context, epoch uint64) error {
				epochs = append(epochs, epoch)
				return nil
			}))
		}
		assert.Equal(t, []uint64{1, 2, 3}, epochs, kind)
	})
}

// keyOn returns a key with prefix p that the cluster's master m serves
// (keep true) or does not serve (keep false).
func keyOn(t *testing.T, cl *testenv.Cluster, p string, m *testenv.Redis, on bool) string {
	t.Helper()
	for i := 0; ; i++ {
		key := fmt.Sprintf("%s%d", p, i)
		got, err := cl.MasterOf(context.Background(), key)
		require.NoError(t, err)
		if (got == m) == on {
			return key
		}
	}
}

func TestClusterFailoverKeepsReplicatedLock(t *testing.T) {
	cl := env.Cluster(t)
	c := env.ClusterClient(t)
	ctx := context.Background()
	key := env.Prefix(t) + "lock"
	l, err := lock.TryObtain(ctx, c, key, time.Minute)
	require.NoError(t, err)
	require.NoError(t, cl.WaitReplicated(ctx))
	m, err := cl.MasterOf(ctx, key)
	require.NoError(t, err)

	promoted, err := cl.KillMaster(ctx, m)
	require.NoError(t, err)
	now, err := cl.MasterOf(ctx, key)
	require.NoError(t, err)
	require.Same(t, promoted, now, "the key moved to the promoted replica")

	_, err = lock.TryObtain(ctx, c, key, time.Minute)
	assert.ErrorIs(t, err, lock.ErrNotObtained, "a replicated lock survives the failover")
	assert.NoError(t, l.Refresh(ctx, time.Minute), "its holder still holds it")
	assert.NoError(t, l.Release(ctx))
}

// loseLock takes a lock whose SET the failover then loses, on the cluster
// or under Sentinel, and returns it.
func loseLock(t *testing.T, kind testenv.RedisKind, rdb redis.UniversalClient, key string) *lock.Lock {
	t.Helper()
	ctx := context.Background()
	var l *lock.Lock
	take := func(ctx context.Context) (err error) {
		l, err = lock.TryObtain(ctx, rdb, key, time.Minute)
		return err
	}
	switch kind {
	case testenv.KindCluster:
		cl := env.Cluster(t)
		m, err := cl.MasterOf(ctx, key)
		require.NoError(t, err)
		_, err = cl.LoseWrites(ctx, m, take)
		require.NoError(t, err)
	case testenv.KindSentinel:
		_, err := env.Sentinel(t).LoseWrites(ctx, take)
		require.NoError(t, err)
	}
	return l
}

// TestFailoverLosesLock shows the bound the lock keeps across a failover: a
// lock the replica had not received when it took over is gone. Its holder
// learns it at its next Refresh (ErrNotHeld); until then a second holder
// can take it, and only a fencing epoch tells the two apart.
func TestFailoverLosesLock(t *testing.T) {
	for _, kind := range []testenv.RedisKind{testenv.KindCluster, testenv.KindSentinel} {
		t.Run(string(kind), func(t *testing.T) {
			ctx := context.Background()
			rdb := env.RedisClientOf(t, kind)
			key := env.Prefix(t) + "lock"
			warm(t, rdb, key)

			first := loseLock(t, kind, rdb, key)
			second, err := lock.TryObtain(ctx, rdb, key, time.Minute)
			require.NoError(t, err, "the failover freed the lock")
			assert.ErrorIs(t, first.Refresh(ctx, time.Minute), lock.ErrNotHeld, "the first holder finds out at its next refresh")
			assert.ErrorIs(t, first.Release(ctx), lock.ErrNotHeld, "and cannot release the second holder's lock")
			assert.NoError(t, second.Refresh(ctx, time.Minute))
			assert.NoError(t, second.Release(ctx))
		})
	}
}

// fencedSave is the store side of fencing, as the lock's documentation asks
// of the store a leader writes to: it refuses a write whose epoch is lower
// than the one stored with the value. ARGV[1] is the epoch, ARGV[2] the value.
var fencedSave = redis.NewScript(`
local cur = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0')
if cur > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'value', ARGV[2])
return 1`)

// unfencedSave writes whatever epoch it is given: the store without fencing.
var unfencedSave = redis.NewScript(`
redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'value', ARGV[2])
return 1`)

// leadOnce runs an election in a goroutine until it leads, and returns its
// epoch and a func that ends the run and waits for it.
func leadOnce(t *testing.T, e *lock.Election) (uint64, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	epochs, done := make(chan uint64, 1), make(chan error, 1)
	go func() {
		done <- e.Run(ctx, func(ctx context.Context, epoch uint64) error {
			epochs <- epoch
			<-ctx.Done()
			return nil
		})
	}()
	select {
	case epoch := <-epochs:
		return epoch, func() { cancel(); require.NoError(t, <-done) }
	case err := <-done:
		cancel()
		t.Fatalf("election ended before leading: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("no leadership within 30s")
	}
	return 0, nil
}

// TestDeposedLeaderCheckpointAfterClusterFailover: leader A is elected just
// before a failover that loses its lock (the epoch counter lives on another
// master, whose writes survive). B is elected on the free lock with a
// greater epoch and saves the checkpoint. A, which has not yet noticed,
// saves too. Without fencing A's save overwrites B's; with the fence it is
// refused, so no checkpoint write of a deposed leader lands.
func TestDeposedLeaderCheckpointAfterClusterFailover(t *testing.T) {
	cl := env.Cluster(t)
	for _, fenced := range []bool{false, true} {
		t.Run(fmt.Sprintf("fenced=%v", fenced), func(t *testing.T) {
			ctx := context.Background()
			c := env.ClusterClient(t)
			p := env.Prefix(t)
			masters, err := cl.Masters(ctx)
			require.NoError(t, err)
			// The lock on the master that fails over, its epoch counter on another.
			var lockKey string
			for i := 0; lockKey == ""; i++ {
				k := fmt.Sprintf("%sleader%d", p, i)
				lm, err := cl.MasterOf(ctx, k)
				require.NoError(t, err)
				em, err := cl.MasterOf(ctx, k+":epoch")
				require.NoError(t, err)
				if lm == masters[0] && em != masters[0] {
					lockKey = k
				}
			}
			checkpoint := keyOn(t, cl, p+"checkpoint", masters[0], false)
			save := unfencedSave
			if fenced {
				save = fencedSave
			}
			saveAs := func(epoch uint64, value string) bool {
				n, err := save.Run(ctx, c, []string{checkpoint}, epoch, value).Int()
				require.NoError(t, err)
				return n == 1
			}
			opts := &lock.ElectionOptions{TTL: 30 * time.Second} // A must not notice on its own during the test
			warm(t, c, lockKey)

			var epochA uint64
			var stopA func()
			_, err = cl.LoseWrites(ctx, masters[0], func(context.Context) error {
				epochA, stopA = leadOnce(t, lock.NewElection(c, lockKey, opts))
				return nil
			})
			require.NoError(t, err)
			defer stopA()
			require.True(t, saveAs(epochA, "A"))

			epochB, stopB := leadOnce(t, lock.NewElection(c, lockKey, opts))
			defer stopB()
			assert.Greater(t, epochB, epochA, "the epoch counter kept its writes")
			require.True(t, saveAs(epochB, "B"))

			landed := saveAs(epochA, "A, deposed")
			value := c.HGet(ctx, checkpoint, "value").Val()
			if fenced {
				assert.False(t, landed, "the fence refuses the deposed leader's save")
				assert.Equal(t, "B", value)
			} else {
				assert.True(t, landed)
				assert.Equal(t, "A, deposed", value, "without the fence the deposed leader overwrites the checkpoint")
			}
		})
	}
}

// TestElectionEpochAfterLostWrites shows the bound on the epoch: it is as
// durable as the Redis key that counts it. When the writes that took an
// epoch are lost (a wiped server, or a failover of the counter's master
// that loses its last writes), the next leader is handed an epoch that a
// deposed leader already holds, and a fence that compares epochs alone
// cannot tell the two apart. The checkpoint must then be guarded by more
// than the epoch (see the package documentation, "Replicated Redis").
func TestElectionEpochAfterLostWrites(t *testing.T) {
	ctx := context.Background()
	opts := &lock.ElectionOptions{TTL: 30 * time.Second}

	t.Run("single wiped", func(t *testing.T) {
		_, srv := env.Faults(t)
		rdb := env.RedisClient(t)
		key := env.Prefix(t) + "leader"
		e := lock.NewElection(rdb, key, opts)
		var epochs []uint64
		for range 2 {
			epoch, stop := leadOnce(t, e)
			epochs = append(epochs, epoch)
			stop()
		}
		require.NoError(t, srv.Stop())
		require.NoError(t, srv.Wipe())
		require.NoError(t, srv.Start())
		epoch, stop := leadOnce(t, e)
		stop()
		epochs = append(epochs, epoch)
		assert.Equal(t, []uint64{1, 2, 1}, epochs, "the counter starts over with the data")
	})

	t.Run("cluster", func(t *testing.T) {
		cl := env.Cluster(t)
		c := env.ClusterClient(t)
		key := env.Prefix(t) + "leader"
		warm(t, c, key)
		m, err := cl.MasterOf(ctx, key+":epoch")
		require.NoError(t, err)
		e := lock.NewElection(c, key, opts)
		first, stop := leadOnce(t, e)
		stop()
		require.NoError(t, cl.WaitReplicated(ctx))

		// The deposed leader stops within the window, keeping its epoch for
		// a late write: left running, it would campaign again once its
		// refresh found the lock gone, and take an epoch of its own.
		var deposed uint64
		_, err = cl.LoseWrites(ctx, m, func(context.Context) error {
			var stopDeposed func()
			deposed, stopDeposed = leadOnce(t, e)
			stopDeposed()
			return nil
		})
		require.NoError(t, err)
		next, stopNext := leadOnce(t, e)
		defer stopNext()
		assert.Equal(t, []uint64{1, 2, 2}, []uint64{first, deposed, next}, "the lost INCR is handed out again")
	})

	t.Run("sentinel", func(t *testing.T) {
		s := env.Sentinel(t)
		c := env.FailoverClient(t)
		key := env.Prefix(t) + "leader"
		e := lock.NewElection(c, key, opts)
		first, stop := leadOnce(t, e)
		stop()
		require.NoError(t, s.WaitReplicated(ctx))

		var deposed uint64
		_, err := s.LoseWrites(ctx, func(context.Context) error {
			var stopDeposed func()
			deposed, stopDeposed = leadOnce(t, e)
			stopDeposed()
			return nil
		})
		require.NoError(t, err)
		next, stopNext := leadOnce(t, e)
		defer stopNext()
		assert.Equal(t, []uint64{1, 2, 2}, []uint64{first, deposed, next},
			"the failover lost the lock and the INCR together: the next leader gets the deposed one's epoch")
	})
}

// warm sends a read of key, so that a cluster client has loaded its slot
// map before a failover pauses a node it could ask for one.
func warm(t *testing.T, rdb redis.UniversalClient, key string) {
	t.Helper()
	if err := rdb.Get(context.Background(), key).Err(); err != nil && !errors.Is(err, redis.Nil) {
		require.NoError(t, err)
	}
}
