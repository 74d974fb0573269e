package testenv_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/internal/testenv"
)

// role returns the replication role of n as its INFO reports it.
func role(t *testing.T, n *testenv.Redis) string {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: n.Addr()})
	defer c.Close()
	info, err := c.Info(context.Background(), "replication").Result()
	require.NoError(t, err)
	for line := range strings.SplitSeq(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "role:"); ok {
			return v
		}
	}
	t.Fatalf("no role in %q", info)
	return ""
}

func TestSentinelKillMaster(t *testing.T) {
	s := env.Sentinel(t)
	ctx := context.Background()
	c := env.FailoverClient(t)
	p := env.Prefix(t)
	old, err := s.Master(ctx)
	require.NoError(t, err)
	require.NoError(t, c.Set(ctx, p+"a", "v", 0).Err())
	require.NoError(t, s.WaitReplicated(ctx))

	promoted, err := s.KillMaster(ctx)
	require.NoError(t, err)
	assert.NotSame(t, old, promoted)
	assert.Equal(t, "master", role(t, promoted))
	assert.Equal(t, "slave", role(t, old), "the old master rejoins as a replica")
	replica, err := s.Replica(ctx)
	require.NoError(t, err)
	assert.Same(t, old, replica)

	// The failover client follows the sentinels to the new master.
	assert.Equal(t, "v", c.Get(ctx, p+"a").Val())
	require.NoError(t, c.Set(ctx, p+"b", "w", 0).Err())
	direct := redis.NewClient(&redis.Options{Addr: promoted.Addr()})
	defer direct.Close()
	assert.Equal(t, "w", direct.Get(ctx, p+"b").Val())
}

func TestSentinelLoseWrites(t *testing.T) {
	s := env.Sentinel(t)
	ctx := context.Background()
	c := env.FailoverClient(t)
	p := env.Prefix(t)
	require.NoError(t, c.Set(ctx, p+"kept", "v", 0).Err())
	require.NoError(t, s.WaitReplicated(ctx))
	old, err := s.Master(ctx)
	require.NoError(t, err)

	var acked int64
	promoted, err := s.LoseWrites(ctx, func(ctx context.Context) error {
		conn := c.Conn()
		defer conn.Close()
		if err := conn.Set(ctx, p+"lost", "lost", 0).Err(); err != nil {
			return err
		}
		acked, err = conn.Do(ctx, "WAIT", 1, 100).Int64()
		return err
	})
	require.NoError(t, err)
	assert.Equal(t, int64(0), acked, "no replica acknowledged the write")
	assert.NotSame(t, old, promoted)
	assert.Equal(t, "master", role(t, promoted))
	assert.Equal(t, "slave", role(t, old))

	assert.ErrorIs(t, c.Get(ctx, p+"lost").Err(), redis.Nil, "the acknowledged write is lost")
	assert.Equal(t, "v", c.Get(ctx, p+"kept").Val())
}

func TestSentinelOptionsAndClose(t *testing.T) {
	t.Parallel() // its own servers
	_, err := testenv.StartSentinel(&testenv.SentinelOptions{DownAfter: time.Millisecond})
	require.ErrorContains(t, err, "DownAfter")

	s, err := testenv.StartSentinel(nil)
	require.NoError(t, err)
	addrs := append(s.Addrs(), s.Data[0].Addr(), s.Data[1].Addr())
	require.NoError(t, s.Close())
	for _, a := range addrs {
		conn, err := net.DialTimeout("tcp", a, time.Second)
		if err == nil {
			conn.Close()
		}
		assert.Error(t, err, "%s still listens after Close", a)
	}
}

func TestForEachRedis(t *testing.T) {
	ctx := context.Background()
	var ran []testenv.RedisKind
	env.ForEachRedis(t, func(t *testing.T, kind testenv.RedisKind, rdb redis.UniversalClient) {
		ran = append(ran, kind)
		key := env.Prefix(t) + "k"
		require.NoError(t, rdb.Set(ctx, key, string(kind), 0).Err())
		assert.Equal(t, string(kind), rdb.Get(ctx, key).Val())
		switch kind {
		case testenv.KindSingle:
			assert.Equal(t, string(kind), env.RedisClient(t).Get(ctx, key).Val(), "the single server holds it")
		case testenv.KindCluster:
			m, err := env.Cluster(t).MasterOf(ctx, key)
			require.NoError(t, err)
			direct := redis.NewClient(&redis.Options{Addr: m.Addr()})
			defer direct.Close()
			assert.Equal(t, string(kind), direct.Get(ctx, key).Val(), "the key's master holds it")
		case testenv.KindSentinel:
			m, err := env.Sentinel(t).Master(ctx)
			require.NoError(t, err)
			direct := redis.NewClient(&redis.Options{Addr: m.Addr()})
			defer direct.Close()
			assert.Equal(t, string(kind), direct.Get(ctx, key).Val(), "the sentinels' master holds it")
		}
	})
	assert.Equal(t, testenv.RedisKinds(), ran)

	t.Setenv(testenv.EnvRedisKinds, "sentinel,tls,single")
	ran = nil
	env.ForEachRedis(t, func(t *testing.T, kind testenv.RedisKind, rdb redis.UniversalClient) {
		ran = append(ran, kind)
		require.NoError(t, rdb.Set(ctx, env.Prefix(t)+"k", "v", 0).Err())
		if kind == testenv.KindTLS {
			// The client reaches the server over TLS only.
			opts := rdb.(*redis.Client).Options()
			assert.NotNil(t, opts.TLSConfig)
			assert.NotEqual(t, env.RedisAddr(), opts.Addr)
		}
	})
	assert.Equal(t, []testenv.RedisKind{testenv.KindSentinel, testenv.KindTLS, testenv.KindSingle}, ran)
}

// clusterChild writes through the cluster and the sentinels of its parent.
func clusterChild(ctx context.Context, e *testenv.Env) error {
	for _, kind := range []testenv.RedisKind{testenv.KindCluster, testenv.KindSentinel} {
		c, err := e.NewRedisOf(kind)
		if err != nil {
			return err
		}
		err = c.Set(ctx, os.Getenv("CHILD_KEY"), "child:"+string(kind), 0).Err()
		c.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", kind, err)
		}
	}
	_, err := e.NewRedisOf("ring")
	if err == nil || !strings.Contains(err.Error(), "unknown Redis kind") {
		return fmt.Errorf("kind ring: got %v, want an error naming the unknown kind", err)
	}
	return nil
}

func TestChildReachesClusterAndSentinel(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cc, fc := env.ClusterClient(t), env.FailoverClient(t)
	key := env.Prefix(t) + "child:" + strconv.Itoa(os.Getpid())
	out, err := env.Child(ctx, "cluster-child", "CHILD_KEY="+key).Output()
	require.NoError(t, err, "%s", out)
	assert.Equal(t, "child:cluster", cc.Get(ctx, key).Val())
	assert.Equal(t, "child:sentinel", fc.Get(ctx, key).Val())
}
