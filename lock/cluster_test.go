package lock_test

import (
	"context"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/lock"
)

// startCluster starts a one-node Redis Cluster that serves all 16384 slots
// and returns a ClusterClient for it. The harness has no cluster, and one
// node is enough to route every command through the cluster client.
func startCluster(t *testing.T) *redis.ClusterClient {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		bin = "/usr/bin/redis-server"
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	dir := t.TempDir()
	cmd := exec.Command(bin,
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
		"--cluster-enabled", "yes", "--cluster-config-file", dir+"/nodes.conf",
		"--save", "", "--appendonly", "no", "--protected-mode", "no")
	require.NoError(t, cmd.Start(), "redis-server for the cluster")
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})

	addr := "127.0.0.1:" + strconv.Itoa(port)
	node := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer node.Close()
	ctx := context.Background()
	waitFor(t, func() bool { return node.Ping(ctx).Err() == nil })
	require.NoError(t, node.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", 0, 16383).Err())
	waitFor(t, func() bool { return strings.Contains(node.ClusterInfo(ctx).Val(), "cluster_state:ok") })

	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{addr}})
	t.Cleanup(func() { c.Close() })
	return c
}

func TestClusterClient(t *testing.T) {
	c := startCluster(t)
	ctx := context.Background()

	// Keys in different slots: every script touches one key, so no hash tags.
	for _, key := range []string{"a", "b", "c", "lock:user:42"} {
		l, err := lock.TryObtain(ctx, c, key, time.Minute)
		require.NoError(t, err, key)
		_, err = lock.TryObtain(ctx, c, key, time.Minute)
		assert.ErrorIs(t, err, lock.ErrNotObtained, key)
		require.NoError(t, l.Refresh(ctx, 2*time.Minute), key)
		left, err := l.TTL(ctx)
		require.NoError(t, err, key)
		assert.Greater(t, left, time.Minute, key)
		require.NoError(t, l.Release(ctx), key)
		assert.ErrorIs(t, l.Release(ctx), lock.ErrNotHeld, key)
	}

	// The election's lock key and epoch key fall into different slots.
	assert.NotEqual(t, redisSlot(t, c, "leader"), redisSlot(t, c, "leader:epoch"))
	e := lock.NewElection(c, "leader", &lock.ElectionOptions{TTL: time.Second})
	var epochs []uint64
	for range 2 {
		require.NoError(t, e.Run(ctx, func(ctx context.Context, epoch uint64) error {
			epochs = append(epochs, epoch)
			return nil
		}))
	}
	assert.Equal(t, []uint64{1, 2}, epochs)
}

func redisSlot(t *testing.T, c *redis.ClusterClient, key string) int64 {
	t.Helper()
	slot, err := c.ClusterKeySlot(context.Background(), key).Result()
	require.NoError(t, err)
	return slot
}
