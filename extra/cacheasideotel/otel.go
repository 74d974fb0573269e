// Package cacheasideotel reports the figures of cacheaside's caches,
// invalidators and Bloom filters as OpenTelemetry metrics.
//
// It lives in its own module so that the core module does not depend on
// OpenTelemetry. Its instruments are asynchronous: one callback reads each
// part's Stats when the SDK collects, so nothing is counted twice and nothing
// costs anything between collections.
//
//	m, err := cacheasideotel.New(otel.Meter("cacheaside"))
//	...
//	m.AddCache("users", users)
//	m.AddInvalidator("main", inv)
//	m.AddFilter("users", usersFilter)
//	defer m.Close()
//
// Each observation carries the name given to Add* as the attribute
// cacheaside.cache, cacheaside.source or cacheaside.filter.
package cacheasideotel

import (
	"context"
	"errors"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/cacheaside/cacheaside/bloom"
	"github.com/cacheaside/cacheaside/cache"
	"github.com/cacheaside/cacheaside/invalidate"
)

// CacheStats is what AddCache reads: a *cache.Cache.
type CacheStats interface{ Stats() cache.Stats }

// InvalidatorStats is what AddInvalidator reads: an *invalidate.Invalidator.
type InvalidatorStats interface{ Stats() invalidate.Stats }

// FilterStats is what AddFilter reads: a *bloom.Filter.
type FilterStats interface{ Stats() bloom.Stats }

// Metrics holds the instruments and the parts they observe. It is safe for
// concurrent use; parts may be added at any time.
type Metrics struct {
	caches       *family[cache.Stats]
	invalidators *family[invalidate.Stats]
	filters      *family[bloom.Stats]
	reg          metric.Registration
}

// New creates the instruments on meter and registers the callback that
// observes every part added later.
func New(meter metric.Meter) (*Metrics, error) {
	m := &Metrics{}
	var errs []error
	m.caches, errs = newFamily(meter, "cacheaside.cache", cacheMetrics, errs)
	m.invalidators, errs = newFamily(meter, "cacheaside.source", invalidatorMetrics, errs)
	m.filters, errs = newFamily(meter, "cacheaside.filter", filterMetrics, errs)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	var all []metric.Observable
	all = append(all, m.caches.instruments()...)
	all = append(all, m.invalidators.instruments()...)
	all = append(all, m.filters.instruments()...)
	reg, err := meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		m.caches.observe(o)
		m.invalidators.observe(o)
		m.filters.observe(o)
		return nil
	}, all...)
	if err != nil {
		return nil, err
	}
	m.reg = reg
	return m, nil
}

// AddCache observes c's Stats with cacheaside.cache=name.
func (m *Metrics) AddCache(name string, c CacheStats) { m.caches.add(name, c.Stats) }

// AddInvalidator observes inv's Stats with cacheaside.source=name.
func (m *Metrics) AddInvalidator(name string, inv InvalidatorStats) {
	m.invalidators.add(name, inv.Stats)
}

// AddFilter observes f's Stats with cacheaside.filter=name.
func (m *Metrics) AddFilter(name string, f FilterStats) { m.filters.add(name, f.Stats) }

// Close unregisters the callback; the parts are no longer observed.
func (m *Metrics) Close() error { return m.reg.Unregister() }

// figure is one number of a Stats type S: a counter (monotonic) or a gauge.
type figure[S any] struct {
	name, unit, help string
	count            func(*S) uint64  // set for counters
	gauge            func(*S) float64 // set for gauges
}

type family[S any] struct {
	attr     string
	figures  []figure[S]
	counters []metric.Int64ObservableCounter // by figure index, nil for gauges
	gauges   []metric.Float64ObservableGauge // by figure index, nil for counters
	mu       sync.Mutex
	parts    []part[S]
}

type part[S any] struct {
	attrs metric.MeasurementOption
	stats func() S
}

func newFamily[S any](meter metric.Meter, attr string, figures []figure[S], errs []error) (*family[S], []error) {
	f := &family[S]{attr: attr, figures: figures,
		counters: make([]metric.Int64ObservableCounter, len(figures)),
		gauges:   make([]metric.Float64ObservableGauge, len(figures))}
	for i, fig := range figures {
		var err error
		if fig.count != nil {
			f.counters[i], err = meter.Int64ObservableCounter(fig.name, metric.WithUnit(fig.unit), metric.WithDescription(fig.help))
		} else {
			f.gauges[i], err = meter.Float64ObservableGauge(fig.name, metric.WithUnit(fig.unit), metric.WithDescription(fig.help))
		}
		errs = append(errs, err)
	}
	return f, errs
}

func (f *family[S]) instruments() []metric.Observable {
	var out []metric.Observable
	for i := range f.figures {
		if f.counters[i] != nil {
			out = append(out, f.counters[i])
		} else {
			out = append(out, f.gauges[i])
		}
	}
	return out
}

func (f *family[S]) add(name string, stats func() S) {
	f.mu.Lock()
	f.parts = append(f.parts, part[S]{metric.WithAttributes(attribute.String(f.attr, name)), stats})
	f.mu.Unlock()
}

func (f *family[S]) observe(o metric.Observer) {
	f.mu.Lock()
	parts := append([]part[S](nil), f.parts...)
	f.mu.Unlock()
	for _, p := range parts {
		s := p.stats()
		for i, fig := range f.figures {
			if fig.count != nil {
				o.ObserveInt64(f.counters[i], int64(fig.count(&s)), p.attrs)
			} else {
				o.ObserveFloat64(f.gauges[i], fig.gauge(&s), p.attrs)
			}
		}
	}
}

func counter[S any](name, unit, help string, v func(*S) uint64) figure[S] {
	return figure[S]{name: name, unit: unit, help: help, count: v}
}

func gauge[S any](name, unit, help string, v func(*S) float64) figure[S] {
	return figure[S]{name: name, unit: unit, help: help, gauge: v}
}

func boolean(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

var cacheMetrics = []figure[cache.Stats]{
	counter("cacheaside.cache.hits", "{read}", "Reads answered by a value in Redis.", func(s *cache.Stats) uint64 { return s.Hits }),
	counter("cacheaside.cache.misses", "{read}", "Reads that found no usable entry.", func(s *cache.Stats) uint64 { return s.Misses }),
	counter("cacheaside.cache.loads", "{call}", "Loader calls.", func(s *cache.Stats) uint64 { return s.Loads }),
	counter("cacheaside.cache.lease_waits", "{load}", "Loads that waited for another process's lease.", func(s *cache.Stats) uint64 { return s.LeaseWaits }),
	counter("cacheaside.cache.not_found_hits", "{read}", "Reads answered by a cached not-found entry.", func(s *cache.Stats) uint64 { return s.NotFoundHits }),
	counter("cacheaside.cache.filter_rejects", "{read}", "Reads answered not-found by the Bloom filter.", func(s *cache.Stats) uint64 { return s.FilterRejects }),
	counter("cacheaside.cache.stale", "{entry}", "Entries found older than a generation bump.", func(s *cache.Stats) uint64 { return s.Stale }),
	counter("cacheaside.cache.corrupt", "{entry}", "Entries that did not decode and were replaced.", func(s *cache.Stats) uint64 { return s.Corrupt }),
	counter("cacheaside.cache.fills_refused", "{fill}", "Loaded values not stored because an invalidation came first.", func(s *cache.Stats) uint64 { return s.FillsRefused }),
	counter("cacheaside.cache.early_refreshes", "{load}", "Values reloaded before expiry.", func(s *cache.Stats) uint64 { return s.EarlyRefreshes }),
	counter("cacheaside.cache.redis_errors", "{error}", "Failed Redis calls.", func(s *cache.Stats) uint64 { return s.Errors }),
	counter("cacheaside.cache.degraded", "{read}", "Reads answered by the loader without Redis.", func(s *cache.Stats) uint64 { return s.Degraded }),
	counter("cacheaside.cache.invalidations", "{key}", "Invalidated keys and generation bumps.", func(s *cache.Stats) uint64 { return s.Invalidations }),
	counter("cacheaside.cache.oom_deletes", "{key}", "Keys invalidated with a plain DEL because Redis refused a tombstone for memory.", func(s *cache.Stats) uint64 { return s.OOMDeletes }),
	gauge("cacheaside.cache.breaker_open", "1", "1 while the circuit breaker keeps reads away from Redis.", func(s *cache.Stats) float64 { return boolean(s.BreakerOpen) }),
}

var invalidatorMetrics = []figure[invalidate.Stats]{
	gauge("cacheaside.invalidator.leader", "1", "1 while this instance consumes the binlog.", func(s *invalidate.Stats) float64 { return boolean(s.Leader) }),
	gauge("cacheaside.invalidator.epoch", "1", "Fencing epoch of this instance's leadership, 0 when standing by.", func(s *invalidate.Stats) float64 { return float64(s.Epoch) }),
	counter("cacheaside.invalidator.transactions", "{transaction}", "Transactions whose invalidations Redis acknowledged.", func(s *invalidate.Stats) uint64 { return s.Transactions }),
	counter("cacheaside.invalidator.rows", "{row}", "Row changes acknowledged.", func(s *invalidate.Stats) uint64 { return s.Rows }),
	counter("cacheaside.invalidator.keys", "{key}", "Keys invalidated.", func(s *invalidate.Stats) uint64 { return s.Keys }),
	counter("cacheaside.invalidator.batches", "{batch}", "Redis round trips of invalidations.", func(s *invalidate.Stats) uint64 { return s.Batches }),
	counter("cacheaside.invalidator.retries", "{attempt}", "Failed invalidation attempts, retried.", func(s *invalidate.Stats) uint64 { return s.Retries }),
	counter("cacheaside.invalidator.flushes", "{flush}", "Whole-cache flushes after a lost binlog position.", func(s *invalidate.Stats) uint64 { return s.Flushes }),
	counter("cacheaside.invalidator.filter_resets", "{reset}", "Deletions of the Bloom filter.", func(s *invalidate.Stats) uint64 { return s.FilterResets }),
	gauge("cacheaside.invalidator.pending", "{transaction}", "Transactions taken from the binlog and not yet acknowledged by Redis.", func(s *invalidate.Stats) float64 { return float64(s.Pending) }),
	gauge("cacheaside.invalidator.lag.p50", "s", "Median time from a transaction's commit to Redis's acknowledgement.", func(s *invalidate.Stats) float64 { return s.LagP50.Seconds() }),
	gauge("cacheaside.invalidator.lag.p99", "s", "99th percentile of the time from commit to Redis's acknowledgement.", func(s *invalidate.Stats) float64 { return s.LagP99.Seconds() }),
	gauge("cacheaside.invalidator.apply.p50", "s", "Median time from a transaction's arrival to Redis's acknowledgement.", func(s *invalidate.Stats) float64 { return s.ApplyP50.Seconds() }),
	gauge("cacheaside.invalidator.apply.p99", "s", "99th percentile of the time from arrival to Redis's acknowledgement.", func(s *invalidate.Stats) float64 { return s.ApplyP99.Seconds() }),
}

var filterMetrics = []figure[bloom.Stats]{
	counter("cacheaside.bloom.lookups", "{lookup}", "MayContain calls.", func(s *bloom.Stats) uint64 { return s.Lookups }),
	counter("cacheaside.bloom.absent", "{lookup}", "Lookups answered \"cannot contain\".", func(s *bloom.Stats) uint64 { return s.Absent }),
	counter("cacheaside.bloom.fail_open", "{lookup}", "Lookups answered \"may contain\" with no filter to ask.", func(s *bloom.Stats) uint64 { return s.FailOpen }),
	counter("cacheaside.bloom.local", "{lookup}", "Lookups answered by the local copy.", func(s *bloom.Stats) uint64 { return s.Local }),
	counter("cacheaside.bloom.added", "{key}", "Keys added.", func(s *bloom.Stats) uint64 { return s.Added }),
	counter("cacheaside.bloom.resyncs", "{reload}", "Times the local copy was taken out of service to reload it.", func(s *bloom.Stats) uint64 { return s.Resyncs }),
	gauge("cacheaside.bloom.live", "1", "1 while the local copy is loaded and receiving adds.", func(s *bloom.Stats) float64 { return boolean(s.Live) }),
	gauge("cacheaside.bloom.version", "1", "Current version of the filter, 0 for none.", func(s *bloom.Stats) float64 { return float64(s.Version) }),
}
