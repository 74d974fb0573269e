package bloom

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bloomv3 "github.com/bits-and-blooms/bloom/v3"
	"github.com/redis/go-redis/v9"
)

var (
	// ErrMismatch is matched (errors.Is) by a *MismatchError: the filter in
	// Redis was built with parameters other than this instance's Options.
	ErrMismatch = errors.New("bloom: stored parameters differ from the configured ones")
	// ErrNotWarm is returned by Check while no version of the filter is
	// current: it has not been warmed yet, or it was deleted.
	ErrNotWarm = errors.New("bloom: filter not warmed")
	// ErrBuilding is returned by Rebuild when another build of the same
	// filter is running, or took this one over after Options.BuildTimeout.
	ErrBuilding = errors.New("bloom: another build is in progress")
	// ErrNoLocal is returned by Run when Options.Local is off.
	ErrNoLocal = errors.New("bloom: Run keeps the local copy: set Options.Local")
)

const (
	// HashVersion names the bit locations this package computes: those of
	// bits-and-blooms/bloom/v3 Locations (128-bit murmur3, four base hashes),
	// taken modulo m. Another hash would need another number.
	HashVersion = 1
	// format is the layout of the parameters hash and of the bitmaps (bit i
	// at SETBIT offset i, that is byte i/8, mask 0x80>>(i%8)).
	format = "1"
)

var (
	//go:embed test.lua
	testSrc    string
	testScript = redis.NewScript(testSrc)
	//go:embed add.lua
	addSrc    string
	addScript = redis.NewScript(addSrc)
	//go:embed begin.lua
	beginSrc    string
	beginScript = redis.NewScript(beginSrc)
	//go:embed swap.lua
	swapSrc    string
	swapScript = redis.NewScript(swapSrc)
	//go:embed unlist.lua
	unlistSrc    string
	unlistScript = redis.NewScript(unlistSrc)
)

// Options configures a Filter. The zero value is usable.
type Options struct {
	// ExpectedItems is the number of keys the filter is sized for (n).
	// Default: 1,000,000.
	ExpectedItems uint
	// FalsePositiveRate is the share of absent keys answered "may contain"
	// once ExpectedItems keys are in. With ExpectedItems it fixes m and k
	// (bloom/v3 EstimateParameters), which every instance must agree on.
	// Default: 0.01.
	FalsePositiveRate float64
	// Local keeps a copy of the current bitmap in this process, so that
	// MayContain needs no round trip while Run keeps the copy in sync.
	// Default: false.
	Local bool
	// LookupTimeout bounds the Redis requests of one MayContain that the
	// local copy does not answer: past it the lookup answers "may contain"
	// and the filter answers at once for a while, so a hung or dead Redis
	// costs a read at most this long (the client must honour context
	// deadlines: redis.Options.ContextTimeoutEnabled). Negative leaves the
	// requests to the client's own timeouts. Default: 100ms.
	LookupTimeout time.Duration
	// ParamsRefresh is how long the parameters read from Redis are used
	// before they are read again. Default: 1s.
	ParamsRefresh time.Duration
	// ReloadInterval is how often Run reloads the whole local copy, on top
	// of the adds it receives one by one. Default: 5m.
	ReloadInterval time.Duration
	// DropDelay is how long Rebuild keeps the replaced version, still
	// written by Add, before it deletes it, so that instances that have not
	// yet re-read the parameters keep answering from it. Default: 2*ParamsRefresh.
	DropDelay time.Duration
	// BuildTimeout is how long a Warm or Rebuild may take before another
	// one may replace it (its builder crashed, presumably). Default: 1h.
	BuildTimeout time.Duration
	// BeforeSwap, when set, is called by Warm and Rebuild after the scan has
	// been written to the new version and before that version becomes
	// current; an error abandons the build. An Add made before a build
	// began reaches only the old version, so a row whose Add came before
	// the build and whose commit came after the scan's snapshot is missing
	// from the new version until the binlog invalidator's Add, made after
	// the commit, puts it there. Give BeforeSwap a function that waits
	// until the invalidator has applied everything committed before it was
	// called (invalidate's Invalidator.WaitApplied), so that the swap never
	// installs a version without such a row. Default: nil (no wait).
	BeforeSwap func(ctx context.Context) error
	// Progress, when set, is called during Warm and Rebuild every
	// ProgressEvery keys and once more when the new version is current.
	// Default: nil.
	Progress func(Progress)
	// ProgressEvery is the number of keys between two Progress calls.
	// Default: 100,000.
	ProgressEvery int
	// Logger receives the errors Run retries after. Default: discard.
	Logger *slog.Logger
}

func (o *Options) withDefaults() (Options, error) {
	var r Options
	if o != nil {
		r = *o
	}
	if r.ExpectedItems == 0 {
		r.ExpectedItems = 1_000_000
	}
	if r.FalsePositiveRate == 0 {
		r.FalsePositiveRate = 0.01
	}
	if !(r.FalsePositiveRate > 0 && r.FalsePositiveRate < 1) {
		return r, fmt.Errorf("bloom: Options.FalsePositiveRate is %v: use a rate in (0, 1), such as 0.01", r.FalsePositiveRate)
	}
	if r.LookupTimeout == 0 {
		r.LookupTimeout = 100 * time.Millisecond
	}
	if r.ParamsRefresh <= 0 {
		r.ParamsRefresh = time.Second
	}
	if r.ReloadInterval <= 0 {
		r.ReloadInterval = 5 * time.Minute
	}
	if r.DropDelay <= 0 {
		r.DropDelay = 2 * r.ParamsRefresh
	}
	if r.BuildTimeout <= 0 {
		r.BuildTimeout = time.Hour
	}
	if r.ProgressEvery <= 0 {
		r.ProgressEvery = 100_000
	}
	if r.Logger == nil {
		r.Logger = slog.New(slog.DiscardHandler)
	}
	return r, nil
}

// Stats are counters of a Filter since New.
type Stats struct {
	Lookups  uint64 // MayContain calls
	Absent   uint64 // MayContain calls that answered "cannot contain"
	FailOpen uint64 // MayContain calls that answered "may contain" with no filter to ask: not warm, missing, unreachable, mismatched
	Local    uint64 // MayContain calls answered by the local copy
	Added    uint64 // keys Add wrote to at least one version
	Resyncs  uint64 // times Run took the local copy out of service to reload it: a lost add, a reconnect, a vanished filter
	Live     bool   // the local copy is loaded and Run is receiving adds
	Version  uint64 // current version as last read, 0 for none
}

// Filter is a Bloom filter of keys that exist, kept in Redis and shared by
// every instance that opens the same key. It is safe for concurrent use.
type Filter struct {
	rdb  redis.UniversalClient
	key  string
	opts Options
	own  Params
	err  error // invalid Options, returned by every call that reports errors
	// publish is the command that sends to the filter's channel: SPUBLISH
	// on a Redis Cluster, where the channel then lives on the node of the
	// keys' slot and the add script can publish from inside itself.
	publish string

	state    atomic.Pointer[state] // parameters as last read
	stateSem chan struct{}         // one reader of the parameters at a time
	local    atomic.Pointer[localCopy]
	live     atomic.Bool // Run is subscribed and local was loaded after that
	running  atomic.Bool // Run is running
	reloadMu sync.Mutex  // serialises local reloads with applied adds
	stats    struct{ lookups, absent, failOpen, local, added, resyncs atomic.Uint64 }

	// beforeReceive, set only by tests, runs in Run before each read from
	// the subscription, so that a test can hold the reader between reads.
	beforeReceive func()
}

// New returns a filter stored under key (a hash holding the parameters;
// each version's bitmap is key:v<N>). It does no I/O: the filter answers
// "may contain" until it is warmed (Warm) and the first call reads its
// parameters. On a Redis Cluster, key must have a hash tag
// ("{users}:bloom"), so that the hash, every version and the channel share
// a slot: the scripts touch several of them at once.
func New(rdb redis.UniversalClient, key string, opts *Options) *Filter {
	o, err := opts.withDefaults()
	m, k := bloomv3.EstimateParameters(o.ExpectedItems, o.FalsePositiveRate)
	f := &Filter{
		rdb:      rdb,
		key:      key,
		opts:     o,
		own:      Params{M: uint64(m), K: uint64(k), Hash: HashVersion},
		err:      err,
		publish:  "PUBLISH",
		stateSem: make(chan struct{}, 1),
	}
	if _, ok := rdb.(*redis.ClusterClient); ok {
		f.publish = "SPUBLISH"
		if f.err == nil && !hasHashTag(key) {
			f.err = fmt.Errorf("bloom: key %q has no hash tag: on a Redis Cluster the filter's keys must share a slot; name it like \"{users}:bloom\"", key)
		}
	}
	return f
}

// hasHashTag reports whether key has a non-empty {...} section, which
// Redis Cluster hashes instead of the whole key.
func hasHashTag(key string) bool {
	i := strings.IndexByte(key, '{')
	if i < 0 {
		return false
	}
	j := strings.IndexByte(key[i+1:], '}')
	return j > 0
}

// notify publishes msg on the filter's channel.
func (f *Filter) notify(ctx context.Context, msg string) error {
	return f.rdb.Do(ctx, f.publish, f.channel(), msg).Err()
}

// Params returns the parameters this instance's Options give.
func (f *Filter) Params() Params { return f.own }

// Stats returns the filter's counters.
func (f *Filter) Stats() Stats {
	s := Stats{
		Lookups:  f.stats.lookups.Load(),
		Absent:   f.stats.absent.Load(),
		FailOpen: f.stats.failOpen.Load(),
		Local:    f.stats.local.Load(),
		Added:    f.stats.added.Load(),
		Resyncs:  f.stats.resyncs.Load(),
		Live:     f.live.Load(),
	}
	if st := f.state.Load(); st != nil && st.cur != nil {
		s.Version = st.cur.id
	}
	return s
}

// MayContain reports whether key may have been added. False means it was
// never added to the current version: no row with that key existed when
// the version was built, nor was one added since. It answers true whenever
// it cannot tell: no version yet, the bitmap missing, Redis unreachable,
// parameters that differ from Options. It implements cache.Filter.
func (f *Filter) MayContain(ctx context.Context, key string) bool {
	f.stats.lookups.Add(1)
	if f.live.Load() {
		if lc := f.local.Load(); lc != nil {
			f.stats.local.Add(1)
			return f.answer(lc.test(key))
		}
	}
	if f.opts.LookupTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, f.opts.LookupTimeout, errLookupTimeout)
		defer cancel()
	}
	st, err := f.params(ctx)
	if err != nil || !st.usable() {
		return f.failOpen()
	}
	v := st.cur
	var buf [160]byte
	offsets := string(v.appendOffsets(buf[:0], key))
	res, err := testScript.Run(ctx, f.rdb, []string{f.bitmapKey(v.id)}, offsets).Int()
	switch {
	case err != nil:
		if redisFailed(ctx) {
			// Redis is failing: answer at once for a while rather than have
			// every lookup wait for the client's timeouts.
			f.state.CompareAndSwap(st, &state{err: err, read: time.Now()})
		}
		return f.failOpen()
	case res < 0:
		// The bitmap is gone: a rebuild dropped it after swapping in a new
		// version, or someone deleted it. Read the parameters again next time.
		f.state.CompareAndSwap(st, nil)
		return f.failOpen()
	}
	return f.answer(res == 1)
}

// errLookupTimeout ends a lookup's Redis requests past Options.LookupTimeout.
var errLookupTimeout = errors.New("bloom: lookup timed out")

// redisFailed reports whether a failed request of a lookup under ctx says
// Redis is failing, rather than that the caller gave up.
func redisFailed(ctx context.Context) bool {
	return ctx.Err() == nil || context.Cause(ctx) == errLookupTimeout
}

func (f *Filter) answer(ok bool) bool {
	if !ok {
		f.stats.absent.Add(1)
	}
	return ok
}

func (f *Filter) failOpen() bool {
	f.stats.failOpen.Add(1)
	return true
}

// Add records keys in every version of the filter: the current one, one
// being built and one being dropped. Call it for every new row, from the
// writer's process and from the binlog invalidator. An error means some
// keys may be missing from Redis: retry. Before the filter is warmed, Add
// has nothing to write and returns nil.
//
// An Add before the row commits (a false positive if the transaction
// rolls back) leaves no window in which a reader of the current version is
// told the new row cannot exist. It does not survive a Rebuild that began
// after it and whose scan ran before the commit: the version that build
// installs lacks the key until the binlog invalidator's Add, made after
// the commit, reaches it (see Rebuild).
//
// Add checks the listed versions and writes in one script, which also
// publishes the bits it set with a per-version sequence number for the
// local copies, and writes again to any version it did not know of.
func (f *Filter) Add(ctx context.Context, keys ...string) error {
	if f.err != nil {
		return f.err
	}
	if len(keys) == 0 {
		return nil
	}
	var known []*version
	if st := f.state.Load(); st != nil && st.readable() {
		known = st.targets()
	}
	h, err := f.write(ctx, known, keys)
	if err != nil {
		return fmt.Errorf("bloom: add: %w", err)
	}
	st := f.parse(h)
	f.state.Store(st)
	if !st.readable() {
		return st.err
	}
	targets := st.targets()
	var missed []*version
	for _, v := range targets {
		if !containsVersion(known, v) {
			missed = append(missed, v)
		}
	}
	if len(missed) > 0 {
		if _, err := f.write(ctx, missed, keys); err != nil {
			return fmt.Errorf("bloom: add: %w", err)
		}
	}
	if len(targets) > 0 {
		f.stats.added.Add(uint64(len(keys)))
	}
	if f.local.Load() != nil {
		// Under reloadMu: a reload that read the bitmap before our write
		// must not replace the copy after we added to it.
		f.reloadMu.Lock()
		if lc := f.local.Load(); lc != nil && containsVersion(targets, lc.v) {
			lc.add(keys)
		} else if lc != nil {
			// The copy's version is no longer listed: Run has not caught up
			// with a rebuild yet. Ask Redis until it has.
			f.local.CompareAndSwap(lc, nil)
		}
		f.reloadMu.Unlock()
	}
	for _, v := range targets {
		if v.hash != HashVersion {
			return &MismatchError{Key: f.key, Stored: v.params(), Configured: f.own}
		}
	}
	return nil
}

// addBatch bounds the offsets one script call sets, so that a large Add
// does not hold Redis for long.
const addBatch = 1024

// write runs the add script for keys on versions, in one pipeline of one
// call per addBatch keys, and returns the parameters hash as the first
// call read it.
func (f *Filter) write(ctx context.Context, versions []*version, keys []string) (map[string]string, error) {
	var vs []*version
	for _, v := range versions {
		if v.hash == HashVersion { // otherwise unknown bit locations: Add reports the mismatch
			vs = append(vs, v)
		}
	}
	var calls []*redis.Cmd
	_, err := f.pipe(ctx, func(p redis.Pipeliner) {
		calls = calls[:0]
		for i := 0; i < len(keys) || i == 0; i += addBatch {
			batch := keys[i:min(i+addBatch, len(keys))]
			redisKeys := []string{f.key}
			args := []any{f.channel(), f.publish}
			for _, v := range vs {
				var offsets []byte
				for _, key := range batch {
					offsets = v.appendOffsets(offsets, key)
				}
				redisKeys = append(redisKeys, f.bitmapKey(v.id))
				args = append(args, v.spec, string(offsets))
			}
			calls = append(calls, addScript.EvalSha(ctx, p, redisKeys, args...))
		}
	})
	if err != nil {
		return nil, err
	}
	res, err := calls[0].Slice()
	if err != nil || len(res) != 2 {
		return nil, fmt.Errorf("add script: %v %w", res, err)
	}
	flat, _ := res[1].([]any)
	h := make(map[string]string, len(flat)/2)
	for i := 0; i+1 < len(flat); i += 2 {
		k, _ := flat[i].(string)
		v, _ := flat[i+1].(string)
		h[k] = v
	}
	return h, nil
}

// pipe runs a pipeline, loading the scripts and running it once more when
// Redis does not have them cached (after a restart or SCRIPT FLUSH). Every
// pipeline here is safe to repeat.
func (f *Filter) pipe(ctx context.Context, fill func(redis.Pipeliner)) ([]redis.Cmder, error) {
	for attempt := 0; ; attempt++ {
		cmds, err := f.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			fill(p)
			return nil
		})
		if err == nil || attempt > 0 || !noScript(cmds) {
			return cmds, err
		}
		for _, s := range []*redis.Script{addScript, testScript} {
			if err := s.Load(ctx, f.rdb).Err(); err != nil {
				return cmds, err
			}
		}
	}
}

func noScript(cmds []redis.Cmder) bool {
	for _, c := range cmds {
		if redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
			return true
		}
	}
	return false
}

// Check reads the filter's parameters from Redis and reports whether this
// instance can use them: nil, ErrNotWarm, a *MismatchError (ErrMismatch),
// an invalid Options error, or the Redis error. Call it at start-up to
// surface a misconfiguration; MayContain answers "may contain" meanwhile.
func (f *Filter) Check(ctx context.Context) error {
	if f.err != nil {
		return f.err
	}
	st, err := f.reloadParams(ctx)
	if err != nil {
		return fmt.Errorf("bloom: check %s: %w", f.key, err)
	}
	return st.err
}

// Delete removes the filter from Redis: every listed version's bitmap,
// then the parameters. Instances answer "may contain" until it is warmed
// again. The order matters, and is why the parameters hash should not be
// deleted by hand alone: an instance that still holds the parameters must
// find no bitmap rather than one that no longer receives adds.
func (f *Filter) Delete(ctx context.Context) error {
	st, err := f.reloadParams(ctx)
	if err != nil {
		return fmt.Errorf("bloom: delete %s: %w", f.key, err)
	}
	for _, v := range st.targets() {
		if err := f.rdb.Del(ctx, f.bitmapKey(v.id)).Err(); err != nil {
			return fmt.Errorf("bloom: delete %s: %w", f.key, err)
		}
	}
	if err := f.notify(ctx, msgReload); err != nil {
		return fmt.Errorf("bloom: delete %s: %w", f.key, err)
	}
	if err := f.rdb.Del(ctx, f.key).Err(); err != nil {
		return fmt.Errorf("bloom: delete %s: %w", f.key, err)
	}
	f.state.Store(nil)
	return nil
}

func (f *Filter) bitmapKey(id uint64) string { return f.key + ":v" + strconv.FormatUint(id, 10) }
func (f *Filter) channel() string            { return f.key + ":adds" }
