package lock

import (
	"context"
	"math/rand/v2"
	"time"
)

// RetryStrategy decides how Obtain waits for a lock that another holder has.
// Obtain calls Waits once per call and keeps the returned func to itself, so
// all per-call state lives there: one strategy value serves any number of
// concurrent Obtain calls without sharing anything mutable between them.
type RetryStrategy interface {
	// Waits starts the waits of one Obtain call. Each call of the returned
	// func gives the pause before the next attempt, or false to give up.
	Waits() func() (wait time.Duration, ok bool)
}

// NoRetry returns a RetryStrategy that makes a single attempt, as TryObtain does.
func NoRetry() RetryStrategy { return noRetry{} }

type noRetry struct{}

func (noRetry) Waits() func() (time.Duration, bool) {
	return func() (time.Duration, bool) { return 0, false }
}

// Backoff is a RetryStrategy of jittered exponential waits. The nominal wait
// starts at Min and doubles after each attempt up to Max; each actual wait is
// drawn uniformly from the upper half of the nominal one ("equal jitter"), so
// waiters that collided once spread out, yet none retries in a hot loop.
// The zero value is ready to use.
type Backoff struct {
	// Min is the first nominal wait. Default: 10ms.
	Min time.Duration
	// Max caps the nominal wait; a value below Min counts as Min. Default: 250ms.
	Max time.Duration
	// Limit bounds the total time spent waiting; Obtain makes one last
	// attempt when it is used up and then returns ErrNotObtained.
	// Default: 0, no limit besides the context passed to Obtain.
	Limit time.Duration
}

// Waits implements RetryStrategy.
func (b Backoff) Waits() func() (time.Duration, bool) {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = 10 * time.Millisecond
	}
	if hi <= 0 {
		hi = 250 * time.Millisecond
	}
	hi = max(hi, lo)
	nominal, waited := lo, time.Duration(0)
	return func() (time.Duration, bool) {
		if b.Limit > 0 && waited >= b.Limit {
			return 0, false
		}
		wait := nominal/2 + rand.N(nominal/2+1)
		nominal = min(2*nominal, hi)
		if b.Limit > 0 {
			wait = min(wait, b.Limit-waited)
		}
		waited += wait
		return wait, true
	}
}

// pause sleeps between the attempts of one retry loop on a single timer,
// created on first use. The loop defers stop.
type pause struct{ timer *time.Timer }

// sleep waits for d, or until ctx ends; it reports whether d passed.
func (p *pause) sleep(ctx context.Context, d time.Duration) bool {
	if p.timer == nil {
		p.timer = time.NewTimer(d)
	} else {
		p.timer.Reset(d)
	}
	select {
	case <-ctx.Done():
		return false
	case <-p.timer.C:
		return true
	}
}

func (p *pause) stop() {
	if p.timer != nil {
		p.timer.Stop()
	}
}
