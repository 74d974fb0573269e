package lock_test

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/lock"
)

func TestBackoff(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		name     string
		b        lock.Backoff
		nominal  []time.Duration // nominal waits; each actual wait is in [n/2, n]
		giveUp   bool            // the sequence ends after the nominal waits
		totalMax time.Duration
	}{
		{name: "defaults", b: lock.Backoff{}, nominal: []time.Duration{10 * ms, 20 * ms, 40 * ms, 80 * ms, 160 * ms, 250 * ms, 250 * ms, 250 * ms}},
		{name: "doubles to max", b: lock.Backoff{Min: ms, Max: 5 * ms}, nominal: []time.Duration{ms, 2 * ms, 4 * ms, 5 * ms, 5 * ms}},
		{name: "max below min", b: lock.Backoff{Min: 8 * ms, Max: ms}, nominal: []time.Duration{8 * ms, 8 * ms, 8 * ms}},
		{name: "only min", b: lock.Backoff{Min: 300 * ms}, nominal: []time.Duration{300 * ms, 300 * ms}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			next := tc.b.Waits()
			for i, n := range tc.nominal {
				w, ok := next()
				require.True(t, ok, "wait %d", i)
				assert.GreaterOrEqual(t, w, n/2, "wait %d", i)
				assert.LessOrEqual(t, w, n, "wait %d", i)
			}
		})
	}
}

func TestBackoffLimit(t *testing.T) {
	for _, limit := range []time.Duration{time.Nanosecond, time.Millisecond, 35 * time.Millisecond, time.Second} {
		next := lock.Backoff{Min: time.Millisecond, Max: 10 * time.Millisecond, Limit: limit}.Waits()
		var total time.Duration
		n := 0
		for {
			w, ok := next()
			if !ok {
				break
			}
			require.Positive(t, w)
			total += w
			n++
			require.Less(t, n, 10000, "the sequence must end")
		}
		assert.Equal(t, limit, total, "the waits add up to the limit exactly (limit %v)", limit)
	}
}

func TestBackoffSharesNoState(t *testing.T) {
	b := lock.Backoff{Min: 64 * time.Millisecond, Max: time.Second, Limit: time.Hour}
	first := b.Waits()
	for range 5 {
		first()
	}
	w, _ := first()
	assert.GreaterOrEqual(t, w, 500*time.Millisecond, "the first sequence has grown")
	w, _ = b.Waits()()
	assert.LessOrEqual(t, w, 64*time.Millisecond, "a new call starts from Min")

	// One value used by many goroutines at once: each sequence is its own
	// (the race detector checks there is nothing shared to race on).
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			next := b.Waits()
			w, ok := next()
			assert.True(t, ok)
			assert.LessOrEqual(t, w, 64*time.Millisecond)
		})
	}
	wg.Wait()
}

func TestNoRetry(t *testing.T) {
	_, ok := lock.NoRetry().Waits()()
	assert.False(t, ok)
}
