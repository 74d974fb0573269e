package testenv_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// failoverTimes kills the master that serves key through kill, while a
// client writes to key without pause, and measures how long the client's
// writes fail (takeover: from the first failed write to the next one that
// succeeds) and how long until the old master has rejoined as a synced
// replica (recovery: from the first failed write until kill returns).
func failoverTimes(b *testing.B, c redis.UniversalClient, key string, kill func(ctx context.Context) error) {
	ctx := context.Background()
	var takeover, recovery time.Duration
	for b.Loop() {
		done := make(chan error, 1)
		go func() { done <- kill(ctx) }()
		var failed, killed time.Time
		var killErr error
		for {
			wctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
			err := c.Set(wctx, key, "v", 0).Err()
			cancel()
			if err != nil && failed.IsZero() {
				failed = time.Now()
			}
			if err == nil && !failed.IsZero() {
				takeover += time.Since(failed)
				break
			}
			time.Sleep(time.Millisecond) // leave the failover the CPU
			if killed.IsZero() {
				select {
				case killErr = <-done:
					killed = time.Now()
					if killErr == nil && failed.IsZero() {
						b.Fatal("the failover ended before any write failed")
					}
				default:
				}
			}
		}
		if killed.IsZero() {
			killErr = <-done
			killed = time.Now()
		}
		if killErr != nil {
			b.Fatal(killErr)
		}
		recovery += killed.Sub(failed)
	}
	b.ReportMetric(float64(takeover.Milliseconds())/float64(b.N), "takeover-ms/op")
	b.ReportMetric(float64(recovery.Milliseconds())/float64(b.N), "recovery-ms/op")
}

// BenchmarkClusterKillMaster measures a failover of the cluster's master of
// one key after SIGKILL, as a ClusterClient sees it. Run it with
// -benchtime=3x: each failover takes seconds.
func BenchmarkClusterKillMaster(b *testing.B) {
	cl := env.Cluster(b)
	c := cl.Client(&redis.ClusterOptions{MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	defer c.Close()
	key := env.Prefix(b) + "k"
	failoverTimes(b, c, key, func(ctx context.Context) error {
		m, err := cl.MasterOf(ctx, key)
		if err != nil {
			return err
		}
		_, err = cl.KillMaster(ctx, m)
		return err
	})
}

// BenchmarkSentinelKillMaster measures a failover of the Sentinel setup's
// master after SIGKILL, as a failover client sees it.
func BenchmarkSentinelKillMaster(b *testing.B) {
	s := env.Sentinel(b)
	c := s.Client(&redis.FailoverOptions{MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	defer c.Close()
	key := env.Prefix(b) + "k"
	failoverTimes(b, c, key, func(ctx context.Context) error {
		_, err := s.KillMaster(ctx)
		return err
	})
}
