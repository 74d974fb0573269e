package testenv_test

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/internal/testenv"
)

func TestSlot(t *testing.T) {
	for _, tc := range []struct {
		key  string
		slot int
	}{
		{"", 0},
		{"123456789", 0x31C3 % 16384}, // the CRC16/XMODEM check value
		{"foo", 12182},
		{"{user1000}.following", testenv.Slot("user1000")},
		{"{}a", testenv.Slot("{}a")},
		{"a{}{b}", testenv.Slot("a{}{b}")},
	} {
		assert.Equal(t, tc.slot, testenv.Slot(tc.key), "%q", tc.key)
	}
	assert.NotEqual(t, testenv.Slot("{}a"), testenv.Slot("a"), "an empty tag hashes the whole key")

	// The server agrees, tags and all.
	c := env.ClusterClient(t)
	ctx := context.Background()
	for i := range 200 {
		key := fmt.Sprintf("k%d", i)
		if i%3 == 0 {
			key = fmt.Sprintf("x{%d}y{z}", i)
		}
		want, err := c.ClusterKeySlot(ctx, key).Result()
		require.NoError(t, err)
		assert.Equal(t, int(want), testenv.Slot(key), "%q", key)
	}
}

func TestClusterShards(t *testing.T) {
	cl := env.Cluster(t)
	ctx := context.Background()
	shards, err := cl.Shards(ctx)
	require.NoError(t, err)
	require.Len(t, shards, 3)
	seen := map[*testenv.Redis]bool{}
	covered := 0
	for _, s := range shards {
		assert.False(t, seen[s.Master] || seen[s.Replica], "a node in two roles")
		seen[s.Master], seen[s.Replica] = true, true
		for _, r := range s.Slots {
			covered += r[1] - r[0] + 1
		}
	}
	assert.Len(t, seen, 6)
	assert.Equal(t, 16384, covered)

	// Every key is on the master MasterOf names.
	c := env.ClusterClient(t)
	p := env.Prefix(t)
	for i := range 30 {
		key := fmt.Sprintf("%s%d", p, i)
		require.NoError(t, c.Set(ctx, key, i, 0).Err())
		m, err := cl.MasterOf(ctx, key)
		require.NoError(t, err)
		direct := redis.NewClient(&redis.Options{Addr: m.Addr()})
		got, err := direct.Get(ctx, key).Int()
		direct.Close()
		require.NoError(t, err, key)
		assert.Equal(t, i, got)
	}
}

// keysOn writes n keys that all live on master and waits until every
// replica has them.
func keysOn(t *testing.T, cl *testenv.Cluster, c *redis.ClusterClient, master *testenv.Redis, prefix string, n int) []string {
	t.Helper()
	ctx := context.Background()
	var keys []string
	for i := 0; len(keys) < n; i++ {
		key := fmt.Sprintf("%s%d", prefix, i)
		m, err := cl.MasterOf(ctx, key)
		require.NoError(t, err)
		if m == master {
			require.NoError(t, c.Set(ctx, key, "v", 0).Err())
			keys = append(keys, key)
		}
	}
	require.NoError(t, cl.WaitReplicated(ctx))
	return keys
}

func TestClusterKillMaster(t *testing.T) {
	cl := env.Cluster(t)
	ctx := context.Background()
	c := env.ClusterClient(t)
	p := env.Prefix(t)
	old, err := cl.MasterOf(ctx, p)
	require.NoError(t, err)
	replica, err := cl.ReplicaOf(ctx, old)
	require.NoError(t, err)
	keys := keysOn(t, cl, c, old, p, 20)

	promoted, err := cl.KillMaster(ctx, old)
	require.NoError(t, err)
	assert.Same(t, replica, promoted, "the replica takes over")
	now, err := cl.MasterOf(ctx, p)
	require.NoError(t, err)
	assert.Same(t, promoted, now)
	back, err := cl.ReplicaOf(ctx, promoted)
	require.NoError(t, err)
	assert.Same(t, old, back, "the old master rejoins as the replica")

	n, err := c.Exists(ctx, keys[0]).Result()
	require.NoError(t, err)
	assert.Equal(t, int64(1), n)
	for _, k := range keys {
		assert.Equal(t, "v", c.Get(ctx, k).Val(), "replicated writes survive a failover: %s", k)
	}
}

func TestClusterLoseWrites(t *testing.T) {
	cl := env.Cluster(t)
	ctx := context.Background()
	c := env.ClusterClient(t)
	p := env.Prefix(t)
	old, err := cl.MasterOf(ctx, p)
	require.NoError(t, err)
	replica, err := cl.ReplicaOf(ctx, old)
	require.NoError(t, err)
	kept := keysOn(t, cl, c, old, p+"kept", 5)
	lostKey := kept[0] + ":lost"
	for m, _ := cl.MasterOf(ctx, lostKey); m != old; m, _ = cl.MasterOf(ctx, lostKey) {
		lostKey += "x"
	}

	var acked int64
	promoted, err := cl.LoseWrites(ctx, old, func(ctx context.Context) error {
		// The master acknowledges the write but no replica has it.
		direct := redis.NewClient(&redis.Options{Addr: old.Addr()})
		defer direct.Close()
		conn := direct.Conn()
		defer conn.Close()
		if err := conn.Set(ctx, lostKey, "lost", 0).Err(); err != nil {
			return err
		}
		acked, err = conn.Do(ctx, "WAIT", 1, 100).Int64()
		return err
	})
	require.NoError(t, err)
	assert.Equal(t, int64(0), acked, "no replica acknowledged the write")
	assert.Same(t, replica, promoted)
	back, err := cl.ReplicaOf(ctx, promoted)
	require.NoError(t, err)
	assert.Same(t, old, back)

	assert.ErrorIs(t, c.Get(ctx, lostKey).Err(), redis.Nil, "the acknowledged write is lost")
	for _, k := range kept {
		assert.Equal(t, "v", c.Get(ctx, k).Val(), "replicated writes survive: %s", k)
	}
}

func TestClusterOptionsAndClose(t *testing.T) {
	t.Parallel() // its own servers
	_, err := testenv.StartCluster(&testenv.ClusterOptions{NodeTimeout: time.Millisecond})
	require.ErrorContains(t, err, "NodeTimeout")

	cl, err := testenv.StartCluster(nil)
	require.NoError(t, err)
	addrs := cl.Addrs()
	require.Len(t, addrs, 6)
	require.NoError(t, cl.Close())
	for _, a := range addrs {
		conn, err := net.DialTimeout("tcp", a, time.Second)
		if err == nil {
			conn.Close()
		}
		assert.Error(t, err, "node %s still listens after Close", a)
	}
}
