package cacheasideotel_test

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/cacheaside/cacheaside/binlog"
	"github.com/cacheaside/cacheaside/bloom"
	"github.com/cacheaside/cacheaside/cache"
	"github.com/cacheaside/cacheaside/extra/cacheasideotel"
	"github.com/cacheaside/cacheaside/internal/testenv"
	"github.com/cacheaside/cacheaside/invalidate"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &env, nil) }

// The instruments report what the parts did, read from a running cache,
// filter and invalidator on the harness's servers.
func TestMetricsReportRunningParts(t *testing.T) {
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

	reader := sdkmetric.NewManualReader()
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = provider.Shutdown(context.Background()) })
	m, err := cacheasideotel.New(provider.Meter("test"))
	require.NoError(t, err)
	m.AddCache("users", c)
	m.AddInvalidator("main", inv)
	m.AddFilter("users", filter)

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
	_, err = cache.Fetch(ctx, c, prefix+"user:2", load)
	require.ErrorIs(t, err, cache.ErrNotFound)

	got := collect(t, reader)
	assert.Equal(t, 2.0, got["cacheaside.cache.hits cacheaside.cache=users"])
	assert.Equal(t, 1.0, got["cacheaside.cache.loads cacheaside.cache=users"])
	assert.Equal(t, 1.0, got["cacheaside.cache.filter_rejects cacheaside.cache=users"])
	assert.Equal(t, 1.0, got["cacheaside.invalidator.leader cacheaside.source=main"])
	assert.GreaterOrEqual(t, got["cacheaside.invalidator.transactions cacheaside.source=main"], 1.0)
	assert.Contains(t, got, "cacheaside.invalidator.lag.p99 cacheaside.source=main")
	assert.GreaterOrEqual(t, got["cacheaside.bloom.added cacheaside.filter=users"], 1.0)
	assert.Equal(t, 4.0, got["cacheaside.bloom.lookups cacheaside.filter=users"])

	require.NoError(t, m.Close())
	assert.NotContains(t, collect(t, reader), "cacheaside.cache.hits cacheaside.cache=users", "nothing is observed after Close")
}

// collect reads every data point as "name attr=value" -> value.
func collect(t *testing.T, r *sdkmetric.ManualReader) map[string]float64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, r.Collect(context.Background(), &rm))
	out := map[string]float64{}
	put := func(name string, set attribute.Set, v float64) {
		key := name
		for _, kv := range set.ToSlice() {
			key += " " + string(kv.Key) + "=" + kv.Value.String()
		}
		out[key] = v
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					put(m.Name, p.Attributes, float64(p.Value))
				}
			case metricdata.Gauge[float64]:
				for _, p := range d.DataPoints {
					put(m.Name, p.Attributes, p.Value)
				}
			}
		}
	}
	return out
}
