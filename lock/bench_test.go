package lock_test

import (
	"context"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside/lock"
)

// BenchmarkObtainRelease measures one lock round trip (take and give back)
// against the raw go-redis commands it replaces, in the same run on the same
// Redis: SET NX PX + DEL, which cannot tell its own lock from another's.
func BenchmarkObtainRelease(b *testing.B) {
	ctx := context.Background()
	rdb := env.RedisClient(b)
	key := env.Prefix(b) + "lock"

	b.Run("lock/TryObtain+Release", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			l, err := lock.TryObtain(ctx, rdb, key, time.Minute)
			if err != nil {
				b.Fatal(err)
			}
			if err := l.Release(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("raw/SETNX+DEL", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ok, err := rdb.SetNX(ctx, key, "token", time.Minute).Result()
			if err != nil || !ok {
				b.Fatal(ok, err)
			}
			if err := rdb.Del(ctx, key).Err(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkRefresh measures the token-checked refresh against a raw PEXPIRE.
func BenchmarkRefresh(b *testing.B) {
	ctx := context.Background()
	rdb := env.RedisClient(b)
	key := env.Prefix(b) + "lock"
	l, err := lock.TryObtain(ctx, rdb, key, time.Minute)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Release(ctx)

	b.Run("lock/Refresh", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := l.Refresh(ctx, time.Minute); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("raw/PEXPIRE", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := rdb.PExpire(ctx, key, time.Minute).Err(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
