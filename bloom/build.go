package bloom

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"iter"
	"time"

	bloomv3 "github.com/bits-and-blooms/bloom/v3"
	"github.com/redis/go-redis/v9"
)

// Keys yields every key that exists, for Warm and Rebuild. It yields each
// key with a nil error, or a non-nil error once and stops.
type Keys = iter.Seq2[string, error]

// FromSeq returns the keys of seq, such as slices.Values(ids), as Keys.
func FromSeq(seq iter.Seq[string]) Keys {
	return func(yield func(string, error) bool) {
		for k := range seq {
			if !yield(k, nil) {
				return
			}
		}
	}
}

// Querier runs a query: *sql.DB, *sql.Conn and *sql.Tx are Queriers.
type Querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// Scan returns the keys of the rows query selects, read in one pass when
// Warm or Rebuild ranges over them: prefix followed by the row's columns
// as text, joined by ':'. Scan(ctx, db, "user:", "SELECT id FROM users")
// yields "user:1", "user:2", ...; two columns give "order:7:42". Columns
// must read as text (integers, strings, decimals). One SELECT reads one
// consistent snapshot, so every row committed before the scan started is
// in it.
func Scan(ctx context.Context, db Querier, prefix, query string, args ...any) Keys {
	return func(yield func(string, error) bool) {
		rows, err := db.QueryContext(ctx, query, args...)
		if err != nil {
			yield("", fmt.Errorf("bloom: scan: %w", err))
			return
		}
		defer rows.Close()
		cols, err := rows.Columns()
		if err != nil {
			yield("", fmt.Errorf("bloom: scan: %w", err))
			return
		}
		raw := make([]sql.RawBytes, len(cols))
		dest := make([]any, len(cols))
		for i := range raw {
			dest[i] = &raw[i]
		}
		buf := []byte(prefix)
		for rows.Next() {
			if err := rows.Scan(dest...); err != nil {
				yield("", fmt.Errorf("bloom: scan: %w", err))
				return
			}
			buf = buf[:len(prefix)]
			for i, c := range raw {
				if i > 0 {
					buf = append(buf, ':')
				}
				buf = append(buf, c...)
			}
			if !yield(string(buf), nil) {
				return
			}
		}
		if err := rows.Err(); err != nil {
			yield("", fmt.Errorf("bloom: scan: %w", err))
		}
	}
}

// Progress reports how far a Warm or Rebuild has come.
type Progress struct {
	Version uint64 // the version being built
	Keys    int64  // keys read from the iterator so far
	Done    bool   // the version is complete and current
}

// Warm builds the first version of the filter from keys, unless a version
// is already current or being built by another instance: then it returns
// nil at once without reading keys. Every instance may call it at start;
// one scans. Until a version is current, MayContain answers "may contain".
func (f *Filter) Warm(ctx context.Context, keys Keys) error {
	return f.build(ctx, keys, true)
}

// Rebuild builds a new version of the filter from keys, with this
// instance's parameters, makes it current in one step and drops the old
// one. A Bloom filter cannot forget deleted keys; a rebuild does, and
// resizes the filter to new Options. It returns ErrBuilding when another
// build is running.
//
// Step by step:
//  1. The new bitmap is created empty and announced as "next" in the
//     parameters hash; from then on every Add writes to it too.
//  2. keys is read into a bloom/v3 filter in this process (a scan that
//     starts after step 1 sees every row whose Add could have missed it).
//  3. That filter is written to a load buffer and OR-ed into the new bitmap
//     (BITOP OR), which keeps the bits Add set meanwhile.
//  4. Options.BeforeSwap, when set, waits (for the binlog invalidator to
//     have applied every commit so far: see below).
//  5. The new version becomes current and the old one "prev" (one script).
//     Add keeps writing to both.
//  6. After DropDelay, the old bitmap is deleted, then unlisted. An
//     instance still reading it finds it missing and answers "may contain".
//
// Every row the scan read is in the new version, and so is every key whose
// Add began after step 1. A key whose Add came earlier, for a row that
// committed after the scan's snapshot (a writer's Add before its commit,
// typically), is not: it is missing from the new version until the binlog
// invalidator's Add after the commit, which always comes after step 1.
// Without BeforeSwap that can be for the invalidator's whole lag (for
// ever without an invalidator); with BeforeSwap waiting for the
// invalidator, never.
func (f *Filter) Rebuild(ctx context.Context, keys Keys) error {
	return f.build(ctx, keys, false)
}

func (f *Filter) build(ctx context.Context, keys Keys, warm bool) error {
	if f.err != nil {
		return f.err
	}
	st, err := f.reloadParams(ctx)
	if err != nil {
		return fmt.Errorf("bloom: build %s: %w", f.key, err)
	}
	if warm && st.cur != nil {
		return nil // current already: allocate nothing
	}
	if err := f.dropPrev(ctx, st); err != nil {
		return err
	}
	// Version ids are never reused, not even after Delete: a reader that
	// still holds old parameters must not find a new bitmap under an old
	// name. The sequence starts from Redis's clock, the one clock every
	// instance shares, so that it moves on after a Delete.
	now, err := f.rdb.Time(ctx).Result()
	if err != nil {
		return fmt.Errorf("bloom: build %s: %w", f.key, err)
	}
	var incr *redis.IntCmd
	_, err = f.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.HSetNX(ctx, f.key, "seq", now.UnixMicro())
		incr = p.HIncrBy(ctx, f.key, "seq", 1)
		return nil
	})
	id := incr.Val()
	if err != nil {
		return fmt.Errorf("bloom: build %s: %w", f.key, err)
	}
	v := newVersion(uint64(id), f.own)
	bm := f.bitmapKey(v.id)
	// Create the bitmap at full length before announcing it: Add writes
	// only to bitmaps that exist. It expires after BuildTimeout unless the
	// swap makes it current, so a builder that dies leaks nothing.
	_, err = f.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.SetBit(ctx, bm, int64(v.m-1), 0)
		p.PExpire(ctx, bm, f.opts.BuildTimeout)
		return nil
	})
	if err != nil {
		return fmt.Errorf("bloom: build %s: %w", f.key, err)
	}
	// Until the swap, every way out abandons v.
	swapped := false
	defer func() {
		if !swapped {
			f.cleanup(ctx, v)
		}
	}()
	res, err := beginScript.Run(ctx, f.rdb, []string{f.key}, v.spec, format, f.opts.BuildTimeout.Milliseconds(), boolArg(warm)).StringSlice()
	if err != nil || len(res) != 2 {
		return fmt.Errorf("bloom: build %s: begin: %v %w", f.key, res, err)
	}
	switch res[0] {
	case "ok":
	case "current":
		return nil
	case "busy":
		if warm {
			return nil
		}
		return fmt.Errorf("%w: %s builds version %s", ErrBuilding, f.key, res[1])
	case "format":
		return &MismatchError{Key: f.key, Format: res[1]}
	default:
		return fmt.Errorf("bloom: build %s: begin: %q", f.key, res[0])
	}
	if stale, ok := parseVersion(res[1]); ok {
		// A build that ran past BuildTimeout: it is unlisted now, and its
		// builder (if alive) will find its swap refused.
		_ = f.rdb.Del(ctx, f.bitmapKey(stale.id)).Err()
	}
	f.state.Store(nil) // Adds from this process learn of the new version at once

	n, err := f.load(ctx, v, keys)
	if err != nil {
		if errors.Is(err, errBitmapGone) {
			if st, rerr := f.reloadParams(ctx); rerr == nil && (st.next == nil || st.next.id != v.id) {
				err = fmt.Errorf("%w: %s: version %d was replaced before it was done", ErrBuilding, f.key, v.id)
			}
		}
		return err
	}
	if f.opts.BeforeSwap != nil {
		if err := f.opts.BeforeSwap(ctx); err != nil {
			return fmt.Errorf("bloom: build %s: before swap: %w", f.key, err)
		}
	}
	res, err = swapScript.Run(ctx, f.rdb, []string{f.key, bm}, v.spec).StringSlice()
	if err != nil || len(res) != 3 {
		return fmt.Errorf("bloom: build %s: swap: %v %w", f.key, res, err)
	}
	if res[0] != "ok" {
		return fmt.Errorf("%w: %s: version %d was replaced before it was done", ErrBuilding, f.key, v.id)
	}
	swapped = true
	if _, err := f.reloadParams(ctx); err != nil {
		f.state.Store(nil)
	}
	if err := f.notify(ctx, msgReload); err != nil {
		f.opts.Logger.Warn("bloom: publish swap", "key", f.key, "err", err)
	}
	if f.opts.Progress != nil {
		f.opts.Progress(Progress{Version: v.id, Keys: n, Done: true})
	}
	// Drop what was replaced. The bitmap goes first, the listing after.
	dctx := context.WithoutCancel(ctx)
	if old, ok := parseVersion(res[2]); ok {
		if err := f.drop(dctx, old); err != nil {
			return err
		}
	}
	if old, ok := parseVersion(res[1]); ok {
		t := time.NewTimer(f.opts.DropDelay)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		return f.drop(dctx, old)
	}
	return nil
}

var errBitmapGone = errors.New("the new bitmap was deleted while it was built")

// load reads keys into a local filter and ORs it into v's bitmap.
func (f *Filter) load(ctx context.Context, v *version, keys Keys) (int64, error) {
	local := bloomv3.New(uint(v.m), uint(v.k))
	var n int64
	every := int64(f.opts.ProgressEvery)
	for key, err := range keys {
		if err != nil {
			return n, fmt.Errorf("bloom: build %s: %w", f.key, err)
		}
		local.AddString(key)
		n++
		if n%1024 == 0 && ctx.Err() != nil {
			return n, ctx.Err()
		}
		if n%every == 0 && f.opts.Progress != nil {
			f.opts.Progress(Progress{Version: v.id, Keys: n})
		}
	}
	data := redisBytes(local.BitSet().Words(), int((v.m+7)/8))
	buf := f.bitmapKey(v.id) + ":load"
	const chunk = 4 << 20
	var exists *redis.IntCmd
	_, err := f.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, buf, data[:min(chunk, len(data))], f.opts.BuildTimeout)
		for off := chunk; off < len(data); off += chunk {
			p.SetRange(ctx, buf, int64(off), string(data[off:min(off+chunk, len(data))]))
		}
		// BITOP would create a missing bitmap from the buffer alone, without
		// the bits Add set meanwhile: make sure it is still there.
		exists = p.Exists(ctx, f.bitmapKey(v.id))
		p.BitOpOr(ctx, f.bitmapKey(v.id), f.bitmapKey(v.id), buf)
		p.PExpire(ctx, f.bitmapKey(v.id), f.opts.BuildTimeout) // BITOP stores anew, without the TTL
		p.Del(ctx, buf)
		return nil
	})
	if err == nil && exists.Val() != 1 {
		err = errBitmapGone
	}
	if err != nil {
		return n, fmt.Errorf("bloom: build %s: write bitmap: %w", f.key, err)
	}
	return n, nil
}

// cleanup deletes an abandoned build's bitmap, then unlists it.
func (f *Filter) cleanup(ctx context.Context, v *version) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	_ = f.rdb.Del(ctx, f.bitmapKey(v.id)+":load").Err()
	if err := f.drop(ctx, v); err != nil {
		f.opts.Logger.Warn("bloom: clean up after a failed build", "key", f.key, "err", err)
	}
}

// drop deletes v's bitmap, then removes v from the parameters hash.
func (f *Filter) drop(ctx context.Context, v *version) error {
	if err := f.rdb.Del(ctx, f.bitmapKey(v.id)).Err(); err != nil {
		return fmt.Errorf("bloom: drop %s version %d: %w", f.key, v.id, err)
	}
	if err := unlistScript.Run(ctx, f.rdb, []string{f.key}, v.spec).Err(); err != nil {
		return fmt.Errorf("bloom: drop %s version %d: %w", f.key, v.id, err)
	}
	if _, err := f.reloadParams(ctx); err != nil {
		f.state.Store(nil)
	}
	return f.notify(ctx, msgReload)
}

// dropPrev drops a version a previous Rebuild left listed as prev, once
// DropDelay has passed since the swap (by Redis's clock): until then,
// instances that have not re-read the parameters may still answer from it.
func (f *Filter) dropPrev(ctx context.Context, st *state) error {
	if st.prev == nil {
		return nil
	}
	now, err := f.rdb.Time(ctx).Result()
	if err != nil {
		return fmt.Errorf("bloom: build %s: %w", f.key, err)
	}
	if now.UnixMilli()-st.prevSince < f.opts.DropDelay.Milliseconds() {
		return nil
	}
	return f.drop(ctx, st.prev)
}

func boolArg(b bool) string {
	if b {
		return "1"
	}
	return "0"
}
