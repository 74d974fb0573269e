package bloom

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	bloomv3 "github.com/bits-and-blooms/bloom/v3"
	"github.com/redis/go-redis/v9"
)

// Params are what fixes a filter's bit locations. Every instance that
// shares a filter must use the same ones.
type Params struct {
	M    uint64 // bits in the bitmap
	K    uint64 // bit locations per key
	Hash int    // hash version, see HashVersion
}

// String formats p as "m=... k=... hash=...".
func (p Params) String() string {
	return fmt.Sprintf("m=%d k=%d hash=%d", p.M, p.K, p.Hash)
}

// MismatchError reports a filter in Redis that this instance cannot use as
// configured. MayContain answers "may contain" while it lasts; Add still
// writes with the stored parameters when it knows their hash and format.
type MismatchError struct {
	Key        string // the filter's key
	Stored     Params // parameters of the current version in Redis
	Configured Params // parameters from this instance's Options
	Format     string // stored format, when this package cannot read it
}

// Error says what differs and how to fix it.
func (e *MismatchError) Error() string {
	if e.Format != "" {
		return fmt.Sprintf("bloom: filter %s has storage format %q, this package reads %q: rebuild it with this version of the package", e.Key, e.Format, format)
	}
	return fmt.Sprintf("bloom: filter %s was built with %v, Options give %v: give every instance the same ExpectedItems and FalsePositiveRate, or Rebuild", e.Key, e.Stored, e.Configured)
}

// Is makes errors.Is(err, ErrMismatch) true.
func (e *MismatchError) Is(target error) bool { return target == ErrMismatch }

// version is one bitmap of the filter and its parameters.
type version struct {
	id, m, k uint64
	hash     int
	spec     string // as stored: "id:m:k:hash"
}

func newVersion(id uint64, p Params) *version {
	v := &version{id: id, m: p.M, k: p.K, hash: p.Hash}
	v.spec = fmt.Sprintf("%d:%d:%d:%d", id, p.M, p.K, p.Hash)
	return v
}

func parseVersion(s string) (*version, bool) {
	parts := strings.Split(s, ":")
	if len(parts) != 4 {
		return nil, false
	}
	var n [3]uint64
	for i := range n {
		var err error
		if n[i], err = strconv.ParseUint(parts[i], 10, 64); err != nil {
			return nil, false
		}
	}
	h, err := strconv.Atoi(parts[3])
	if err != nil || n[1] == 0 || n[2] == 0 {
		return nil, false
	}
	return newVersion(n[0], Params{M: n[1], K: n[2], Hash: h}), true
}

func (v *version) params() Params { return Params{M: v.m, K: v.k, Hash: v.hash} }

// appendOffsets appends the SETBIT offsets of key (bloom/v3's locations
// mod m) to buf as decimals, each followed by a space: the scripts take
// them as one argument.
func (v *version) appendOffsets(buf []byte, key string) []byte {
	for _, l := range bloomv3.Locations([]byte(key), uint(v.k)) {
		buf = strconv.AppendUint(buf, l%v.m, 10)
		buf = append(buf, ' ')
	}
	return buf
}

func containsVersion(vs []*version, v *version) bool {
	for _, w := range vs {
		if w.id == v.id {
			return true
		}
	}
	return false
}

// state is the parameters hash as read at one moment.
type state struct {
	cur, next, prev *version
	format          string
	prevSince       int64 // when prev was replaced, Redis time in ms
	err             error // why it is not usable, nil when it is
	read            time.Time
}

// usable reports whether cur exists and matches this instance's Params.
func (s *state) usable() bool { return s.err == nil }

// targets returns the versions Add writes to.
func (s *state) targets() []*version {
	var out []*version
	for _, v := range []*version{s.cur, s.next, s.prev} {
		if v != nil {
			out = append(out, v)
		}
	}
	return out
}

// readable reports whether the stored format is one this package writes
// (or none is stored yet).
func (s *state) readable() bool { return s.format == "" || s.format == format }

func (f *Filter) parse(h map[string]string) *state {
	st := &state{format: h["format"], read: time.Now()}
	st.cur, _ = parseVersion(h["cur"])
	st.next, _ = parseVersion(h["next"])
	st.prev, _ = parseVersion(h["prev"])
	st.prevSince, _ = strconv.ParseInt(h["prev_since"], 10, 64)
	switch {
	case st.format != "" && st.format != format:
		st.err = &MismatchError{Key: f.key, Format: st.format}
	case st.cur == nil:
		st.err = ErrNotWarm
	case st.cur.params() != f.own:
		st.err = &MismatchError{Key: f.key, Stored: st.cur.params(), Configured: f.own}
	}
	return st
}

// params returns the parameters, read again when older than ParamsRefresh.
// While one goroutine reads them, the others go on with the older copy: it
// is safe, because a version's bitmap is deleted before it is unlisted and
// a missing bitmap answers "may contain".
func (f *Filter) params(ctx context.Context) (*state, error) {
	if f.err != nil {
		return nil, f.err
	}
	st := f.state.Load()
	if st != nil && time.Since(st.read) < f.opts.ParamsRefresh {
		return st, nil
	}
	select {
	case f.stateSem <- struct{}{}:
	default:
		if st != nil {
			return st, nil
		}
		// No parameters yet: wait for the read under way, as long as ctx lets.
		select {
		case f.stateSem <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	defer func() { <-f.stateSem }()
	if st := f.state.Load(); st != nil && time.Since(st.read) < f.opts.ParamsRefresh {
		return st, nil
	}
	st, err := f.reloadParams(ctx)
	if err != nil && redisFailed(ctx) {
		// Remembered as unusable until the next read is due, so that
		// lookups fail open at once while Redis is unreachable.
		f.state.Store(&state{err: err, read: time.Now()})
	}
	return st, err
}

// reloadParams reads the parameters now.
func (f *Filter) reloadParams(ctx context.Context) (*state, error) {
	h, err := f.rdb.HGetAll(ctx, f.key).Result()
	if err != nil {
		return nil, err
	}
	st := f.parse(h)
	f.state.Store(st)
	return st, nil
}

// Fill describes how full the current version of the filter is.
type Fill struct {
	Version uint64  // the current version
	Bits    uint64  // its size m
	Set     uint64  // bits set
	Ratio   float64 // Set/Bits
	// FalsePositiveRate is the share of absent keys answered "may contain"
	// now: Ratio^k. It passes Options.FalsePositiveRate once more than
	// ExpectedItems keys are in (0.157 at twice as many, for 0.01).
	FalsePositiveRate float64
	// Items estimates the keys in the version from Ratio: -m/k*ln(1-Ratio).
	Items float64
}

// Fill counts the bits set in the current version (BITCOUNT: O(m) work in
// Redis, so call it now and then, not per lookup). When FalsePositiveRate
// passes what the service accepts (twice Options.FalsePositiveRate, say),
// give every instance a larger ExpectedItems and Rebuild. It returns
// ErrNotWarm with no current version, a *MismatchError for parameters
// other than Options, and ErrNotWarm when the bitmap is missing.
func (f *Filter) Fill(ctx context.Context) (Fill, error) {
	st, err := f.reloadParams(ctx)
	if err != nil {
		return Fill{}, fmt.Errorf("bloom: fill %s: %w", f.key, err)
	}
	if st.err != nil {
		return Fill{}, st.err
	}
	v := st.cur
	var exists, count *redis.IntCmd
	_, err = f.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		exists = p.Exists(ctx, f.bitmapKey(v.id))
		count = p.BitCount(ctx, f.bitmapKey(v.id), nil)
		return nil
	})
	if err != nil {
		return Fill{}, fmt.Errorf("bloom: fill %s: %w", f.key, err)
	}
	if exists.Val() == 0 {
		return Fill{}, ErrNotWarm
	}
	fl := Fill{Version: v.id, Bits: v.m, Set: uint64(count.Val())}
	fl.Ratio = float64(fl.Set) / float64(fl.Bits)
	fl.FalsePositiveRate = math.Pow(fl.Ratio, float64(v.k))
	fl.Items = -float64(v.m) / float64(v.k) * math.Log1p(-fl.Ratio)
	return fl, nil
}
