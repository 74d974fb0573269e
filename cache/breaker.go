package cache

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// breaker is a circuit breaker over Redis. After threshold consecutive
// failures it opens for cooldown: reads skip Redis and go to the loader, so
// they stop paying a timeout each. Then one read probes Redis (half-open): a
// success closes the breaker, a failure opens it again.
type breaker struct {
	threshold int64
	cooldown  time.Duration
	log       *slog.Logger

	fails     atomic.Int64
	openUntil atomic.Int64  // Unix ns; 0 = closed
	probe     atomic.Uint64 // the probe under way while half-open; 0 = none
	probes    atomic.Uint64 // numbers the probes
}

func (b *breaker) init(threshold int, cooldown time.Duration, log *slog.Logger) {
	b.threshold, b.cooldown, b.log = int64(threshold), cooldown, log
}

// allow reports whether a call may use Redis now. While half-open it lets
// one call through, the probe, and returns its nonzero token: the call
// passes it to endProbe after its first Redis request, and until then
// every other call is refused.
func (b *breaker) allow() (ok bool, probe uint64) {
	until := b.openUntil.Load()
	if until == 0 {
		return true, 0
	}
	if time.Now().UnixNano() < until || b.probe.Load() != 0 {
		return false, 0
	}
	tok := b.probes.Add(1)
	if !b.probe.CompareAndSwap(0, tok) {
		return false, 0
	}
	return true, tok
}

// endProbe ends the probe whose token is probe, if success or failure has
// not already: its caller gave up before Redis answered, so another call
// may probe. Calls that are not the probe (a zero token, or a probe that
// has been replaced) change nothing.
func (b *breaker) endProbe(probe uint64) {
	if probe != 0 {
		b.probe.CompareAndSwap(probe, 0)
	}
}

// open reports whether the breaker is open or half-open.
func (b *breaker) open() bool { return b.openUntil.Load() != 0 }

// success records a call that Redis answered.
func (b *breaker) success() {
	if b.fails.Load() != 0 {
		b.fails.Store(0)
	}
	if b.openUntil.Load() != 0 && b.openUntil.Swap(0) != 0 {
		b.probe.Store(0)
		b.log.Info("cache: Redis answers again; circuit breaker closed")
	}
}

// failure records a call that Redis did not answer.
func (b *breaker) failure(err error) {
	n := b.fails.Add(1)
	if b.probe.Load() != 0 || (n >= b.threshold && b.openUntil.Load() == 0) {
		b.openUntil.Store(time.Now().Add(b.cooldown).UnixNano())
		b.probe.Store(0)
		b.log.Warn("cache: Redis unavailable; circuit breaker open, reads go to the loader",
			"failures", n, "cooldown", b.cooldown, "err", err)
	}
}

// unavailable reports whether err means Redis could not serve the call, as
// opposed to an answer (even an error answer such as WRONGTYPE).
func unavailable(err error) bool {
	if err == nil || err == redis.Nil {
		return false
	}
	var re redis.Error
	if errors.As(err, &re) {
		msg := re.Error()
		for _, p := range [...]string{"LOADING", "BUSY", "MASTERDOWN", "CLUSTERDOWN", "READONLY", "TRYAGAIN", "NOREPLICAS"} {
			if strings.HasPrefix(msg, p) {
				return true
			}
		}
		return false
	}
	return true
}

// redisResult feeds the outcome of a Redis call into the breaker and the
// stats. ctx is the context the call ran with.
func (c *Cache) redisResult(ctx context.Context, err error) {
	switch {
	case err == nil || err == redis.Nil:
		c.breaker.success()
	case ctx.Err() != nil:
		// The caller gave up: no verdict on Redis. A probe's caller ends
		// its probe (endProbe); nobody else may.
	case unavailable(err):
		c.stats.errors.Add(1)
		c.breaker.failure(err)
		c.log.Debug("cache: Redis call failed", "err", err)
	default:
		c.stats.errors.Add(1)
		c.breaker.success()
		c.log.Warn("cache: Redis refused a call", "err", err)
	}
}

// degradedSlot takes one of Options.MaxDegradedLoads slots, waiting for one
// or for ctx, and returns its release.
func (c *Cache) degradedSlot(ctx context.Context) (func(), error) {
	select {
	case c.sem <- struct{}{}:
		return func() { <-c.sem }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
