package invalidate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/cacheaside/cacheaside/binlog"
	"github.com/cacheaside/cacheaside/cache"
	"github.com/cacheaside/cacheaside/lock"
)

// Target is what the invalidator invalidates: *cache.Cache implements it.
// Each method returns nil only once Redis has acknowledged the whole call.
type Target interface {
	Invalidate(ctx context.Context, keys ...string) error
	InvalidateNamespace(ctx context.Context, namespaces ...string) error
	InvalidateAll(ctx context.Context) error
}

// VersionedTarget is a Target that also takes versioned invalidations, for
// rules with a Version column: *cache.Cache implements it. With a Target
// that does not, those keys get plain invalidations.
type VersionedTarget interface {
	InvalidateVersions(ctx context.Context, items ...cache.KeyVersion) error
}

// Adder records keys that now exist: *bloom.Filter implements it.
type Adder interface {
	Add(ctx context.Context, keys ...string) error
}

// Forgetter is a filter that can be deleted, to fail open: *bloom.Filter
// implements it.
type Forgetter interface {
	Delete(ctx context.Context) error
}

// Options configures an Invalidator. A nil *Options means the defaults.
type Options struct {
	// Checkpoints stores the position reached. Default: a Redis checkpoint
	// beside the cache, at "cacheaside:invalidate:checkpoint", so that if
	// Redis loses data the checkpoint rolls back with it and the lost
	// invalidations are replayed.
	Checkpoints binlog.CheckpointStore
	// LeaderKey names the lock that elects the one instance that consumes
	// the binlog. Default: "cacheaside:invalidate:leader".
	LeaderKey string
	// LeaderTTL is the leader lock's TTL: a dead leader is replaced after
	// about this long. Default: 5s.
	LeaderTTL time.Duration
	// Filter, when set, is told the keys of every inserted row (a Bloom
	// filter of existing keys) before their not-found entries are removed.
	// When it is also a Forgetter (bloom.Filter is), a change that may have
	// inserted rows whose keys are unknown (a table-wide change other than
	// TRUNCATE and DROP, a row no template can print, a lost binlog
	// position) deletes it: it then answers "may contain" until it is warmed
	// again, so call its Warm periodically. Default: none.
	Filter Adder
	// CheckpointInterval is the most time between checkpoint saves while
	// transactions flow. Default: 100ms.
	CheckpointInterval time.Duration
	// MaxBatchKeys bounds the keys sent to Redis in one pipeline. Default: 10000.
	MaxBatchKeys int
	// Queue is how many transactions may wait between the binlog and Redis;
	// when it is full the binlog stream waits (backpressure). Default: 1024.
	Queue int
	// RetryMin and RetryMax bound the backoff between retries of a failed
	// invalidation, which is retried for as long as it takes. Default: 10ms, 1s.
	RetryMin, RetryMax time.Duration
	// DelayedInvalidation, when positive, invalidates every key once more
	// this long after its first invalidation, for fills that read a row
	// before its change became visible and outlived a tombstone window
	// (race R5). They are held in memory: those still pending when this
	// instance stops leading are not carried over. Default: 0 (off).
	DelayedInvalidation time.Duration
	// OnApplied, when set, is called after Redis acknowledged a batch, with
	// every transaction in it. It must not block. Default: none.
	OnApplied func(Applied)
	// Logger receives non-fatal errors (retries) and the loud notice of a
	// lost binlog position. Default: discard.
	Logger *slog.Logger
}

// Applied describes one transaction whose invalidations Redis acknowledged.
type Applied struct {
	Tx         *binlog.Tx
	Keys       []string
	ReceivedAt time.Time
	AckedAt    time.Time
}

func (o *Options) withDefaults(rdb redis.UniversalClient) Options {
	var v Options
	if o != nil {
		v = *o
	}
	if v.Checkpoints == nil {
		v.Checkpoints = binlog.NewRedisCheckpoints(rdb, "cacheaside:invalidate:checkpoint")
	}
	if v.LeaderKey == "" {
		v.LeaderKey = "cacheaside:invalidate:leader"
	}
	if v.LeaderTTL <= 0 {
		v.LeaderTTL = 5 * time.Second
	}
	if v.CheckpointInterval <= 0 {
		v.CheckpointInterval = 100 * time.Millisecond
	}
	if v.MaxBatchKeys <= 0 {
		v.MaxBatchKeys = 10000
	}
	if v.Queue <= 0 {
		v.Queue = 1024
	}
	if v.RetryMin <= 0 {
		v.RetryMin = 10 * time.Millisecond
	}
	if v.RetryMax < v.RetryMin {
		v.RetryMax = max(time.Second, v.RetryMin)
	}
	if v.Logger == nil {
		v.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return v
}

// Invalidator turns committed row changes into cache invalidations. Every
// instance of a service runs one; a leader election lets one consume the
// binlog while the others stand by and take over from the checkpoint.
type Invalidator struct {
	stream *binlog.Stream
	target Target
	rdb    redis.UniversalClient
	rules  *Rules
	opts   Options
	stats  stats
}

// New returns an Invalidator that reads stream, applies rules and
// invalidates target. rdb holds the leader lock and, by default, the
// checkpoint. New does no I/O.
func New(stream *binlog.Stream, target Target, rdb redis.UniversalClient, rules *Rules, opts *Options) *Invalidator {
	inv := &Invalidator{stream: stream, target: target, rdb: rdb, rules: rules, opts: opts.withDefaults(rdb)}
	inv.stats.init()
	return inv
}

// Run campaigns for leadership and, while leader, streams the binlog from
// the checkpoint and invalidates. It returns nil after ctx is cancelled and
// the first fatal error otherwise (a wrong MySQL setting, a failing rule).
func (inv *Invalidator) Run(ctx context.Context) error {
	el := lock.NewElection(inv.rdb, inv.opts.LeaderKey, &lock.ElectionOptions{TTL: inv.opts.LeaderTTL, Logger: inv.opts.Logger})
	return el.Run(ctx, inv.lead)
}

// lead consumes the binlog while this instance leads. epoch fences its
// checkpoint writes against a deposed leader.
func (inv *Invalidator) lead(ctx context.Context, epoch uint64) error {
	var pos binlog.Position
	err := inv.retry(ctx, "load checkpoint", func() (err error) { pos, err = inv.opts.Checkpoints.Load(ctx); return err })
	if err != nil {
		return nil // ctx ended
	}
	if pos.IsZero() {
		// First start: begin at the server's position now, and checkpoint it at
		// once, so that a leader that takes over later starts there too rather
		// than at its own "now", which would skip what came in between.
		if pos, err = inv.currentPosition(ctx); err != nil {
			return nil // ctx ended
		}
		if err := inv.resetFilterOnFirstStart(ctx); err != nil {
			return nil // ctx ended
		}
		if err := inv.save(ctx, epoch, pos); err != nil {
			return inv.deposed(ctx, epoch, err)
		}
	}
	inv.stats.setLeader(epoch)
	defer inv.stats.setLeader(0)
	inv.opts.Logger.Info("invalidate: leading", "epoch", epoch, "from", pos.String())
	for {
		err := inv.consume(ctx, epoch, pos)
		if errors.Is(err, ErrDeposed) {
			return inv.deposed(ctx, epoch, err)
		}
		if !errors.Is(err, binlog.ErrPositionLost) || ctx.Err() != nil {
			return err
		}
		// The binlog no longer holds the checkpoint: changes were lost. Flush the
		// whole cache in O(1) and go on from the position the server has now.
		// The position is taken before the flush, so every change after it is
		// streamed and every fill after the flush read newer data.
		inv.opts.Logger.Error("invalidate: binlog position lost; flushing the whole cache and restarting from the current position",
			"checkpoint", pos.String(), "err", err)
		now, err := inv.currentPosition(ctx)
		if err != nil {
			return nil // ctx ended
		}
		if err := inv.retry(ctx, "flush cache", func() error {
			if err := inv.forgetFilter(ctx); err != nil {
				return err
			}
			return inv.target.InvalidateAll(ctx)
		}); err != nil {
			return nil
		}
		inv.stats.flushes.Add(1)
		if err := inv.save(ctx, epoch, now); err != nil {
			return inv.deposed(ctx, epoch, err)
		}
		pos = now
	}
}

// currentPosition reads the server's binlog position, retrying until it
// answers or ctx ends.
func (inv *Invalidator) currentPosition(ctx context.Context) (pos binlog.Position, err error) {
	err = inv.retry(ctx, "read current position", func() (err error) { pos, err = inv.stream.CurrentPosition(ctx); return err })
	return pos, err
}

// deposed handles an error from a checkpoint save during leadership: when a
// newer leader has saved, this one's lock is gone; the election notices
// within its TTL and cancels ctx, and then campaigns again. Returning the
// error instead would make Run give up for good.
func (inv *Invalidator) deposed(ctx context.Context, epoch uint64, err error) error {
	if !errors.Is(err, ErrDeposed) {
		return err
	}
	inv.opts.Logger.Warn("invalidate: deposed by a newer leader", "epoch", epoch)
	<-ctx.Done()
	return nil
}

// forgetFilter deletes the Bloom filter, when it can be deleted, because
// rows may have been inserted whose keys it was not told: it answers "may
// contain" until it is warmed again, never a false "not found".
func (inv *Invalidator) forgetFilter(ctx context.Context) error {
	f, ok := inv.opts.Filter.(Forgetter)
	if !ok {
		return nil
	}
	inv.opts.Logger.Warn("invalidate: inserts the filter cannot be told of; deleting the filter until it is warmed again")
	inv.stats.filterResets.Add(1)
	return f.Delete(ctx)
}

// consume runs the stream into a bounded queue and the queue into Redis.
func (inv *Invalidator) consume(ctx context.Context, epoch uint64, from binlog.Position) error {
	// Work queued by an earlier run was dropped with it and will be read again.
	inv.stats.received.Store(inv.stats.transactions.Load())
	g, gctx := errgroup.WithContext(ctx)
	queue := make(chan *work, inv.opts.Queue)
	g.Go(func() error {
		defer close(queue)
		return inv.stream.Run(gctx, from, binlog.HandlerFunc(func(ctx context.Context, tx *binlog.Tx) error {
			w := inv.plan(tx)
			inv.stats.received.Add(1) // before the send: Pending never goes negative
			select {
			case queue <- w:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}))
	})
	g.Go(func() error { return inv.apply(gctx, epoch, queue) })
	err := g.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// save writes the checkpoint, retrying Redis errors. A newer leader's
// checkpoint makes it fatal for this leadership: ErrDeposed.
func (inv *Invalidator) save(ctx context.Context, epoch uint64, pos binlog.Position) error {
	err := inv.retry(ctx, "save checkpoint", func() error {
		err := inv.opts.Checkpoints.Save(ctx, epoch, pos)
		if errors.Is(err, binlog.ErrStaleEpoch) {
			return backoffStop{err}
		}
		return err
	})
	var stop backoffStop
	if errors.As(err, &stop) {
		return fmt.Errorf("%w: %w", ErrDeposed, stop.err)
	}
	if err != nil {
		return err // ctx ended: the caller keeps the position for its last save
	}
	inv.stats.setPosition(pos)
	return nil
}

// ErrDeposed reports that a newer leader has saved a checkpoint: this
// instance's leadership is over. Run goes back to campaigning.
var ErrDeposed = errors.New("invalidate: deposed by a newer leader")

type backoffStop struct{ err error }

func (b backoffStop) Error() string { return b.err.Error() }

// retry calls fn until it succeeds, fn returns a backoffStop, or ctx ends;
// it waits between calls with jittered exponential backoff.
func (inv *Invalidator) retry(ctx context.Context, what string, fn func() error) error {
	wait := inv.opts.RetryMin
	for {
		err := fn()
		if err == nil {
			return nil
		}
		var stop backoffStop
		if errors.As(err, &stop) {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		inv.stats.retries.Add(1)
		inv.opts.Logger.Warn("invalidate: retrying", "op", what, "err", err, "wait", wait)
		t := time.NewTimer(wait/2 + rand.N(wait/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, inv.opts.RetryMax)
	}
}
