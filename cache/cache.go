package cache

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"math"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"
)

var (
	// ErrNotFound reports that the requested row does not exist. A loader
	// returns it (or an error wrapping it) for a missing row; Fetch returns it
	// for a missing row, a cached not-found entry or a key the Filter rejects.
	ErrNotFound = errors.New("cache: not found")

	// ErrLoadTimeout is returned to the callers of a load whose loader has
	// not returned 100ms after Options.LoadTimeout (it ignores its ctx).
	// The next caller starts a new load.
	ErrLoadTimeout = errors.New("cache: loader did not return within LoadTimeout")

	// ErrLoaderPanic is wrapped by the *PanicError that every caller waiting
	// on a load receives when the loader panics, or the codec does while
	// the load is under way (a lease taken for it is given back).
	ErrLoaderPanic = errors.New("cache: loader panicked")
)

// PanicError carries a loader's (or the codec's) panic to every caller of
// the load. It unwraps to ErrLoaderPanic.
type PanicError struct {
	// Value is what the loader panicked with.
	Value any
	// Stack is the loader goroutine's stack at the panic.
	Stack []byte
}

// Error describes the panic.
func (e *PanicError) Error() string { return fmt.Sprintf("cache: loader panicked: %v", e.Value) }

// Unwrap returns ErrLoaderPanic.
func (e *PanicError) Unwrap() error { return ErrLoaderPanic }

// LoaderFunc loads the value of one key from the source of truth. It returns
// ErrNotFound when the row does not exist.
type LoaderFunc[T any] func(ctx context.Context) (T, error)

// Filter answers whether a key may exist. A false answer is final: Fetch
// returns ErrNotFound without a Redis round trip or a load. The bloom package's
// Filter satisfies it.
type Filter interface {
	MayContain(ctx context.Context, key string) bool
}

// Adder is a Filter that learns keys. When Options.Filter is one, Write
// and WriteStrong add their keys to it before fn runs, so that a row fn
// inserts passes the gate as soon as it commits: otherwise the Fetch right
// after the write would get ErrNotFound until the binlog invalidator adds
// the key. A key added for a write that inserts nothing only costs the
// filter a false positive. The bloom package's Filter is one.
type Adder interface {
	Add(ctx context.Context, keys ...string) error
}

// FetchOption adjusts one Fetch or FetchMany call.
type FetchOption struct {
	ttl time.Duration
}

// WithTTL sets the time to live of the entry a call fills, instead of
// Options.TTL. Jitter still applies. A d of zero or less is ignored.
func WithTTL(d time.Duration) FetchOption { return FetchOption{ttl: d} }

// Options configures a Cache. The zero value of every field means its default.
type Options struct {
	// TTL is the time to live of a filled value, before jitter. Default: 10m.
	TTL time.Duration
	// Jitter spreads every TTL uniformly over [TTL*(1-Jitter), TTL] so keys
	// filled together do not expire together. It is a fraction in (0, 1];
	// NoJitter disables it. Default: 0.1.
	Jitter float64
	// NotFoundTTL is the time to live of a not-found entry, before jitter.
	// Default: 30s.
	NotFoundTTL time.Duration
	// LeaseTTL bounds how long a lease keeps other processes waiting for a
	// load; a lease holder that dies is replaced after it. It should exceed the
	// loader's usual duration: a fill whose lease expired is refused. Default: 3s.
	LeaseTTL time.Duration
	// LeaseWait bounds how long a process waits for another process's lease
	// before it loads by itself without filling. Default: LeaseTTL.
	LeaseWait time.Duration
	// LeasePoll is the longest pause between two reads of a key held by
	// another process's lease; pauses start at an eighth of it, double, and
	// are jittered over their upper half. Values below 100µs mean 100µs, so
	// waiters never spin on Redis.
	// Default: 2ms.
	LeasePoll time.Duration
	// LoadTimeout bounds one loader call: its ctx ends then, and callers
	// wait at most 100ms more for a loader that ignores it (they get
	// ErrLoadTimeout). Default: LeaseTTL.
	LoadTimeout time.Duration
	// TombstoneTTL, when positive, makes Invalidate leave a tombstone for this
	// long instead of deleting the key: readers load from the source and do
	// not fill until it expires. Default: 0 (delete).
	TombstoneTTL time.Duration
	// VersionTTL is the life of the versioned tombstones InvalidateVersions
	// leaves. It should exceed the longest replica lag that loaders may read
	// through: after it, a lagging read may fill again. Default: 1m.
	VersionTTL time.Duration
	// KeepVersionFloors makes plain invalidations (Invalidate, Write,
	// WriteStrong) keep the version floor a key carries, by leaving a
	// versioned tombstone at that version instead of deleting it: a Write's
	// own invalidation then cannot remove the floor that the binlog
	// invalidator's InvalidateVersions just set. It costs a script per key
	// instead of a DEL (about 2x the time of a pipeline of DELs). Set it in
	// every process when any key is invalidated with versions. Default: false.
	KeepVersionFloors bool
	// Strong makes every Write hold tombstones on its keys while fn runs, so no
	// reader fills or is served a value older than the write (see WriteStrong).
	// Default: false.
	Strong bool
	// WriteTimeout is the life of the tombstones of a strong Write, the
	// deadline of its fn, and the bound of Write's own invalidations after fn.
	// Default: 10s.
	WriteTimeout time.Duration
	// DelayedInvalidation, when positive, makes Write invalidate its keys once
	// more this long after fn returns. Close cancels pending ones. Default: 0 (off).
	DelayedInvalidation time.Duration
	// EarlyRefresh is the beta of probabilistic early expiration (XFetch): a
	// read refreshes a value before it expires with a probability that grows
	// as expiry nears and with the value's load time. 1 is the usual choice;
	// 0 disables early refresh. Default: 0.
	EarlyRefresh float64
	// GenerationRefresh is how often a process re-reads a namespace's
	// generation (and the global one) from Redis; it bounds how long another
	// process keeps serving entries after InvalidateNamespace or
	// InvalidateAll. Default: 1s.
	GenerationRefresh time.Duration
	// Namespace names the namespace of a key, whose generation
	// InvalidateNamespace bumps. It must be fast and pure: the hit path
	// calls it. The default keeps whatever the keys' layout happens to be:
	// it suits "table:id" keys, but a key without a ':' is a namespace of
	// its own (one generation read and one table slot per key), so keys
	// laid out otherwise want a function of their own. Default: the text
	// before the key's first ':', or the whole key.
	Namespace func(key string) string
	// Prefix is put before the generation keys (<Prefix>gen:<namespace> and
	// <Prefix>gen). User keys are used as given. Default: "cacheaside:".
	Prefix string
	// Codec encodes values. Default: JSONCodec.
	Codec Codec
	// Filter, when set, is asked before Redis whether a key may exist.
	// Default: nil (no gate).
	Filter Filter
	// Logger receives non-fatal errors and state changes. Default: discard.
	Logger *slog.Logger
	// BreakerThreshold is the number of consecutive Redis failures that opens
	// the circuit breaker; while it is open, reads go straight to the loader.
	// Default: 5.
	BreakerThreshold int
	// BreakerCooldown is how long the breaker stays open before one read
	// probes Redis again. Default: 1s.
	BreakerCooldown time.Duration
	// RedisTimeout bounds each Redis request of a read (its GET, lease,
	// polls and fill), and never exceeds half the time left before the
	// caller's deadline, so that a read whose Redis hangs still has time to
	// be answered by the loader. A request cut short counts as a Redis
	// failure for the breaker. go-redis honours it only with
	// redis.Options.ContextTimeoutEnabled (see the package documentation
	// for the recommended client options). A negative value leaves every
	// request to the client's own timeouts, and spares the hit path the
	// bound's timer. Default: 100ms.
	RedisTimeout time.Duration
	// MaxDegradedLoads bounds concurrent loader calls of reads that bypass
	// Redis; excess reads wait for a slot or their context. Default: 4*GOMAXPROCS.
	MaxDegradedLoads int
}

// Validate reports the first setting that is out of range, naming it and
// the fix. New returns the same error: a bad setting is never replaced by
// a default in silence.
func (o *Options) Validate() error {
	if o == nil {
		return nil
	}
	for _, d := range o.durations() {
		if err := checkDuration(d.name, *d.v); err != nil {
			return err
		}
	}
	switch j := o.Jitter; {
	case math.IsNaN(j) || j > 1 || (j < 0 && j != NoJitter):
		return fmt.Errorf("cache: Options.Jitter is %v; use a fraction in (0, 1], 0 for the default 0.1, or NoJitter", j)
	}
	if math.IsNaN(o.EarlyRefresh) || math.IsInf(o.EarlyRefresh, 0) || o.EarlyRefresh < 0 {
		return fmt.Errorf("cache: Options.EarlyRefresh is %v; use 0 to disable or a positive beta such as 1", o.EarlyRefresh)
	}
	if o.BreakerThreshold < 0 {
		return fmt.Errorf("cache: Options.BreakerThreshold is %d; use 0 for the default or a positive count", o.BreakerThreshold)
	}
	if o.MaxDegradedLoads < 0 {
		return fmt.Errorf("cache: Options.MaxDegradedLoads is %d; use 0 for the default or a positive count", o.MaxDegradedLoads)
	}
	return nil
}

// NoJitter is the Options.Jitter that disables jitter (0 means the default).
const NoJitter = -1.0

type namedDuration struct {
	name string
	v    *time.Duration
}

func (o *Options) durations() []namedDuration {
	return []namedDuration{
		{"TTL", &o.TTL}, {"NotFoundTTL", &o.NotFoundTTL}, {"LeaseTTL", &o.LeaseTTL},
		{"LeaseWait", &o.LeaseWait}, {"LeasePoll", &o.LeasePoll}, {"LoadTimeout", &o.LoadTimeout},
		{"TombstoneTTL", &o.TombstoneTTL}, {"VersionTTL", &o.VersionTTL}, {"WriteTimeout", &o.WriteTimeout},
		{"DelayedInvalidation", &o.DelayedInvalidation}, {"GenerationRefresh", &o.GenerationRefresh},
		{"BreakerCooldown", &o.BreakerCooldown},
	}
}

func checkDuration(name string, v time.Duration) error {
	if v < 0 {
		return fmt.Errorf("cache: Options.%s is %v; use 0 for the default or a positive duration", name, v)
	}
	if v > 0 && v < time.Millisecond && name != "LeasePoll" {
		return fmt.Errorf("cache: Options.%s is %v; Redis expiries count milliseconds, use at least 1ms", name, v)
	}
	return nil
}

// config is Options with every default filled in.
type config struct {
	Options
	jitter float64
}

func newConfig(opts *Options) config {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.TTL, 10*time.Minute)
	def(&o.NotFoundTTL, 30*time.Second)
	def(&o.LeaseTTL, 3*time.Second)
	def(&o.LeaseWait, o.LeaseTTL)
	def(&o.LeasePoll, 2*time.Millisecond)
	o.LeasePoll = max(o.LeasePoll, minLeasePoll)
	def(&o.LoadTimeout, o.LeaseTTL)
	def(&o.WriteTimeout, 10*time.Second)
	def(&o.VersionTTL, time.Minute)
	def(&o.GenerationRefresh, time.Second)
	def(&o.BreakerCooldown, time.Second)
	if o.RedisTimeout == 0 {
		o.RedisTimeout = 100 * time.Millisecond
	}
	if o.Prefix == "" {
		o.Prefix = "cacheaside:"
	}
	if o.Codec == nil {
		o.Codec = JSONCodec{}
	}
	if o.Namespace == nil {
		o.Namespace = namespace
	}
	if o.BreakerThreshold == 0 {
		o.BreakerThreshold = 5
	}
	if o.MaxDegradedLoads == 0 {
		o.MaxDegradedLoads = 4 * runtime.GOMAXPROCS(0)
	}
	c := config{Options: o, jitter: o.Jitter}
	switch o.Jitter {
	case 0:
		c.jitter = 0.1
	case NoJitter:
		c.jitter = 0
	}
	return c
}

// epochSlots is the number of per-key flight epochs; keys share a slot by
// hash, and a shared slot only costs an extra load after an invalidation.
const epochSlots = 4096

// Cache is a read-through cache over one Redis deployment. It is safe for
// concurrent use; create one per process and share it.
type Cache struct {
	rdb    redis.UniversalClient
	cfg    config
	codec  Codec
	log    *slog.Logger
	single bool // rdb is a *redis.Client: MGET may span any keys
	// bounded says rdb honours context deadlines, so Options.RedisTimeout
	// can cut a request short (see bound).
	bounded bool
	gens    *generations
	reads   reads // GETs under way, shared by the callers of a key (share.go)
	breaker breaker
	sem     chan struct{}
	stats   counters

	group      singleflight.Group
	seed       maphash.Seed
	epochs     [epochSlots]atomic.Uint64
	allEpoch   atomic.Uint64 // bumped by InvalidateNamespace and InvalidateAll
	private    atomic.Uint64 // names flights nobody else joins
	background sync.WaitGroup
	refreshing sync.Map // keys with an early refresh under way

	born time.Time // for clock

	mu     sync.Mutex
	timers map[*time.Timer]struct{}
	closed bool

	// Test hooks, set only by tests before use.
	hookBeforeFill  func(key string)
	hookAfterLoad   func(key string)
	hookLeaseWaited func(key string)
	hookJoined      func(flightKey string)
	hookAfterGet    func(key string)
}

// New returns a Cache that stores entries in rdb (a *redis.Client or a
// *redis.ClusterClient that reads from masters). opts may be nil for
// defaults. New does no I/O; it returns an error that names the setting
// for options that Options.Validate rejects and for a client that would
// break the guarantee (see checkClient).
func New(rdb redis.UniversalClient, opts *Options) (*Cache, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if err := checkClient(rdb); err != nil {
		return nil, err
	}
	cfg := newConfig(opts)
	_, single := rdb.(*redis.Client)
	c := &Cache{
		rdb:    rdb,
		cfg:    cfg,
		codec:  cfg.Codec,
		log:    cfg.Logger,
		single: single,
		gens:   newGenerations(cfg.Prefix, cfg.GenerationRefresh),
		sem:    make(chan struct{}, cfg.MaxDegradedLoads),
		seed:   maphash.MakeSeed(),
		born:   time.Now(),
		timers: make(map[*time.Timer]struct{}),
	}
	c.breaker.init(cfg.BreakerThreshold, cfg.BreakerCooldown, c.log)
	c.reads.init()
	c.bounded = cfg.RedisTimeout > 0 && honoursContext(rdb)
	if cfg.RedisTimeout > 0 && !c.bounded {
		c.log.Warn("cache: the Redis client ignores context deadlines, so a hung Redis holds each read for the client's ReadTimeout; set ContextTimeoutEnabled in its options")
	}
	return c, nil
}

// checkClient refuses the clients that would serve a value older than an
// invalidation that has returned:
//
//   - *redis.Ring drops a shard that fails its health checks from its hash
//     ring and sends the shard's keys to another shard. An invalidation
//     made meanwhile lands on that other shard; when the first shard
//     returns, its old value (or a lease whose fill then succeeds) is
//     served again until its TTL. No Ring option turns the rehashing off,
//     so Ring is refused.
//   - A *redis.ClusterClient with ReadOnly, RouteByLatency or RouteRandomly
//     sends GETs to replicas, which apply an invalidation after the master
//     acknowledged it: a Fetch that starts after Invalidate returned may
//     read the old value there, and leases and fills on the master would
//     not see what the read saw.
func checkClient(rdb redis.UniversalClient) error {
	switch r := rdb.(type) {
	case nil:
		return errors.New("cache: New needs a Redis client, got nil")
	case *redis.Ring:
		return errors.New("cache: *redis.Ring is not supported: it moves a failing shard's keys to another shard, and invalidations made meanwhile are lost when the shard returns; use a *redis.ClusterClient or a *redis.Client")
	case *redis.ClusterClient:
		o := r.Options()
		var set []string
		for _, f := range []struct {
			name string
			on   bool
		}{{"ReadOnly", o.ReadOnly}, {"RouteByLatency", o.RouteByLatency}, {"RouteRandomly", o.RouteRandomly}} {
			if f.on {
				set = append(set, f.name)
			}
		}
		if len(set) > 0 {
			return fmt.Errorf("cache: redis.ClusterOptions.%s is set: reads from replicas may miss an invalidation that has returned; turn it off for the cache's client", strings.Join(set, ", "))
		}
	}
	return nil
}

// honoursContext reports whether rdb ends a request at its context's
// deadline: go-redis does only with ContextTimeoutEnabled. Clients of
// other types are assumed to.
func honoursContext(rdb redis.UniversalClient) bool {
	switch r := rdb.(type) {
	case *redis.Client:
		return r.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		return r.Options().ContextTimeoutEnabled
	}
	return true
}

// bound returns ctx limited for one Redis request of a read: at most
// Options.RedisTimeout, and at most half the time ctx has left, so that
// the loader still has the other half when Redis does not answer. The
// caller judges the outcome with ctx itself (redisResult): a request cut
// short while ctx is alive is a Redis failure. It costs the hit path a
// timer context (five allocations, a few percent of a GET on loopback);
// a negative RedisTimeout leaves requests to the client's own timeouts.
func (c *Cache) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if !c.bounded {
		return ctx, noCancel
	}
	d := c.cfg.RedisTimeout
	if dl, ok := ctx.Deadline(); ok {
		d = min(d, time.Until(dl)/2)
	}
	return context.WithTimeout(ctx, d)
}

func noCancel() {}

// Close cancels pending delayed invalidations and waits for running ones and
// for early refreshes started by Fetch. It does not close the Redis client.
// The Cache stays usable for reads and writes, without delayed invalidations
// and early refreshes.
func (c *Cache) Close() error {
	c.mu.Lock()
	c.closed = true
	for t := range c.timers {
		if t.Stop() {
			c.background.Done()
		}
		delete(c.timers, t)
	}
	c.mu.Unlock()
	c.background.Wait()
	return nil
}

// goBackground reports whether background work may start and counts it.
func (c *Cache) goBackground() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.background.Add(1)
	return true
}

// flightKey names the in-process flight of key and returns the key's
// epoch: a key's flights change with every in-process invalidation of it
// (race R10), so a Fetch that starts after Invalidate returned never joins
// a load that started before.
func (c *Cache) flightKey(key string) (string, uint64) {
	slot := c.epochs[maphash.String(c.seed, key)%epochSlots].Load()
	e := slot + c.allEpoch.Load()
	return strconv.FormatUint(e, 36) + "|" + key, slot
}

// bumpEpochs ends the current flights of keys for new callers.
func (c *Cache) bumpEpochs(keys []string) {
	for _, k := range keys {
		c.epochs[maphash.String(c.seed, k)%epochSlots].Add(1)
	}
}

// moveEpoch ends key's current flight for new callers, unless that happened
// since the caller read the key's epoch as seen.
func (c *Cache) moveEpoch(key string, seen uint64) {
	c.epochs[maphash.String(c.seed, key)%epochSlots].CompareAndSwap(seen, seen+1)
}

// clock returns monotonic nanoseconds since New.
func (c *Cache) clock() int64 { return int64(time.Since(c.born)) }

// since returns t on the scale of clock.
func (c *Cache) since(t time.Time) int64 { return int64(t.Sub(c.born)) }

// jittered spreads d uniformly over [d*(1-jitter), d], in whole milliseconds.
func (c *Cache) jittered(d time.Duration) time.Duration {
	if c.cfg.jitter > 0 {
		d -= time.Duration(rand.Float64() * c.cfg.jitter * float64(d))
	}
	return max(d.Truncate(time.Millisecond), time.Millisecond)
}

func (c *Cache) ttl(opts []FetchOption) time.Duration {
	ttl := c.cfg.TTL
	for _, o := range opts {
		if o.ttl > 0 {
			ttl = o.ttl
		}
	}
	return ttl
}
