package invalidate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheaside/cacheaside/binlog"
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

// WaitApplied returns once the checkpoint has reached the binlog position
// the server has when it is called: every transaction committed before
// the call has been invalidated, and its inserted keys told to the filter.
// Any instance may call it, leader or not. It polls the checkpoint every
// CheckpointInterval until then or until ctx ends, so give ctx a deadline:
// the checkpoint moves only as transactions flow.
//
// It is what bloom.Options.BeforeSwap needs: a rebuild that waits for it
// before its swap holds every row committed before the swap, whichever
// came first, the row's Add or the rebuild.
func (inv *Invalidator) WaitApplied(ctx context.Context) error {
	store, ok := inv.opts.Checkpoints.(interface {
		Load(context.Context) (binlog.Position, error)
	})
	if !ok {
		return fmt.Errorf("invalidate: WaitApplied needs a checkpoint store that can Load its position; %T cannot", inv.opts.Checkpoints)
	}
	target, err := inv.stream.CurrentPosition(ctx)
	if err != nil {
		return err
	}
	for {
		pos, err := store.Load(ctx)
		if err == nil {
			ok, cerr := reached(pos, target)
			if cerr != nil {
				return cerr
			}
			if ok {
				return nil
			}
		}
		t := time.NewTimer(inv.opts.CheckpointInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("invalidate: wait for %s (checkpoint at %s): %w", target, pos, ctx.Err())
		case <-t.C:
		}
	}
}

// reached reports whether pos is at or past target: by file and offset
// when both have a file (binlog file names end in a sequence number of
// fixed width), else by MariaDB GTID position (every domain of target at
// or below pos's sequence number).
func reached(pos, target binlog.Position) (bool, error) {
	switch {
	case pos.IsZero():
		return false, nil
	case pos.File != "" && target.File != "":
		if pos.File != target.File {
			return pos.File > target.File, nil
		}
		return pos.Offset >= target.Offset, nil
	case pos.GTIDSet != "" && target.GTIDSet != "":
		have, err1 := gtidSeqs(pos.GTIDSet)
		want, err2 := gtidSeqs(target.GTIDSet)
		if err := errors.Join(err1, err2); err != nil {
			return false, err
		}
		for domain, seq := range want {
			if have[domain] < seq {
				return false, nil
			}
		}
		return true, nil
	}
	return false, fmt.Errorf("invalidate: cannot compare binlog positions %q and %q", pos, target)
}

// gtidSeqs reads a MariaDB GTID position ("domain-server-seq,...") as the
// sequence number reached per domain.
func gtidSeqs(set string) (map[string]uint64, error) {
	out := map[string]uint64{}
	for g := range strings.SplitSeq(set, ",") {
		parts := strings.Split(strings.TrimSpace(g), "-")
		if len(parts) != 3 {
			return nil, fmt.Errorf("invalidate: GTID %q is not a MariaDB domain-server-seq", g)
		}
		seq, err := strconv.ParseUint(parts[2], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("invalidate: GTID %q: %w", g, err)
		}
		out[parts[0]] = max(out[parts[0]], seq)
	}
	return out, nil
}
