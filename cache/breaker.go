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
	openUntil atomic.Int64 // Unix ns; 0 = closed
	probing   atomic.Bool
}

func (b *breaker) init(threshold int, cooldown time.Duration, log *slog.Logger) {
	b.threshold, b.cooldown, b.log = int64(threshold), cooldown, log
}

// allow reports whether a call may use Redis now.
func (b *breaker) allow() bool {
	until := b.openUntil.Load()
	if until == 0 {
		return true
	}
	if time.Now().UnixNano() < until {
		return false
	}
	return b.probing.CompareAndSwap(false, true)
}

// open reports whether the breaker is open or half-open.
func (b *breaker) open() bool { return b.openUntil.Load() != 0 }

// success records a call that Redis answered.
func (b *breaker) success() {
	if b.fails.Load() != 0 {
		b.fails.Store(0)
	}
	if b.openUntil.Load() != 0 && b.openUntil.Swap(0) != 0 {
		b.probing.Store(false)
		b.log.Info("cache: Redis answers again; circuit breaker closed")
	}
}

// failure records a call that Redis did not answer.
func (b *breaker) failure(err error) {
	n := b.fails.Add(1)
	if b.probing.Load() || (n >= b.threshold && b.openUntil.Load() == 0) {
		b.openUntil.Store(time.Now().Add(b.cooldown).UnixNano())
		b.probing.Store(false)
		b.log.Warn("cache: Redis unavailable; circuit breaker open, reads go to the loader",
			"failures", n, "cooldown", b.cooldown, "err", err)
	}
}

// abandon records a call whose caller gave up before Redis answered.
func (b *breaker) abandon() { b.probing.Store(false) }

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
		c.breaker.abandon()
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
