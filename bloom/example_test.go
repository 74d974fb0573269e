package bloom_test

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/cacheaside/cacheaside/bloom"
)

// A filter of user keys: warmed from the keys that exist, told of each new
// row, asked before the cache and MySQL.
func Example() {
	ctx := context.Background()
	rdb := env.NewRedis(nil)
	defer rdb.Close()

	f := bloom.New(rdb, "example:users:bloom", &bloom.Options{ExpectedItems: 10_000, FalsePositiveRate: 0.01})
	defer f.Delete(ctx)

	// At start-up every instance may call Warm; one reads the keys.
	existing := []string{"user:1", "user:2", "user:3"}
	if err := f.Warm(ctx, bloom.FromSeq(slices.Values(existing))); err != nil {
		fmt.Println(err)
		return
	}
	// A new row: add its key (the binlog invalidator adds it too).
	if err := f.Add(ctx, "user:4"); err != nil {
		fmt.Println(err)
		return
	}
	for _, key := range []string{"user:1", "user:4", "user:404"} {
		fmt.Println(key, f.MayContain(ctx, key))
	}
	// Output:
	// user:1 true
	// user:4 true
	// user:404 false
}

// Warm reads the keys from a MySQL table scan and reports its progress.
func ExampleScan() {
	ctx := context.Background()
	db := env.Admin()
	for _, q := range []string{
		"CREATE DATABASE example_bloom_scan",
		"CREATE TABLE example_bloom_scan.users (id BIGINT PRIMARY KEY)",
		"INSERT INTO example_bloom_scan.users VALUES (1), (2), (3), (5), (8)",
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			fmt.Println(err)
			return
		}
	}
	defer db.ExecContext(ctx, "DROP DATABASE example_bloom_scan")
	rdb := env.NewRedis(nil)
	defer rdb.Close()

	f := bloom.New(rdb, "example:scan:bloom", &bloom.Options{
		ExpectedItems: 1000,
		ProgressEvery: 2,
		Progress: func(p bloom.Progress) {
			fmt.Printf("read %d keys (done: %v)\n", p.Keys, p.Done)
		},
	})
	defer f.Delete(ctx)
	keys := bloom.Scan(ctx, db, "user:", "SELECT id FROM example_bloom_scan.users")
	if err := f.Warm(ctx, keys); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(f.MayContain(ctx, "user:5"), f.MayContain(ctx, "user:4"))
	// Output:
	// read 2 keys (done: false)
	// read 4 keys (done: false)
	// read 5 keys (done: true)
	// true false
}

// With Options.Local and Run, lookups need no round trip to Redis.
func ExampleFilter_Run() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rdb := env.NewRedis(nil)
	defer rdb.Close()

	f := bloom.New(rdb, "example:local:bloom", &bloom.Options{ExpectedItems: 10_000, Local: true})
	defer f.Delete(context.Background())
	if err := f.Warm(ctx, bloom.FromSeq(slices.Values([]string{"user:1", "user:2"}))); err != nil {
		fmt.Println(err)
		return
	}
	done := make(chan error)
	go func() { done <- f.Run(ctx) }()
	for !f.Stats().Live {
		time.Sleep(time.Millisecond)
	}
	if err := f.Add(ctx, "user:3"); err != nil { // in the local copy before Add returns
		fmt.Println(err)
		return
	}
	fmt.Println(f.MayContain(ctx, "user:3"), f.MayContain(ctx, "user:404"))
	s := f.Stats()
	fmt.Println("answered locally:", s.Local, "of", s.Lookups)
	cancel()
	fmt.Println("Run:", <-done)
	// Output:
	// true false
	// answered locally: 2 of 2
	// Run: <nil>
}

// Rebuild swaps in a new version built from the keys that exist now, so
// deleted keys are forgotten; adds made during the rebuild are kept.
func ExampleFilter_Rebuild() {
	ctx := context.Background()
	rdb := env.NewRedis(nil)
	defer rdb.Close()

	f := bloom.New(rdb, "example:rebuild:bloom", &bloom.Options{ExpectedItems: 10_000, DropDelay: time.Millisecond})
	defer f.Delete(ctx)
	if err := f.Warm(ctx, bloom.FromSeq(slices.Values([]string{"user:1", "user:2"}))); err != nil {
		fmt.Println(err)
		return
	}
	// user:2 was deleted from the table since.
	if err := f.Rebuild(ctx, bloom.FromSeq(slices.Values([]string{"user:1"}))); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(f.MayContain(ctx, "user:1"), f.MayContain(ctx, "user:2"))
	// Output:
	// true false
}

// Check reports an instance whose Options disagree with the filter in Redis.
func ExampleFilter_Check() {
	ctx := context.Background()
	rdb := env.NewRedis(nil)
	defer rdb.Close()

	a := bloom.New(rdb, "example:check:bloom", &bloom.Options{ExpectedItems: 10_000})
	defer a.Delete(ctx)
	fmt.Println(a.Check(ctx))
	if err := a.Warm(ctx, bloom.FromSeq(slices.Values([]string{"user:1"}))); err != nil {
		fmt.Println(err)
		return
	}
	b := bloom.New(rdb, "example:check:bloom", &bloom.Options{ExpectedItems: 50_000})
	fmt.Println(a.Check(ctx))
	fmt.Println(b.Check(ctx))
	fmt.Println(b.MayContain(ctx, "user:404")) // fails open
	// Output:
	// bloom: filter not warmed
	// <nil>
	// bloom: filter example:check:bloom was built with m=95851 k=7 hash=1, Options give m=479253 k=7 hash=1: give every instance the same ExpectedItems and FalsePositiveRate, or Rebuild
	// true
}
