package cache

import (
	"errors"
	"log/slog"
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
		{-1, 100 * time.Second, 100 * time.Second},
		{7, 0, 100 * time.Second},
	} {
		c := New(nil, &Options{Jitter: tc.jitter})
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
	c := New(nil, &Options{EarlyRefresh: 1})
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

func TestValidate(t *testing.T) {
	assert.NoError(t, (*Options)(nil).Validate())
	assert.NoError(t, (&Options{}).Validate())
	for name, o := range map[string]Options{
		"TTL":              {TTL: -time.Second},
		"LeaseTTL":         {LeaseTTL: time.Microsecond},
		"EarlyRefresh":     {EarlyRefresh: -1},
		"BreakerThreshold": {BreakerThreshold: -1},
	} {
		err := o.Validate()
		require.Error(t, err, name)
		assert.Contains(t, err.Error(), name)
		c := New(nil, &o) // replaced by defaults
		assert.Equal(t, 10*time.Minute, c.cfg.TTL)
		assert.Equal(t, 3*time.Second, c.cfg.LeaseTTL)
		assert.Equal(t, 5, c.cfg.BreakerThreshold)
	}
}

func TestBreaker(t *testing.T) {
	var b breaker
	b.init(3, 300*time.Millisecond, slog.New(slog.DiscardHandler))
	down := errors.New("dial tcp: connection refused")
	for range 2 {
		b.failure(down)
	}
	b.success()
	for range 2 {
		b.failure(down)
	}
	assert.True(t, b.allow(), "failures must be consecutive")
	b.failure(down)
	assert.False(t, b.allow(), "open after the threshold")
	time.Sleep(310 * time.Millisecond)
	assert.True(t, b.allow(), "one probe after the cooldown")
	assert.False(t, b.allow(), "only one")
	b.failure(down)
	assert.False(t, b.allow(), "a failed probe opens it again")
	time.Sleep(310 * time.Millisecond)
	assert.True(t, b.allow())
	b.abandon()
	assert.True(t, b.allow(), "an abandoned probe lets another probe")
	b.success()
	assert.False(t, b.open())
	assert.True(t, b.allow())

	assert.True(t, unavailable(down))
	assert.False(t, unavailable(redis.Nil))
	assert.False(t, unavailable(nil))
}
