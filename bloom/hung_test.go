package bloom_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"

	"github.com/cacheaside/cacheaside/bloom"
	"github.com/cacheaside/cacheaside/internal/testenv"
)

// A lookup that the local copy does not answer gives up on a Redis that
// accepts connections and never answers after Options.LookupTimeout, and
// answers "may contain"; the lookups after it fail open at once. Without
// the bound, the first lookup of a caller without a deadline waits for the
// client's ReadTimeout and retries: seconds.
func TestLookupGivesUpOnHungRedis(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: testenv.HungRedis(t), ContextTimeoutEnabled: true})
	t.Cleanup(func() { rdb.Close() })
	f := bloom.New(rdb, "hung:bloom", &bloom.Options{LookupTimeout: 50 * time.Millisecond})

	for i := range 3 {
		answered := make(chan bool, 1)
		go func() { answered <- f.MayContain(context.Background(), "user:1") }()
		select {
		case ok := <-answered:
			assert.True(t, ok, "lookup %d fails open", i)
		case <-time.After(2 * time.Second): // far above LookupTimeout, below the client's 3 s ReadTimeout
			t.Fatalf("lookup %d still waits on the hung Redis", i)
		}
	}
	assert.Equal(t, uint64(3), f.Stats().FailOpen)
}
