package invalidate_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/invalidate"
)

// benchStack is a stack whose invalidator also reports to onApplied.
func benchStack(b *testing.B, onApplied func(invalidate.Applied)) *stack {
	b.Helper()
	return newStack(b, stackOptions{inv: &invalidate.Options{OnApplied: onApplied}})
}

// BenchmarkCommitToAck commits single-row updates at a steady 1,000 and
// 5,000 commits/s from 8 connections and reports the time from each COMMIT to
// Redis acknowledging its invalidation, p50 and p99, measured two ways:
// from the moment the statement was sent (an upper bound, it includes the
// statement's own execution) and from the moment MariaDB answered it (a
// lower bound; an acknowledgement that beat the answer counts as 0).
// BenchmarkRawRedisDel is the floor: one DEL round trip on the same Redis.
func BenchmarkCommitToAck(b *testing.B) {
	for _, rate := range []int{1000, 5000} {
		b.Run(fmt.Sprintf("rate=%d", rate), func(b *testing.B) { commitToAck(b, rate) })
	}
}

func commitToAck(b *testing.B, rate int) {
	const rows = 1000
	n := b.N
	sent := make([]time.Time, n+1)
	answered := make([]time.Time, n+1)
	acked := make([]time.Time, n+1)
	var count atomic.Int64
	done := make(chan struct{})
	var mu sync.Mutex
	s := benchStack(b, func(a invalidate.Applied) {
		for _, r := range a.Tx.Rows {
			v, ok := r.After["version"].(int64)
			if !ok || v < 1 || v > int64(n) {
				continue
			}
			mu.Lock()
			acked[v] = a.AckedAt
			mu.Unlock()
			if count.Add(1) == int64(n) {
				close(done)
			}
		}
	})
	var vals []string
	for id := 1; id <= rows; id++ {
		vals = append(vals, fmt.Sprintf("(%d, 'u%d@x.io', 'n', 0)", id, id))
	}
	_, err := s.db.Exec("INSERT INTO users VALUES " + strings.Join(vals, ","))
	require.NoError(b, err)
	s.fence(b)

	b.ResetTimer()
	var next atomic.Int64
	tick := time.Second / time.Duration(rate)
	start := time.Now()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			conn, err := s.db.Conn(context.Background())
			if err != nil {
				b.Error(err)
				return
			}
			defer conn.Close()
			for {
				v := next.Add(1)
				if v > int64(n) {
					return
				}
				if d := time.Until(start.Add(time.Duration(v) * tick)); d > 0 {
					time.Sleep(d)
				}
				t0 := time.Now()
				if _, err := conn.ExecContext(context.Background(), "UPDATE users SET version = ? WHERE id = ?", v, 1+v%rows); err != nil {
					b.Error(err)
					return
				}
				mu.Lock()
				sent[v], answered[v] = t0, time.Now()
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		b.Fatalf("only %d of %d invalidations acknowledged", count.Load(), n)
	}
	b.StopTimer()
	elapsed := time.Since(start)
	mu.Lock()
	defer mu.Unlock()
	fromSent := make([]time.Duration, 0, n)
	fromAnswer := make([]time.Duration, 0, n)
	for v := 1; v <= n; v++ {
		fromSent = append(fromSent, acked[v].Sub(sent[v]))
		fromAnswer = append(fromAnswer, max(0, acked[v].Sub(answered[v])))
	}
	slices.Sort(fromSent)
	slices.Sort(fromAnswer)
	b.ReportMetric(float64(fromSent[n/2].Microseconds()), "p50-sent-µs")
	b.ReportMetric(float64(fromSent[n*99/100].Microseconds()), "p99-sent-µs")
	b.ReportMetric(float64(fromAnswer[n/2].Microseconds()), "p50-commit-µs")
	b.ReportMetric(float64(fromAnswer[n*99/100].Microseconds()), "p99-commit-µs")
	b.ReportMetric(float64(n)/elapsed.Seconds(), "commits/s")
	st := s.inv.Stats() // receipt from the binlog to Redis's acknowledgement
	b.ReportMetric(float64(st.ApplyP50.Microseconds()), "p50-apply-µs")
	b.ReportMetric(float64(st.ApplyP99.Microseconds()), "p99-apply-µs")
}

// BenchmarkRawRedisDel is one DEL round trip: the floor of any invalidation.
func BenchmarkRawRedisDel(b *testing.B) {
	rdb := env.NewRedis(nil)
	defer rdb.Close()
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if err := rdb.Del(ctx, fmt.Sprint("bench:del:", i)).Err(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkKeysPerSecond streams transactions that each update 1,000 rows
// (2,000 keys: id and email) as fast as MariaDB commits them and reports
// the keys per second the invalidator gets acknowledged by Redis.
func BenchmarkKeysPerSecond(b *testing.B) {
	var keys atomic.Int64
	var txs atomic.Int64
	done := make(chan struct{})
	s := benchStack(b, func(a invalidate.Applied) {
		keys.Add(int64(len(a.Keys)))
		if len(a.Tx.Rows) >= 1000 && !a.Tx.More && txs.Add(1) == int64(b.N) {
			close(done)
		}
	})
	var vals []string
	for id := 1; id <= 1000; id++ {
		vals = append(vals, fmt.Sprintf("(%d, 'u%d@x.io', 'n', 0)", id, id))
	}
	_, err := s.db.Exec("INSERT INTO users VALUES " + strings.Join(vals, ","))
	require.NoError(b, err)
	s.fence(b)
	keys.Store(0)

	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		_, err := s.db.Exec("UPDATE users SET version = version + 1")
		require.NoError(b, err)
	}
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		b.Fatalf("only %d of %d transactions acknowledged", txs.Load(), b.N)
	}
	b.StopTimer()
	b.ReportMetric(float64(keys.Load())/time.Since(start).Seconds(), "keys/s")
}
