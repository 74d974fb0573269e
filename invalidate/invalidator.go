package invalidate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync/atomic"
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
	// Name names the source: the MySQL server (or cluster) this invalidator
	// follows for this cache. The default key names of the leader lock and
	// the checkpoint follow it, so services or MySQL clusters that share one
	// Redis need names of their own, or they share one leader and one
	// checkpoint. Default: "default".
	Name string
	// Checkpoints stores the position reached, in one record with the
	// epoch of the leadership that owns it (see package doc). Default: a
	// Redis checkpoint beside the cache, at
	// "cacheaside:invalidate:{<Name>}:checkpoint", so that if Redis loses
	// data the checkpoint rolls back with it and the lost invalidations are
	// replayed. A store elsewhere (another Redis, a Cluster shard other than
	// the keys') cannot see the cache's Redis lose writes.
	Checkpoints binlog.ClaimStore
	// LeaderKey names the lock that elects the one instance that consumes
	// the binlog. With Redis Cluster it must share a hash slot with the
	// checkpoint key. Default: "cacheaside:invalidate:{<Name>}:leader".
	LeaderKey string
	// LeaderTTL is the leader lock's TTL: a dead leader is replaced after
	// about this long. Default: 5s.
	LeaderTTL time.Duration
	// StepDownAfter bounds how long a leader goes on without reaching
	// MySQL: when neither a transaction nor a probe of the server's
	// position has come through for this long, it steps down (releases
	// the lock and campaigns again after a pause), so that a standby that
	// can reach MySQL takes over. Default: 3 x LeaderTTL.
	StepDownAfter time.Duration
	// Filter, when set, is told the keys of every inserted row (a Bloom
	// filter of existing keys) before their not-found entries are removed.
	// When it is also a Forgetter (bloom.Filter is), a change that may have
	// inserted rows whose keys are unknown (a table-wide change other than
	// TRUNCATE and DROP, a row no template can print, a lost binlog
	// position) deletes it: it then answers "may contain" until it is warmed
	// again, so call its Warm periodically. A start without a checkpoint
	// (the first start included) is such a change: warm the filter once
	// the invalidator leads (Stats.Leader), so that the scan sees every row
	// inserted before the position it streams from. Default: none.
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
	if v.Name == "" {
		v.Name = "default"
	}
	// One hash tag keeps the lock and the checkpoint in one Cluster slot, so
	// the claim script can check the one while it takes the other.
	base := "cacheaside:invalidate:{" + v.Name + "}:"
	if v.Checkpoints == nil {
		v.Checkpoints = binlog.NewRedisCheckpoints(rdb, base+"checkpoint")
	}
	if v.LeaderKey == "" {
		v.LeaderKey = base + "leader"
	}
	if v.LeaderTTL <= 0 {
		v.LeaderTTL = 5 * time.Second
	}
	if v.StepDownAfter <= 0 {
		v.StepDownAfter = 3 * v.LeaderTTL
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

// Run checks MySQL's settings and privileges, then campaigns for leadership
// and, while leader, streams the binlog from the checkpoint and
// invalidates. It returns nil after ctx is cancelled and the first fatal
// error otherwise: a wrong MySQL setting or a missing privilege (at start,
// before campaigning), a failing rule.
func (inv *Invalidator) Run(ctx context.Context) error {
	// Every instance checks MySQL's settings and its privileges before it
	// campaigns, so that a wrong setting is an error from Run at once, on a
	// first start and on a resume alike, on the leader and on standbys.
	if err := inv.stream.Check(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("invalidate: %w", err)
	}
	el := lock.NewElection(inv.rdb, inv.opts.LeaderKey, &lock.ElectionOptions{TTL: inv.opts.LeaderTTL, Logger: inv.opts.Logger})
	return el.Run(ctx, inv.lead)
}

// lead consumes the binlog while this instance leads: it claims the
// checkpoint record, then streams from the position it holds, or from the
// server's current position after a flush when it holds none. Whenever
// the record is found changed behind this leadership's back (Redis lost it,
// went back in time, restarted, or another leadership claimed it), lead
// steps down (lock.ErrStepDown) instead of going on from the position it
// holds in memory: the next leadership, this process's or another's, claims
// the record again and replays from what it holds.
func (inv *Invalidator) lead(ctx context.Context, _ uint64) error {
	l, ok := lock.FromContext(ctx)
	if !ok {
		return errors.New("invalidate: lead needs the election's lock")
	}
	var cl *binlog.Claim
	err := inv.retry(ctx, "claim checkpoint", func() (err error) {
		cl, err = inv.opts.Checkpoints.Claim(ctx, l.Key(), l.Token())
		switch {
		case errors.Is(err, binlog.ErrNotLeader):
			return backoffStop{err}
		case err != nil && strings.Contains(err.Error(), "CROSSSLOT"):
			return backoffStop{fmt.Errorf("invalidate: Options.LeaderKey %q and the checkpoint key are in different Redis Cluster slots: "+
				"give both one hash tag (the default names do): %w", inv.opts.LeaderKey, fatal{err})}
		}
		return err
	})
	if stop := (backoffStop{}); errors.As(err, &stop) {
		if f := (fatal{}); errors.As(stop.err, &f) {
			return stop.err
		}
		return inv.stepDown(stop.err)
	}
	if err != nil {
		return nil // ctx ended
	}
	defer inv.stats.setLeader(0)
	var server string
	err = inv.retry(ctx, "read the server's identity", func() (err error) {
		server, err = inv.stream.ServerIdentity(ctx)
		if err != nil && ctx.Err() == nil && !binlog.Transient(err) {
			return backoffStop{err}
		}
		return err
	})
	if stop := (backoffStop{}); errors.As(err, &stop) {
		return stop.err
	}
	if err != nil {
		return nil // ctx ended
	}
	pos, lost := cl.Pos, cl.Pos.IsZero()
	if !lost && cl.Server != "" && cl.Server != server {
		if pos.GTIDSet == "" {
			// A file and offset of another server: nothing to resume from.
			inv.opts.Logger.Error("invalidate: the checkpoint is a file/offset position of another server",
				"checkpoint", pos.String(), "checkpoint_server", cl.Server, "server", server)
			lost = true
		} else {
			// A GTID position resumes on a server whose history holds it (a
			// promoted replica); the server refuses it otherwise (ErrPositionLost).
			inv.opts.Logger.Warn("invalidate: resuming a GTID checkpoint of another server",
				"checkpoint", pos.String(), "checkpoint_server", cl.Server, "server", server)
		}
	}
	cl.Server = server // recorded with every save of this leadership
	inv.opts.Logger.Info("invalidate: leading", "epoch", cl.Epoch, "from", pos.String())
	for {
		if lost {
			if pos, err = inv.restart(ctx, cl); err != nil || ctx.Err() != nil {
				return err
			}
		}
		inv.stats.setLeader(cl.Epoch) // once the flush of a lost position is done
		err := inv.consume(ctx, cl, pos)
		if errors.Is(err, binlog.ErrCheckpointMoved) {
			return inv.stepDown(err)
		}
		if !errors.Is(err, binlog.ErrPositionLost) || ctx.Err() != nil {
			return err
		}
		inv.opts.Logger.Error("invalidate: binlog position lost", "checkpoint", pos.String(), "err", err)
		lost = true
	}
}

// restart answers a lost position: a checkpoint record that holds none
// (a first start, or Redis lost it) or a binlog that no longer has it.
// Changes since the position may be lost, so the whole cache is flushed in
// O(1) (a generation bump) and streaming goes on from the position the
// server has now. The position is taken before the flush, so every change
// after it is streamed and every fill after the flush read newer data. It
// is saved before streaming, so a leader that takes over later starts
// there too rather than at its own "now", which would skip what came in
// between.
func (inv *Invalidator) restart(ctx context.Context, cl *binlog.Claim) (binlog.Position, error) {
	inv.opts.Logger.Error("invalidate: no usable checkpoint (first start, or Redis or the binlog lost it); flushing the whole cache and starting from the current position",
		"checkpoint", cl.Pos.String())
	now, err := inv.currentPosition(ctx)
	if stop := (backoffStop{}); errors.As(err, &stop) {
		return now, fmt.Errorf("invalidate: read the current binlog position: %w", stop.err)
	}
	if err != nil {
		return now, nil // ctx ended
	}
	if err := inv.retry(ctx, "flush cache", func() error {
		if err := inv.forgetFilter(ctx); err != nil {
			return err
		}
		return inv.target.InvalidateAll(ctx)
	}); err != nil {
		return now, nil // ctx ended
	}
	inv.stats.flushes.Add(1)
	if err := inv.advance(ctx, cl, now); err != nil {
		if errors.Is(err, binlog.ErrCheckpointMoved) {
			return now, inv.stepDown(err)
		}
		return now, nil // ctx ended
	}
	return now, nil
}

// currentPosition reads the server's binary log position, retrying until
// it answers or ctx ends.
func (inv *Invalidator) currentPosition(ctx context.Context) (pos binlog.Position, err error) {
	err = inv.retry(ctx, "read current position", func() (err error) {
		pos, err = inv.stream.CurrentPosition(ctx)
		if err != nil && ctx.Err() == nil && !binlog.Transient(err) {
			return backoffStop{err} // access denied, a wrong setting: no retry fixes it
		}
		return err
	})
	return pos, err
}

// stepDown ends this leadership because the checkpoint record changed
// behind its back: the election releases the lock and campaigns again, and
// the next leadership claims the record afresh. Waiting for the election to
// notice instead would wait for ever when the lock is still held (a record
// that Redis lost or rolled back while the lock survived).
func (inv *Invalidator) stepDown(err error) error {
	inv.opts.Logger.Warn("invalidate: stepping down: the checkpoint changed behind this leadership", "err", err)
	return fmt.Errorf("%w: %w", lock.ErrStepDown, err)
}

// fatal marks an error that no new leadership can fix.
type fatal struct{ error }

func (f fatal) Unwrap() error { return f.error }

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
func (inv *Invalidator) consume(ctx context.Context, cl *binlog.Claim, from binlog.Position) error {
	// Work queued by an earlier run was dropped with it and will be read again.
	inv.stats.received.Store(inv.stats.transactions.Load())
	g, gctx := errgroup.WithContext(ctx)
	queue := make(chan *work, inv.opts.Queue)
	var progress atomic.Int64 // unix nanoseconds of the last sign of a reachable MySQL
	progress.Store(time.Now().UnixNano())
	g.Go(func() error { return inv.watch(gctx, &progress) })
	g.Go(func() error {
		defer close(queue)
		return inv.stream.Run(gctx, from, binlog.HandlerFunc(func(ctx context.Context, tx *binlog.Tx) error {
			progress.Store(time.Now().UnixNano())
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
	g.Go(func() error { return inv.apply(gctx, cl, queue) })
	err := g.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// watch steps down when MySQL has been out of reach for StepDownAfter:
// while no transaction arrives it probes the server's position, and a
// probe that answers counts as progress. The stream retries a lost
// connection by itself for as long as it takes; without watch, a leader
// cut off from MySQL would keep the lock, and so keep out a standby that
// can reach it.
func (inv *Invalidator) watch(ctx context.Context, progress *atomic.Int64) error {
	limit := inv.opts.StepDownAfter
	tick := time.NewTicker(limit / 4)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		idle := time.Since(time.Unix(0, progress.Load()))
		if idle < limit/4 {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, limit/4)
		_, err := inv.stream.CurrentPosition(pctx)
		cancel()
		switch {
		case err == nil:
			progress.Store(time.Now().UnixNano())
		case ctx.Err() != nil:
			return nil
		case idle >= limit:
			inv.opts.Logger.Error("invalidate: MySQL out of reach; stepping down so that another instance can lead",
				"for", idle.Round(time.Millisecond), "err", err)
			return fmt.Errorf("%w: invalidate: MySQL out of reach for %v: %w", lock.ErrStepDown, idle.Round(time.Millisecond), err)
		default:
			inv.opts.Logger.Warn("invalidate: MySQL out of reach", "for", idle.Round(time.Millisecond), "err", err)
		}
	}
}

// advance moves the checkpoint to pos, retrying Redis errors. A record
// changed behind this leadership's back makes it fatal for this
// leadership: an error matching binlog.ErrCheckpointMoved.
func (inv *Invalidator) advance(ctx context.Context, cl *binlog.Claim, pos binlog.Position) error {
	err := inv.retry(ctx, "save checkpoint", func() error {
		err := inv.opts.Checkpoints.Advance(ctx, cl, pos, cl.Server)
		if errors.Is(err, binlog.ErrCheckpointMoved) {
			return backoffStop{err}
		}
		return err
	})
	var stop backoffStop
	if errors.As(err, &stop) {
		return stop.err
	}
	if err != nil {
		return err // ctx ended: the caller keeps the position for its last save
	}
	inv.stats.setPosition(pos)
	return nil
}

type backoffStop struct{ err error }

func (b backoffStop) Error() string { return b.err.Error() }
func (b backoffStop) Unwrap() error { return b.err }

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
