package lock_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheaside/cacheaside/lock"
)

func Example() {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: env.RedisAddr()})
	defer rdb.Close()

	// Wait up to 5 seconds for the lock; hold it for at most 30 seconds.
	l, err := lock.Obtain(ctx, rdb, "example:report", 30*time.Second, &lock.Options{
		Retry: lock.Backoff{Limit: 5 * time.Second},
	})
	if errors.Is(err, lock.ErrNotObtained) {
		fmt.Println("another process is writing the report")
		return
	}
	if err != nil {
		fmt.Println("redis:", err)
		return
	}
	defer l.Release(ctx) // releases even if ctx has been cancelled by then

	fmt.Println("writing the report")

	// A second caller finds the lock taken.
	_, err = lock.TryObtain(ctx, rdb, "example:report", 30*time.Second)
	fmt.Println(err)
	// Output:
	// writing the report
	// lock: not obtained
}

func ExampleLock_Refresh() {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: env.RedisAddr()})
	defer rdb.Close()

	l, err := lock.TryObtain(ctx, rdb, "example:job", 10*time.Second)
	if err != nil {
		fmt.Println(err)
		return
	}
	// Extend the lock while the work goes on; a lock that expired in the
	// meantime is never revived, since someone else may have taken it.
	fmt.Println(l.Refresh(ctx, time.Minute))
	fmt.Println(l.Release(ctx))
	fmt.Println(l.Refresh(ctx, time.Minute))
	// Output:
	// <nil>
	// <nil>
	// lock: not held
}

func ExampleElection_Run() {
	rdb := redis.NewClient(&redis.Options{Addr: env.RedisAddr()})
	defer rdb.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Every process of the service runs the same election; one of them
	// runs fn at a time, and another takes over within about TTL when it
	// dies.
	e := lock.NewElection(rdb, "example:invalidator", &lock.ElectionOptions{TTL: 5 * time.Second})
	err := e.Run(ctx, func(ctx context.Context, epoch uint64) error {
		fmt.Println("leading with a fencing epoch:", epoch > 0)
		// Work until ctx ends: leadership lost or the service stopping.
		// Pass epoch to the store written to, so that it refuses the
		// writes of a leader that has been replaced.
		cancel() // the example stops right away
		<-ctx.Done()
		return ctx.Err()
	})
	fmt.Println("Run returned", err)
	// Output:
	// leading with a fencing epoch: true
	// Run returned <nil>
}
