package cache

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestJittered(t *testing.T) {
	for _, tc := range []struct {
		jitter float64
		lo, hi time.Duration
	}{
		{0, 90 * time.Second, 100 * time.Second}, // default 0.1
		{0.5, 50 * time.Second, 100 * time.Second},
		{NoJitter, 100 * time.Second, 100 * time.Second},
		{1, 0, 100 * time.Second},
	} {
		c := newOffline(t, &Options{Jitter: tc.jitter})
		for range 1000 {
			d := c.jittered(100 * time.Second)
			require.True(t, d >= max(tc.lo, time.Millisecond) && d <= tc.hi, "jitter %v: %v", tc.jitter, d)
			require.Zero(t, d%time.Millisecond)
		}
	}
}

func TestBackoff(t *testing.T) {
	b := backoff{max: 2 * time.Millisecond}
	var prevCap time.Duration
	for range 20 {
		d := b.next()
		assert.True(t, d >= b.cur/2 && d <= b.cur, "%v not in the upper half of %v", d, b.cur)
		assert.LessOrEqual(t, b.cur, 2*time.Millisecond)
		assert.GreaterOrEqual(t, b.cur, prevCap)
		prevCap = b.cur
	}
	assert.Equal(t, 2*time.Millisecond, b.cur)
}

func TestRefreshDue(t *testing.T) {
	c := newOffline(t, &Options{EarlyRefresh: 1})
	now := nowMs()
	expired := header{filled: now - 10_000, ttl: 5_000, loadDur: 10}
	assert.True(t, c.refreshDue(&expired))
	far := header{filled: now, ttl: 3_600_000, loadDur: 10}
	n := 0
	for range 1000 {
		if c.refreshDue(&far) {
			n++
		}
	}
	assert.Zero(t, n, "an hour from expiry a 10ms load never refreshes (needs -ln(U) > 360000)")
	// 10s before expiry with delta 10s: P = exp(-1), about 368 of 1000
	// (a stall of a few ms while looping barely moves it).
	near := header{filled: now - 3_590_000, ttl: 3_600_000, loadDur: 10_000}
	n = 0
	for range 1000 {
		if c.refreshDue(&near) {
			n++
		}
	}
	assert.InDelta(t, 368, n, 100)
}

// newOffline returns a Cache on a client that is never used.
func newOffline(t *testing.T, o *Options) *Cache {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { rdb.Close() })
	c, err := New(rdb, o)
	require.NoError(t, err)
	return c
}

// A bad setting is an error from New that names it, never a default in
// silence.
func TestValidate(t *testing.T) {
	assert.NoError(t, (*Options)(nil).Validate())
	assert.NoError(t, (&Options{}).Validate())
	assert.NoError(t, (&Options{Jitter: NoJitter, RedisTimeout: -1}).Validate())
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer rdb.Close()
	for name, o := range map[string]Options{
		"TTL":              {TTL: -time.Second},
		"LeaseTTL":         {LeaseTTL: time.Microsecond},
		"EarlyRefresh":     {EarlyRefresh: -1},
		"BreakerThreshold": {BreakerThreshold: -1},
		"MaxDegradedLoads": {MaxDegradedLoads: -2},
		"Jitter":           {Jitter: math.NaN()},
		"Jitter ":          {Jitter: 1.5},
		"Jitter  ":         {Jitter: -0.5},
		"EarlyRefresh ":    {EarlyRefresh: math.Inf(1)},
	} {
		name = strings.TrimSpace(name)
		err := o.Validate()
		require.Error(t, err, name)
		assert.Contains(t, err.Error(), "Options."+name)
		c, err := New(rdb, &o)
		assert.Nil(t, c)
		require.Error(t, err, name)
		assert.Contains(t, err.Error(), "Options."+name)
	}
}

func TestBreaker(t *testing.T) {
	var b breaker
	const cooldown = 100 * time.Millisecond
	b.init(3, cooldown, slog.New(slog.DiscardHandler))
	allowed := func() bool { ok, _ := b.allow(); return ok }
	down := errors.New("dial tcp: connection refused")
	for range 2 {
		b.failure(down)
	}
	b.success()
	for range 2 {
		b.failure(down)
	}
	assert.True(t, allowed(), "failures must be consecutive")
	b.failure(down)
	assert.False(t, allowed(), "open after the threshold")
	time.Sleep(cooldown + 10*time.Millisecond)
	assert.True(t, allowed(), "one probe after the cooldown")
	assert.False(t, allowed(), "only one")
	b.failure(down)
	assert.False(t, allowed(), "a failed probe opens it again")
	time.Sleep(cooldown + 10*time.Millisecond)
	ok, probe := b.allow()
	assert.True(t, ok)
	assert.NotZero(t, probe)
	b.endProbe(0)
	assert.False(t, allowed(), "a call that is not the probe cannot end it")
	b.endProbe(probe)
	ok, probe2 := b.allow()
	assert.True(t, ok, "an abandoned probe lets another probe")
	b.endProbe(probe)
	assert.False(t, allowed(), "an earlier probe cannot end a later one")
	b.endProbe(probe2)
	b.success()
	assert.False(t, b.open())
	ok, probe = b.allow()
	assert.True(t, ok)
	assert.Zero(t, probe, "no probe while closed")

	assert.True(t, unavailable(down))
	assert.False(t, unavailable(redis.Nil))
	assert.False(t, unavailable(nil))
}

// A call cancelled while the breaker is half-open ends the probe only if it
// is the probe.
func TestBreakerCancelledCallKeepsProbe(t *testing.T) {
	c := newOffline(t, &Options{BreakerThreshold: 1, BreakerCooldown: time.Millisecond})
	c.breaker.failure(errors.New("dial tcp: connection refused"))
	time.Sleep(2 * time.Millisecond)
	ok, probe := c.breaker.allow()
	require.True(t, ok)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	c.redisResult(cancelled, context.Canceled) // a call that started earlier gives up
	ok, _ = c.breaker.allow()
	assert.False(t, ok, "still one probe")
	c.redisResult(cancelled, context.Canceled) // the probe gives up
	c.breaker.endProbe(probe)
	ok, _ = c.breaker.allow()
	assert.True(t, ok, "then another call probes")
}

func TestLeasePollFloor(t *testing.T) {
	c := newOffline(t, &Options{LeasePoll: time.Nanosecond})
	assert.Equal(t, minLeasePoll, c.cfg.LeasePoll)
	assert.NoError(t, (&Options{LeasePoll: time.Nanosecond}).Validate())
	b := backoff{max: time.Nanosecond}
	for range 10 {
		assert.GreaterOrEqual(t, b.next(), minLeasePoll/2, "no pause shorter than half the floor")
	}
}

// Clients that would read around an invalidation are refused, naming why.
func TestNewRefusesUnsafeClients(t *testing.T) {
	ring := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": "127.0.0.1:1", "b": "127.0.0.1:2"}})
	defer ring.Close()
	_, err := New(ring, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "Ring")

	for _, o := range []redis.ClusterOptions{{ReadOnly: true}, {RouteByLatency: true}, {RouteRandomly: true}} {
		o.Addrs = []string{"127.0.0.1:1"}
		cc := redis.NewClusterClient(&o)
		_, err := New(cc, nil)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "redis.ClusterOptions.")
		cc.Close()
	}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}})
	defer cc.Close()
	_, err = New(cc, nil)
	assert.NoError(t, err, "a ClusterClient that reads from masters")
	_, err = New(nil, nil)
	assert.Error(t, err)
}
