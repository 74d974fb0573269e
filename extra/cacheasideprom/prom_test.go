package cacheasideprom_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/binlog"
	"github.com/cacheaside/cacheaside/bloom"
	"github.com/cacheaside/cacheaside/cache"
	"github.com/cacheaside/cacheaside/extra/cacheasideprom"
	"github.com/cacheaside/cacheaside/internal/testenv"
	"github.com/cacheaside/cacheaside/invalidate"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &env, nil) }

// The collector reports what the parts did, read from a running cache,
// filter and invalidator on the harness's servers.
func TestCollectorReportsRunningParts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db, schema := env.NewDatabase(t)
	_, err := db.Exec("CREATE TABLE users (id BIGINT PRIMARY KEY, name VARCHAR(64) NOT NULL)")
	require.NoError(t, err)
	rdb := env.RedisClient(t)
	prefix := env.Prefix(t)

	filter := bloom.New(rdb, prefix+"bloom", &bloom.Options{ExpectedItems: 1000})
	c, err := cache.New(rdb, &cache.Options{Prefix: prefix, Filter: filter})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	rules, err := invalidate.NewRules(invalidate.Rule{Schema: schema, Table: "users", Keys: []string{prefix + "user:{id}"}})
	require.NoError(t, err)
	cfg := env.MySQLConfig("")
	stream, err := binlog.New(binlog.Config{Addr: cfg.Addr, User: cfg.User, Password: cfg.Passwd, ServerID: 1000 + rand.Uint32N(1<<30)}, nil)
	require.NoError(t, err)
	applied := make(chan invalidate.Applied, 16)
	inv := invalidate.New(stream, c, rdb, rules, &invalidate.Options{
		Filter:      filter,
		LeaderKey:   prefix + "leader",
		Checkpoints: binlog.NewRedisCheckpoints(rdb, prefix+"checkpoint"),
		OnApplied:   func(a invalidate.Applied) { applied <- a },
	})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- inv.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-done })

	col := cacheasideprom.New(&cacheasideprom.Options{ConstLabels: prometheus.Labels{"service": "test"}})
	col.AddCache("users", c)
	col.AddInvalidator("main", inv)
	col.AddFilter("users", filter)
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(col))

	require.Eventually(t, func() bool { return inv.Stats().Leader }, 30*time.Second, 10*time.Millisecond)
	// Warm once the invalidator leads: a first start deletes the filter.
	require.NoError(t, filter.Warm(ctx, bloom.Scan(ctx, db, prefix+"user:", "SELECT id FROM users")))
	_, err = db.Exec("INSERT INTO users VALUES (1, 'ann')")
	require.NoError(t, err)
	select {
	case <-applied:
	case <-ctx.Done():
		t.Fatal("the insert was never applied")
	}
	load := func(ctx context.Context) (string, error) { return "ann", nil }
	for range 3 {
		_, err := cache.Fetch(ctx, c, prefix+"user:1", load)
		require.NoError(t, err)
	}
	_, err = cache.Fetch(ctx, c, prefix+"user:2", load) // never inserted: the filter answers
	require.ErrorIs(t, err, cache.ErrNotFound)

	got := scrape(t, reg)
	assert.Equal(t, 2.0, got[`cacheaside_cache_hits_total{cache="users",service="test"}`])
	assert.Equal(t, 1.0, got[`cacheaside_cache_loads_total{cache="users",service="test"}`])
	assert.Equal(t, 1.0, got[`cacheaside_cache_filter_rejects_total{cache="users",service="test"}`])
	assert.Equal(t, 0.0, got[`cacheaside_cache_breaker_open{cache="users",service="test"}`])
	assert.Equal(t, 1.0, got[`cacheaside_invalidator_leader{service="test",source="main"}`])
	assert.GreaterOrEqual(t, got[`cacheaside_invalidator_transactions_total{service="test",source="main"}`], 1.0)
	assert.GreaterOrEqual(t, got[`cacheaside_invalidator_keys_total{service="test",source="main"}`], 1.0)
	assert.Contains(t, got, `cacheaside_invalidator_lag_p99_seconds{service="test",source="main"}`)
	assert.GreaterOrEqual(t, got[`cacheaside_bloom_added_total{filter="users",service="test"}`], 1.0)
	assert.Equal(t, 4.0, got[`cacheaside_bloom_lookups_total{filter="users",service="test"}`])

	problems, err := testutil.CollectAndLint(col)
	require.NoError(t, err)
	assert.Empty(t, problems, "metric names and help follow Prometheus's conventions")
}

// Parts added under different names are told apart by their label.
func TestCollectorManyParts(t *testing.T) {
	rdb := env.RedisClient(t)
	prefix := env.Prefix(t)
	col := cacheasideprom.New(&cacheasideprom.Options{Namespace: "svc"})
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(col))
	for i, name := range []string{"users", "products"} {
		c, err := cache.New(rdb, &cache.Options{Prefix: prefix + name + ":"})
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		col.AddCache(name, c)
		for range i + 1 {
			_, err := cache.Fetch(context.Background(), c, prefix+name+":1", func(context.Context) (int, error) { return 1, nil })
			require.NoError(t, err)
		}
	}
	got := scrape(t, reg)
	assert.Equal(t, 1.0, got[`svc_cache_misses_total{cache="users"}`])
	assert.Equal(t, 0.0, got[`svc_cache_hits_total{cache="users"}`])
	assert.Equal(t, 1.0, got[`svc_cache_hits_total{cache="products"}`])
}

// scrape gathers reg into "name{label="value",...}" -> value.
func scrape(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	out := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			v := m.GetGauge().GetValue()
			if m.Counter != nil {
				v = m.GetCounter().GetValue()
			}
			out[f.GetName()+"{"+strings.Join(labels, ",")+"}"] = v
		}
	}
	return out
}
