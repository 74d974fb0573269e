package testenv

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"
)

// Environment variables for the Redis deployments beyond the single server.
// Env.Child sets them for its children, so a child uses its parent's
// cluster and sentinels; set by hand, they point the tests at servers the
// harness did not start (without fault controls).
const (
	// EnvRedisCluster is a comma-separated seed list of cluster nodes.
	EnvRedisCluster = "CACHEASIDE_REDIS_CLUSTER"
	// EnvRedisSentinel is the master name, @ and a comma-separated list of
	// sentinels, e.g. mymaster@127.0.0.1:26379,127.0.0.1:26380.
	EnvRedisSentinel = "CACHEASIDE_REDIS_SENTINEL"
	// EnvRedisKinds limits ForEachRedis to some kinds, e.g. "single" or
	// "single,cluster". Default: all of them.
	EnvRedisKinds = "CACHEASIDE_REDIS_KINDS"
)

// RedisKind names a way to deploy Redis.
type RedisKind string

// The kinds of Redis ForEachRedis runs a test on.
const (
	// KindSingle is one redis-server (Env.Redis), through a *redis.Client.
	KindSingle RedisKind = "single"
	// KindCluster is a Redis Cluster of three masters with a replica each
	// (Env.Cluster), through a *redis.ClusterClient.
	KindCluster RedisKind = "cluster"
	// KindSentinel is a master, a replica and three sentinels
	// (Env.Sentinel), through a failover *redis.Client.
	KindSentinel RedisKind = "sentinel"
	// KindTLS is one redis-server reached over TLS (StartRedisTLS). It is
	// not among the default kinds; name it in CACHEASIDE_REDIS_KINDS.
	KindTLS RedisKind = "tls"
)

// RedisKinds lists the kinds ForEachRedis runs by default, in order.
func RedisKinds() []RedisKind { return []RedisKind{KindSingle, KindCluster, KindSentinel} }

// knownKinds are the kinds CACHEASIDE_REDIS_KINDS may name.
func knownKinds() []RedisKind { return append(RedisKinds(), KindTLS) }

// scaleOut holds the cluster and the sentinel setup of an Env, started on
// first use and shared by the tests of the binary.
type scaleOut struct {
	mu            sync.Mutex
	cluster       *Cluster
	clusterErr    error
	sentinel      *Sentinel
	sentinelErr   error
	tls           *Redis
	tlsErr        error
	clusterAddrs  []string // from EnvRedisCluster
	sentinelName  string   // from EnvRedisSentinel
	sentinelAddrs []string
}

func (s *scaleOut) fromEnv() error {
	if v := os.Getenv(EnvRedisCluster); v != "" {
		s.clusterAddrs = strings.Split(v, ",")
	}
	if v := os.Getenv(EnvRedisSentinel); v != "" {
		name, addrs, ok := strings.Cut(v, "@")
		if !ok || name == "" || addrs == "" {
			return fmt.Errorf("testenv: %s=%q: want name@host:port[,host:port...]", EnvRedisSentinel, v)
		}
		s.sentinelName, s.sentinelAddrs = name, strings.Split(addrs, ",")
	}
	return nil
}

func (s *scaleOut) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	if s.cluster != nil {
		err = s.cluster.Close()
		s.cluster = nil
	}
	if s.sentinel != nil {
		if serr := s.sentinel.Close(); err == nil {
			err = serr
		}
		s.sentinel = nil
	}
	if s.tls != nil {
		if terr := s.tls.Close(); err == nil {
			err = terr
		}
		s.tls = nil
	}
	return err
}

// childVars are the variables that point a child at this Env's cluster and
// sentinels, for those that have been started.
func (s *scaleOut) childVars() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var vars []string
	if addrs := s.clusterAddrsLocked(); addrs != nil {
		vars = append(vars, EnvRedisCluster+"="+strings.Join(addrs, ","))
	}
	if name, addrs := s.sentinelLocked(); addrs != nil {
		vars = append(vars, EnvRedisSentinel+"="+name+"@"+strings.Join(addrs, ","))
	}
	return vars
}

func (s *scaleOut) clusterAddrsLocked() []string {
	if s.cluster != nil {
		return s.cluster.Addrs()
	}
	return s.clusterAddrs
}

func (s *scaleOut) sentinelLocked() (string, []string) {
	if s.sentinel != nil {
		return s.sentinel.MasterName, s.sentinel.Addrs()
	}
	return s.sentinelName, s.sentinelAddrs
}

// errNotThere is returned by NewRedisOf for a kind that external servers do not offer.
var errNotThere = errors.New("testenv: not offered by the external servers")

// startCluster returns the shared cluster, starting it on first use.
func (e *Env) startCluster() (*Cluster, error) {
	s := &e.scale
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cluster == nil && s.clusterErr == nil {
		s.cluster, s.clusterErr = StartCluster(nil)
	}
	if s.clusterErr != nil {
		return nil, fmt.Errorf("testenv: the Redis Cluster did not start: %w", s.clusterErr)
	}
	return s.cluster, nil
}

// startSentinel returns the shared Sentinel setup, starting it on first use.
func (e *Env) startSentinel() (*Sentinel, error) {
	s := &e.scale
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sentinel == nil && s.sentinelErr == nil {
		s.sentinel, s.sentinelErr = StartSentinel(nil)
	}
	if s.sentinelErr != nil {
		return nil, fmt.Errorf("testenv: the Sentinel setup did not start: %w", s.sentinelErr)
	}
	return s.sentinel, nil
}

// startTLS returns the shared TLS Redis, starting it on first use.
func (e *Env) startTLS() (*Redis, error) {
	s := &e.scale
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tls == nil && s.tlsErr == nil {
		s.tls, s.tlsErr = StartRedisTLS()
	}
	if s.tlsErr != nil {
		return nil, fmt.Errorf("testenv: the TLS Redis did not start: %w", s.tlsErr)
	}
	return s.tls, nil
}

// Cluster returns the binary's shared Redis Cluster, starting it on first
// use; Main closes it. Tests that fail it over leave it stable for the next
// (KillMaster and LoseWrites return once it is). With external servers it
// skips the test, saying why: fault injection needs the harness's own.
func (e *Env) Cluster(t testing.TB) *Cluster {
	t.Helper()
	if e.External() || e.scale.clusterAddrs != nil {
		t.Skipf("the cluster's fault controls need the harness's own servers; unset %s, %s and %s", EnvMySQLDSN, EnvRedisAddr, EnvRedisCluster)
	}
	c, err := e.startCluster()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Sentinel returns the binary's shared Sentinel setup, starting it on first
// use; Main closes it. With external servers it skips the test, like Cluster.
func (e *Env) Sentinel(t testing.TB) *Sentinel {
	t.Helper()
	if e.External() || e.scale.sentinelAddrs != nil {
		t.Skipf("the sentinels' fault controls need the harness's own servers; unset %s, %s and %s", EnvMySQLDSN, EnvRedisAddr, EnvRedisSentinel)
	}
	s, err := e.startSentinel()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// NewRedisOf returns a new client of the given kind, starting the shared
// cluster or sentinels on first use; callers close it. It is for children
// and benchmarks; tests use RedisClientOf. A child (Env.Child) reaches the
// cluster and sentinels its parent had started.
func (e *Env) NewRedisOf(kind RedisKind) (redis.UniversalClient, error) {
	switch kind {
	case KindSingle:
		return e.NewRedis(nil), nil
	case KindCluster:
		if addrs := e.scale.clusterAddrs; addrs != nil {
			return redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs}), nil
		}
		if e.External() {
			return nil, fmt.Errorf("%w: no Redis Cluster; set %s", errNotThere, EnvRedisCluster)
		}
		c, err := e.startCluster()
		if err != nil {
			return nil, err
		}
		return c.Client(nil), nil
	case KindSentinel:
		if addrs := e.scale.sentinelAddrs; addrs != nil {
			return redis.NewFailoverClient(&redis.FailoverOptions{MasterName: e.scale.sentinelName, SentinelAddrs: addrs}), nil
		}
		if e.External() {
			return nil, fmt.Errorf("%w: no Sentinel; set %s", errNotThere, EnvRedisSentinel)
		}
		s, err := e.startSentinel()
		if err != nil {
			return nil, err
		}
		return s.Client(nil), nil
	case KindTLS:
		if e.External() {
			return nil, fmt.Errorf("%w: no TLS Redis", errNotThere)
		}
		r, err := e.startTLS()
		if err != nil {
			return nil, err
		}
		return redis.NewClient(&redis.Options{Addr: r.TLSAddr(), TLSConfig: r.TLS.ClientConfig()}), nil
	}
	return nil, fmt.Errorf("testenv: unknown Redis kind %q; want one of %v", kind, knownKinds())
}

// RedisClientOf returns a client of the given kind, closed at the end of
// the test. With external servers that do not offer the kind, it skips the
// test and names the variable to set.
func (e *Env) RedisClientOf(t testing.TB, kind RedisKind) redis.UniversalClient {
	t.Helper()
	c, err := e.NewRedisOf(kind)
	if errors.Is(err, errNotThere) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// ClusterClient returns a client of the shared cluster (or of the one named
// by CACHEASIDE_REDIS_CLUSTER), closed at the end of the test.
func (e *Env) ClusterClient(t testing.TB) *redis.ClusterClient {
	t.Helper()
	return e.RedisClientOf(t, KindCluster).(*redis.ClusterClient)
}

// FailoverClient returns a client that finds the master of the shared
// Sentinel setup (or of the one named by CACHEASIDE_REDIS_SENTINEL) through
// the sentinels, closed at the end of the test.
func (e *Env) FailoverClient(t testing.TB) *redis.Client {
	t.Helper()
	return e.RedisClientOf(t, KindSentinel).(*redis.Client)
}

// ForEachRedis runs fn as a subtest (named for the kind) on every kind of
// Redis deployment: a single server, the shared cluster and the shared
// Sentinel setup, each with a client of its own. CACHEASIDE_REDIS_KINDS
// limits the kinds. The cluster and the sentinels are shared by the tests of
// the binary: take keys from Env.Prefix, which are unique; they are thrown
// away with the servers.
func (e *Env) ForEachRedis(t *testing.T, fn func(t *testing.T, kind RedisKind, rdb redis.UniversalClient)) {
	t.Helper()
	kinds, err := selectedKinds()
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range kinds {
		t.Run(string(kind), func(t *testing.T) {
			fn(t, kind, e.RedisClientOf(t, kind))
		})
	}
}

func selectedKinds() ([]RedisKind, error) {
	v := os.Getenv(EnvRedisKinds)
	if v == "" {
		return RedisKinds(), nil
	}
	var kinds []RedisKind
	for name := range strings.SplitSeq(v, ",") {
		k := RedisKind(strings.TrimSpace(name))
		if !slices.Contains(knownKinds(), k) {
			return nil, fmt.Errorf("testenv: %s=%q: unknown kind %q; want some of %v", EnvRedisKinds, v, k, knownKinds())
		}
		kinds = append(kinds, k)
	}
	return kinds, nil
}
