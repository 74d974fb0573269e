package invalidate

import (
	"context"
	"errors"
	"io"
	"net"

	"github.com/redis/go-redis/v9"
)

// This file is the invalidator's side of the Bloom filter: keys of
// inserted rows go to Options.Filter before their not-found entries are
// removed, and a filter that cannot take them is deleted (it then answers
// "may contain"), never allowed to hold the cache's invalidations back.

// filterAttempts is how many times a batch's Add may fail with what looks
// like a passing Redis error before the filter is deleted instead.
const filterAttempts = 3

// addToFilter tells the filter the keys of inserted rows. failures counts
// the batch's failed Adds across retries. An error that retrying cannot
// cure (a filter stored with a format or hash this version cannot write,
// say), or one that lasts filterAttempts tries, deletes the filter when it
// is a Forgetter, loudly, and lets the batch go on: a filter that misses
// keys would answer "cannot contain" for rows that exist, and a batch
// retried for ever would keep every later invalidation from Redis. An
// error is returned only while the filter could be neither told nor
// deleted, so that the batch is retried.
func (inv *Invalidator) addToFilter(ctx context.Context, keys []string, failures *int) error {
	if inv.opts.Filter == nil || len(keys) == 0 {
		return nil
	}
	err := inv.opts.Filter.Add(ctx, keys...)
	if err == nil {
		return nil
	}
	*failures++
	if passing(err) && *failures < filterAttempts {
		return err
	}
	inv.opts.Logger.Error("invalidate: the filter cannot take the keys of inserted rows; deleting it so that it answers \"may contain\" until it is warmed again",
		"err", err, "keys", len(keys), "attempts", *failures)
	if _, ok := inv.opts.Filter.(Forgetter); !ok {
		inv.opts.Logger.Error("invalidate: the filter cannot be deleted either (not a Forgetter): it may report inserted rows absent")
		return nil
	}
	if ferr := inv.forgetFilter(ctx); ferr != nil {
		return errors.Join(err, ferr)
	}
	return nil
}

// passing reports whether err looks like a Redis or network error that a
// retry may cure.
func passing(err error) bool {
	var ne net.Error
	var re redis.Error
	return errors.As(err, &ne) || errors.As(err, &re) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, redis.ErrClosed) || errors.Is(err, context.DeadlineExceeded)
}
