package invalidate

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/cacheaside/cacheaside/binlog"
	"github.com/cacheaside/cacheaside/cache"
	"github.com/cacheaside/cacheaside/lock"
)

// This file is the path of one transaction: planned into keys when it
// leaves the binlog stream, batched with whatever else is queued, sent to
// Redis with retries, and only then allowed to move the checkpoint.

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
		// The cascade comes first: it depends only on the table and the
		// operation, and must not be skipped when the row's own keys cannot
		// be built (a partial image, a value no template can print).
		for _, t := range inv.rules.cascaded(row.Schema, row.Table, row.Op) {
			tableWide(t.schema, t.table, false) // cascades delete or update, never insert
		}
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
		keys := keyNames(plain, versioned)
		w.keys = append(w.keys, keys...)
		if row.Op == binlog.Insert || row.Op == binlog.Update {
			w.adds = append(w.adds, keys...)
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
func (inv *Invalidator) apply(ctx context.Context, cl *binlog.Claim, queue <-chan *work) error {
	var (
		pending   binlog.Position // last acknowledged transaction boundary not yet saved
		lastSaved = time.Now()
		later     []delayed // second invalidations, in due order
	)
	defer func() {
		// Save what was acknowledged even though ctx ended (a shutdown, a
		// stream error), but never once leadership is known lost: the next
		// leader may already have claimed the record, and although the
		// compare-and-set would refuse this write then, a write that lands
		// first would move the checkpoint of a Redis that lost data.
		if !pending.IsZero() && !errors.Is(context.Cause(ctx), lock.ErrNotHeld) {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			defer cancel()
			if inv.opts.Checkpoints.Advance(sctx, cl, pending, cl.Server) == nil {
				inv.stats.setPosition(pending)
			}
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
			if err := inv.advance(ctx, cl, pending); err != nil {
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
			plain = keyNames(plain, versioned)
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
	filterFailures := 0
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
		if err := inv.addToFilter(ctx, adds, &filterFailures); err != nil {
			return err
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
