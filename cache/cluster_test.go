package cache_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/cache"
)

// startClusterNode starts a one-node Redis Cluster that owns every slot:
// enough to run the ClusterClient code paths (per-node pipelines, scripts
// routed by key, cross-slot MGET refused) against a real server.
func startClusterNode(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	require.NoError(t, err, "install redis-server")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir := t.TempDir()
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
		"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(dir, "nodes.conf"),
		"--save", "", "--appendonly", "no", "--protected-mode", "no")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := "127.0.0.1:" + strconv.Itoa(port)
	node := redis.NewClient(&redis.Options{Addr: addr})
	defer node.Close()
	ctx := context.Background()
	require.Eventually(t, func() bool { return node.Ping(ctx).Err() == nil }, 20*time.Second, 20*time.Millisecond)
	require.NoError(t, node.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", 0, 16383).Err())
	require.Eventually(t, func() bool {
		info, err := node.ClusterInfo(ctx).Result()
		return err == nil && strings.Contains(info, "cluster_state:ok")
	}, 20*time.Second, 20*time.Millisecond)
	return addr
}

func TestClusterClient(t *testing.T) {
	addr := startClusterNode(t)
	f := newFixture(t)
	ctx := context.Background()
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{addr}})
	t.Cleanup(func() { rdb.Close() })
	keys := []string{f.key("user", 1), f.key("user", 2), f.key("order", 3)}
	require.Error(t, rdb.MGet(ctx, keys...).Err(), "keys in different slots: no MGET")

	c := mustNew(t, rdb, &cache.Options{Prefix: "{gen}:"})
	defer c.Close()
	u, err := cache.Fetch(ctx, c, keys[0], f.loader(1))
	require.NoError(t, err)
	assert.Equal(t, "ann", u.Name)
	bl := &batchLoader{f: f, ids: map[string]int64{keys[0]: 1, keys[1]: 2, keys[2]: 3}}
	m, err := cache.FetchMany(ctx, c, keys, bl.load)
	require.NoError(t, err)
	assert.Equal(t, map[string]user{keys[0]: {1, "ann"}, keys[1]: {2, "bob"}}, m)
	require.Len(t, bl.calls, 1)
	m, err = cache.FetchMany(ctx, c, keys, bl.load)
	require.NoError(t, err)
	assert.Len(t, m, 2)
	assert.Len(t, bl.calls, 1, "all hits")

	require.NoError(t, c.Invalidate(ctx, keys...))
	assert.Zero(t, rdb.Exists(ctx, keys[0]).Val()+rdb.Exists(ctx, keys[1]).Val())
	_, err = cache.Fetch(ctx, c, keys[0], f.loader(1))
	require.NoError(t, err)
	require.NoError(t, c.InvalidateNamespace(ctx, f.base+"user", f.base+"order"))
	require.NoError(t, c.InvalidateAll(ctx))
	loads := f.loads.Load()
	_, err = cache.Fetch(ctx, c, keys[0], f.loader(1))
	require.NoError(t, err)
	assert.Equal(t, loads+1, f.loads.Load(), "stale after the bumps")
	assert.Zero(t, c.Stats().Errors)
}
