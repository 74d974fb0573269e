package bloom_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/bloom"
	"github.com/cacheaside/cacheaside/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	testenv.Main(m, &env, testenv.Children{"adder": adderChild})
}

// fastOpts are Options with short intervals, so that rebuilds and local
// copies settle within a test.
func fastOpts(n uint) *bloom.Options {
	return &bloom.Options{
		ExpectedItems:     n,
		FalsePositiveRate: 0.01,
		ParamsRefresh:     50 * time.Millisecond,
		DropDelay:         100 * time.Millisecond,
	}
}

// newFilter returns a filter on its own client under the test's prefix,
// deleted at the end of the test.
func newFilter(t testing.TB, key string, opts *bloom.Options) (*bloom.Filter, *redis.Client) {
	t.Helper()
	rdb := env.RedisClient(t)
	f := bloom.New(rdb, key, opts)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = f.Delete(ctx)
	})
	return f, rdb
}

// newLocalPair returns two filters on key with fastOpts(n): f asks Redis,
// local keeps a local copy that Run keeps live until the end of the test.
func newLocalPair(t testing.TB, key string, n uint) (f, local *bloom.Filter, rdb *redis.Client) {
	t.Helper()
	f, rdb = newFilter(t, key, fastOpts(n))
	opts := fastOpts(n)
	opts.Local = true
	local, _ = newFilter(t, key, opts)
	runLocal(t, local)
	return f, local, rdb
}

// runLocal runs f's local copy until the end of the test and waits until it is live.
func runLocal(t testing.TB, f *bloom.Filter) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	require.Eventually(t, func() bool { return f.Stats().Live }, 10*time.Second, 5*time.Millisecond, "local copy never went live")
}
