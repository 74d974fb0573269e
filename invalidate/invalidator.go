package invalidate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
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

// work is one transaction on its way from the binlog to Redis.
type work struct {
	tx         *binlog.Tx
	keys       []string // every key, for stats and OnApplied
	plain      []string // keys of rules without a Version column
	versioned  []cache.KeyVersion
	adds       []string // keys of inserted rows, for the filter
	namespaces []string
	all        bool
	forget     bool // rows may have been inserted whose keys are unknown
	received   time.Time
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
		if err := inv.retry(ctx, "read current position", func() (err error) { pos, err = inv.stream.CurrentPosition(ctx); return err }); err != nil {
			return nil
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
		var now binlog.Position
		if err := inv.retry(ctx, "read current position", func() (err error) { now, err = inv.stream.CurrentPosition(ctx); return err }); err != nil {
			return nil
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

// plan turns a transaction into the keys and namespaces to invalidate.
func (inv *Invalidator) plan(tx *binlog.Tx) *work {
	w := &work{tx: tx, received: time.Now()}
	tableWide := func(schema, table string, mayInsert bool) {
		ns, all := inv.rules.TableWide(schema, table)
		w.namespaces = append(w.namespaces, ns...)
		w.all = w.all || all
		w.forget = w.forget || mayInsert && (all || len(ns) > 0)
	}
	for i := range tx.Rows {
		row := &tx.Rows[i]
		plain, versioned, err := inv.rules.keys(*row)
		if err != nil {
			// A value no template can print must not stop the stream, nor be
			// skipped: invalidate the whole table instead.
			inv.opts.Logger.Error("invalidate: cannot build keys; invalidating the whole table",
				"schema", row.Schema, "table", row.Table, "err", err)
			tableWide(row.Schema, row.Table, row.Op != binlog.Delete)
			continue
		}
		w.plain = append(w.plain, plain...)
		w.versioned = append(w.versioned, versioned...)
		keys := plain
		for _, kv := range versioned {
			keys = append(keys, kv.Key)
		}
		w.keys = append(w.keys, keys...)
		if row.Op == binlog.Insert || row.Op == binlog.Update {
			w.adds = append(w.adds, keys...)
		}
		for _, t := range inv.rules.cascaded(row.Schema, row.Table, row.Op) {
			tableWide(t.schema, t.table, false) // cascades delete or update, never insert
		}
	}
	for _, ch := range tx.Changes {
		// Only TRUNCATE and DROP are known to add no rows; a RENAME, an ALTER
		// (EXCHANGE PARTITION), a CREATE ... SELECT or a statement-logged
		// write may have inserted keys the filter does not know.
		tableWide(ch.Schema, ch.Table, ch.Kind != binlog.Truncate && ch.Kind != binlog.Drop)
	}
	inv.stats.rows.Add(uint64(len(tx.Rows)))
	return w
}

// apply drains the queue in batches: each batch is invalidated with
// retries until Redis acknowledges it, and only then may the checkpoint
// move past its transactions.
func (inv *Invalidator) apply(ctx context.Context, epoch uint64, queue <-chan *work) error {
	var (
		pending   binlog.Position // last acknowledged transaction boundary not yet saved
		lastSaved = time.Now()
		later     []delayed // second invalidations, in due order
	)
	defer func() {
		if !pending.IsZero() {
			// Save what was acknowledged even though ctx ended; a deposed leader's
			// write is refused by the epoch fence.
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			defer cancel()
			_ = inv.opts.Checkpoints.Save(sctx, epoch, pending)
		}
	}()
	tick := time.NewTicker(inv.opts.CheckpointInterval)
	defer tick.Stop()
	for {
		var due <-chan time.Time
		var timer *time.Timer
		if len(later) > 0 {
			timer = time.NewTimer(time.Until(later[0].at))
			due = timer.C
		}
		var batch []*work
		var fire bool
		select {
		case w, ok := <-queue:
			if !ok {
				return nil
			}
			batch = inv.collect(w, queue)
		case <-tick.C:
		case <-due:
			fire = true
		}
		if timer != nil {
			timer.Stop()
		}
		if fire {
			again := later[0]
			later = later[1:]
			if err := inv.retry(ctx, "delayed invalidation", func() error { return inv.send(ctx, again.plain, again.versioned) }); err != nil {
				return nil // ctx ended
			}
			continue
		}
		if len(batch) > 0 {
			again, err := inv.invalidate(ctx, batch)
			if err != nil {
				return nil // ctx ended
			}
			if d := inv.opts.DelayedInvalidation; d > 0 && len(again.plain)+len(again.versioned) > 0 {
				again.at = time.Now().Add(d)
				later = append(later, again)
			}
			for _, w := range batch {
				if !w.tx.More {
					pending = w.tx.Pos
				}
			}
		}
		if !pending.IsZero() && time.Since(lastSaved) >= inv.opts.CheckpointInterval {
			if err := inv.save(ctx, epoch, pending); err != nil {
				return err
			}
			pending, lastSaved = binlog.Position{}, time.Now()
		}
	}
}

// delayed is a second invalidation of keys, due at a time.
type delayed struct {
	at        time.Time
	plain     []string
	versioned []cache.KeyVersion
}

// collect takes w and whatever else is already queued, up to MaxBatchKeys
// keys, so that a burst of transactions shares one Redis round trip.
func (inv *Invalidator) collect(w *work, queue <-chan *work) []*work {
	batch := []*work{w}
	n := len(w.keys)
	for n < inv.opts.MaxBatchKeys {
		select {
		case w, ok := <-queue:
			if !ok {
				return batch
			}
			batch = append(batch, w)
			n += len(w.keys)
		default:
			return batch
		}
	}
	return batch
}

// send sends plain and versioned invalidations of keys.
func (inv *Invalidator) send(ctx context.Context, plain []string, versioned []cache.KeyVersion) error {
	if len(versioned) > 0 {
		if vt, ok := inv.target.(VersionedTarget); ok {
			if err := vt.InvalidateVersions(ctx, versioned...); err != nil {
				return err
			}
		} else {
			for _, kv := range versioned {
				plain = append(plain, kv.Key)
			}
		}
	}
	if len(plain) > 0 {
		return inv.target.Invalidate(ctx, plain...)
	}
	return nil
}

// invalidate applies one batch, retrying until Redis acknowledges all of
// it, and returns its plain and versioned keys.
func (inv *Invalidator) invalidate(ctx context.Context, batch []*work) (delayed, error) {
	var keys, plain, adds, namespaces []string
	var versioned []cache.KeyVersion
	all, forget := false, false
	for _, w := range batch {
		keys = append(keys, w.keys...)
		plain = append(plain, w.plain...)
		versioned = append(versioned, w.versioned...)
		adds = append(adds, w.adds...)
		namespaces = append(namespaces, w.namespaces...)
		all = all || w.all
		forget = forget || w.forget
	}
	slices.Sort(namespaces)
	namespaces = slices.Compact(namespaces)
	inv.opts.Logger.Debug("invalidate: batch", "transactions", len(batch), "keys", len(keys), "namespaces", namespaces, "all", all)
	err := inv.retry(ctx, "invalidate", func() error {
		if forget {
			if err := inv.forgetFilter(ctx); err != nil {
				return err
			}
		}
		if all {
			if err := inv.target.InvalidateAll(ctx); err != nil {
				return err
			}
		} else if len(namespaces) > 0 {
			if err := inv.target.InvalidateNamespace(ctx, namespaces...); err != nil {
				return err
			}
		}
		// The filter learns of new keys before their not-found entries go, so
		// that no reader sees "absent" from the filter after the invalidation.
		if inv.opts.Filter != nil && len(adds) > 0 {
			if err := inv.opts.Filter.Add(ctx, adds...); err != nil {
				return err
			}
		}
		return inv.send(ctx, plain, versioned)
	})
	if err != nil {
		return delayed{}, err
	}
	now := time.Now()
	for _, w := range batch {
		inv.stats.record(w, now)
		if inv.opts.OnApplied != nil {
			inv.opts.OnApplied(Applied{Tx: w.tx, Keys: w.keys, ReceivedAt: w.received, AckedAt: now})
		}
	}
	inv.stats.batches.Add(1)
	inv.stats.keys.Add(uint64(len(keys)))
	return delayed{plain: plain, versioned: versioned}, nil
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
