package cache

import (
	"context"
	_ "embed"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Versioner is implemented by cached values that carry their row's version
// (a monotonic column such as `version` or an update counter).
type Versioner interface{ CacheVersion() int64 }

// KeyVersion names a key and the version its row has after a change.
type KeyVersion struct {
	Key     string
	Version int64
}

// Versioned mode closes race R4: a reader that loads from a lagging replica
// after an invalidation would otherwise fill the row as it was before the
// change, and nothing would remove it before its TTL.
//
//  1. A row changes to version 2; InvalidateVersions(key, 2) leaves a
//     versioned tombstone whose floor is 2, replacing any lease (so loads
//     that began before cannot fill) and any value.
//  2. A reader finds it and installs a lease over those very bytes; the
//     lease carries the floor (and the tombstone's expiry).
//  3. The reader loads from a replica that still has version 1. The value
//     is returned to the caller, but not stored: the lease is replaced by
//     the tombstone again, and the next reader tries again.
//  4. A load that returns version 2 or later fills.
//
// The floor is checked in Go, before fill.lua: a fill is only stored while
// its lease holds, and any invalidation since the lease was taken (the only
// thing that could raise the floor) replaced the lease.
//
// versioned_tombstone.lua keeps floors from going down when invalidations
// arrive out of order (from Write and from the binlog, say): the tombstone
// it writes carries the highest version among its own and the one recorded
// in what it replaces. invalidate.lua, behind Invalidate and Write, keeps the
// version it replaces as a floor too, so a plain invalidation never lowers
// one.

var (
	//go:embed versioned_tombstone.lua
	versionedTombstoneSrc string

	versionedTombstoneScript = redis.NewScript(versionedTombstoneSrc)
)

// InvalidateVersions leaves, in one pipeline, a versioned tombstone in each
// key that lives Options.VersionTTL: it kills leases like Invalidate, and
// afterwards a fill is accepted only with a value whose CacheVersion() is at
// least the tombstone's version, or with a not-found result when that
// version is 0 or less (a Version of 0 or less is stored as 0). Values whose
// type does not implement Versioner are loaded but never filled over a
// versioned tombstone. A tombstone over a higher one is not set; one over an
// entry that records a higher version takes that version. It returns nil
// only after Redis acknowledged every key.
//
// For a deleted row pass the deleted row's version plus one: the stale row
// is then refused, and so is the not-found result, until the tombstone
// expires (readers get ErrNotFound from the source meanwhile). Version 0
// means any value and a not-found result may fill.
func (c *Cache) InvalidateVersions(ctx context.Context, items ...KeyVersion) error {
	if len(items) == 0 {
		return nil
	}
	keys := make([]string, len(items))
	for i, it := range items {
		keys[i] = it.Key
	}
	defer c.bumpEpochs(keys)
	ttl := c.cfg.VersionTTL
	now := nowMs()
	for len(items) > 0 {
		off := len(keys) - len(items)
		chunk := items[:min(len(items), invalidateChunk)]
		items = items[len(chunk):]
		cmds, err := runPipelined(ctx, c.rdb, versionedTombstoneScript, len(chunk), func(i int) (string, []any) {
			h := header{kind: kindTombstone, versioned: true, rowVer: floorOf(chunk[i].Version), filled: now, ttl: ms(ttl)}
			return chunk[i].Key, []any{encodeEntry(h), ttl.Milliseconds()}
		})
		if isOOM(err) {
			err = c.deleteRefused(ctx, keys[off:off+len(chunk)], func(i int) error { return cmds[i].Err() })
		}
		c.redisResult(ctx, err)
		if err != nil {
			return fmt.Errorf("cache: invalidate versions: %w", err)
		}
		c.stats.invalidations.Add(uint64(len(chunk)))
	}
	return nil
}

// floorOf is the floor stored for a version: negative versions are 0.
func floorOf(v int64) uint64 { return uint64(max(v, 0)) }

// versioner reports whether values of type T carry a version (a T whose
// zero value implements Versioner; interface types do not).
func versioner[T any]() bool {
	var z T
	_, ok := any(z).(Versioner)
	return ok
}

// versionOf returns v's CacheVersion, if it has one. A method that panics
// (a nil pointer, say) means none.
func versionOf(v any) (ver int64, ok bool) {
	vv, ok := v.(Versioner)
	if !ok {
		return 0, false
	}
	defer func() {
		if recover() != nil {
			ver, ok = 0, false
		}
	}()
	return vv.CacheVersion(), true
}

// floor is the lower bound that a versioned tombstone, or a lease taken over
// one, sets for fills: the least version and when it lapses.
type floor struct {
	on      bool
	ver     uint64
	expires uint64 // Unix ms
}

// floorIn returns the floor an entry sets: a versioned tombstone's or a
// versioned lease's (one whose holder may have died). Values record their
// version but set no floor.
func floorIn(e *entry) floor {
	if e.raw == nil || !e.h.versioned || (e.h.kind != kindTombstone && e.h.kind != kindLease) {
		return floor{}
	}
	switch e.st {
	case stCorrupt, stForeign, stAbsent:
		return floor{}
	}
	return floor{on: true, ver: e.h.rowVer, expires: e.h.expires()}
}

// lease returns the header of a lease that carries fl (filled now, its ttl
// the floor's remaining life) and how long the lease key lives.
func (fl floor) lease(stamp header, leaseTTL time.Duration) (header, time.Duration) {
	if !fl.on {
		return stamp, leaseTTL
	}
	stamp.versioned, stamp.rowVer = true, fl.ver
	if fl.expires > stamp.filled {
		stamp.ttl = fl.expires - stamp.filled
	}
	return stamp, max(leaseTTL, time.Duration(stamp.ttl)*time.Millisecond)
}

// admits reports whether a load's result may fill under a lease whose
// header is stamp: any result without a floor; with one, a value whose
// version reaches it, or not-found (v == nil, notFound) when the floor is 0.
func admits(stamp *header, v any, notFound bool) bool {
	if !stamp.versioned || stamp.kind != kindLease {
		return true
	}
	if notFound {
		return stamp.rowVer == 0
	}
	ver, ok := versionOf(v)
	return ok && ver >= 0 && uint64(ver) >= stamp.rowVer
}

// restoreFloor returns the tombstone to put back in place of a lease whose
// header is stamp after a refused fill or a failed load, and its time to
// live; nil when the lease set no floor or the floor has lapsed.
func restoreFloor(stamp *header) ([]byte, time.Duration) {
	if !stamp.versioned || stamp.kind != kindLease {
		return nil, 0
	}
	now := nowMs()
	exp := stamp.expires()
	if exp <= now {
		return nil, 0
	}
	h := header{kind: kindTombstone, versioned: true, rowVer: stamp.rowVer, filled: now, ttl: exp - now}
	return encodeEntry(h), time.Duration(h.ttl) * time.Millisecond
}

// recordVersion makes a value entry's header h record v's version, so that
// a lower versioned tombstone sent after it keeps the higher floor.
func recordVersion(h *header, v any) {
	if ver, ok := versionOf(v); ok && ver > 0 {
		h.versioned, h.rowVer = true, uint64(ver)
	}
}
