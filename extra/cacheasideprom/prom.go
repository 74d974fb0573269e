// Package cacheasideprom exports the figures of cacheaside's caches,
// invalidators and Bloom filters as Prometheus metrics.
//
// It lives in its own module so that the core module does not depend on the
// Prometheus client. A Collector reads each part's Stats when Prometheus
// scrapes it; it keeps no counters of its own, so it costs nothing between
// scrapes and always agrees with Stats.
//
//	col := cacheasideprom.New(nil)
//	col.AddCache("users", users)
//	col.AddInvalidator("main", inv)
//	col.AddFilter("users", usersFilter)
//	prometheus.MustRegister(col)
//
// Every metric carries the name given to Add* as a label ("cache", "source"
// or "filter"), so one Collector serves any number of each.
package cacheasideprom

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cacheaside/cacheaside/bloom"
	"github.com/cacheaside/cacheaside/cache"
	"github.com/cacheaside/cacheaside/invalidate"
)

// Options configures a Collector.
type Options struct {
	// Namespace starts every metric name. Default: "cacheaside".
	Namespace string
	// ConstLabels are added to every metric. Default: none.
	ConstLabels prometheus.Labels
}

// CacheStats is what AddCache reads: a *cache.Cache.
type CacheStats interface{ Stats() cache.Stats }

// InvalidatorStats is what AddInvalidator reads: an *invalidate.Invalidator.
type InvalidatorStats interface{ Stats() invalidate.Stats }

// FilterStats is what AddFilter reads: a *bloom.Filter.
type FilterStats interface{ Stats() bloom.Stats }

// Collector is a prometheus.Collector over the Stats of the parts added to
// it. It is safe for concurrent use; parts may be added after it is
// registered.
type Collector struct {
	caches       *family[cache.Stats]
	invalidators *family[invalidate.Stats]
	filters      *family[bloom.Stats]
}

// New returns a Collector with no parts.
func New(opts *Options) *Collector {
	o := Options{}
	if opts != nil {
		o = *opts
	}
	if o.Namespace == "" {
		o.Namespace = "cacheaside"
	}
	return &Collector{
		caches:       newFamily(o, "cache", "cache", cacheMetrics),
		invalidators: newFamily(o, "invalidator", "source", invalidatorMetrics),
		filters:      newFamily(o, "bloom", "filter", filterMetrics),
	}
}

// AddCache exports c's Stats under the label cache=name.
func (c *Collector) AddCache(name string, s CacheStats) { c.caches.add(name, s.Stats) }

// AddInvalidator exports inv's Stats under the label source=name.
func (c *Collector) AddInvalidator(name string, s InvalidatorStats) {
	c.invalidators.add(name, s.Stats)
}

// AddFilter exports f's Stats under the label filter=name.
func (c *Collector) AddFilter(name string, s FilterStats) { c.filters.add(name, s.Stats) }

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	c.caches.describe(ch)
	c.invalidators.describe(ch)
	c.filters.describe(ch)
}

// Collect implements prometheus.Collector: it reads every part's Stats once.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.caches.collect(ch)
	c.invalidators.collect(ch)
	c.filters.collect(ch)
}

// metric is one figure of a Stats type S.
type metric[S any] struct {
	name, help string
	kind       prometheus.ValueType
	value      func(*S) float64
}

// family is the metrics of one kind of part and the parts added.
type family[S any] struct {
	metrics []metric[S]
	descs   []*prometheus.Desc
	mu      sync.Mutex
	parts   []part[S]
}

type part[S any] struct {
	name  string
	stats func() S
}

func newFamily[S any](o Options, subsystem, label string, metrics []metric[S]) *family[S] {
	f := &family[S]{metrics: metrics}
	for _, m := range metrics {
		f.descs = append(f.descs, prometheus.NewDesc(
			prometheus.BuildFQName(o.Namespace, subsystem, m.name), m.help, []string{label}, o.ConstLabels))
	}
	return f
}

func (f *family[S]) add(name string, stats func() S) {
	f.mu.Lock()
	f.parts = append(f.parts, part[S]{name, stats})
	f.mu.Unlock()
}

func (f *family[S]) describe(ch chan<- *prometheus.Desc) {
	for _, d := range f.descs {
		ch <- d
	}
}

func (f *family[S]) collect(ch chan<- prometheus.Metric) {
	f.mu.Lock()
	parts := append([]part[S](nil), f.parts...)
	f.mu.Unlock()
	for _, p := range parts {
		s := p.stats()
		for i, m := range f.metrics {
			ch <- prometheus.MustNewConstMetric(f.descs[i], m.kind, m.value(&s), p.name)
		}
	}
}

func counter[S any](name, help string, v func(*S) uint64) metric[S] {
	return metric[S]{name: name, help: help, kind: prometheus.CounterValue, value: func(s *S) float64 { return float64(v(s)) }}
}

func gauge[S any](name, help string, v func(*S) float64) metric[S] {
	return metric[S]{name: name, help: help, kind: prometheus.GaugeValue, value: v}
}

func boolean(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

var cacheMetrics = []metric[cache.Stats]{
	counter("hits_total", "Reads answered by a value in Redis.", func(s *cache.Stats) uint64 { return s.Hits }),
	counter("misses_total", "Reads that found no usable entry.", func(s *cache.Stats) uint64 { return s.Misses }),
	counter("loads_total", "Loader calls.", func(s *cache.Stats) uint64 { return s.Loads }),
	counter("lease_waits_total", "Loads that waited for another process's lease.", func(s *cache.Stats) uint64 { return s.LeaseWaits }),
	counter("not_found_hits_total", "Reads answered by a cached not-found entry.", func(s *cache.Stats) uint64 { return s.NotFoundHits }),
	counter("filter_rejects_total", "Reads answered not-found by the Bloom filter.", func(s *cache.Stats) uint64 { return s.FilterRejects }),
	counter("stale_total", "Entries found older than a generation bump.", func(s *cache.Stats) uint64 { return s.Stale }),
	counter("corrupt_total", "Entries that did not decode and were replaced.", func(s *cache.Stats) uint64 { return s.Corrupt }),
	counter("fills_refused_total", "Loaded values not stored because an invalidation came first.", func(s *cache.Stats) uint64 { return s.FillsRefused }),
	counter("early_refreshes_total", "Values reloaded before expiry.", func(s *cache.Stats) uint64 { return s.EarlyRefreshes }),
	counter("redis_errors_total", "Failed Redis calls.", func(s *cache.Stats) uint64 { return s.Errors }),
	counter("degraded_total", "Reads answered by the loader without Redis.", func(s *cache.Stats) uint64 { return s.Degraded }),
	counter("invalidations_total", "Invalidated keys and generation bumps.", func(s *cache.Stats) uint64 { return s.Invalidations }),
	counter("oom_deletes_total", "Keys invalidated with a plain DEL because Redis refused a tombstone for memory.", func(s *cache.Stats) uint64 { return s.OOMDeletes }),
	gauge("breaker_open", "1 while the circuit breaker keeps reads away from Redis.", func(s *cache.Stats) float64 { return boolean(s.BreakerOpen) }),
}

var invalidatorMetrics = []metric[invalidate.Stats]{
	gauge("leader", "1 while this instance consumes the binlog.", func(s *invalidate.Stats) float64 { return boolean(s.Leader) }),
	gauge("epoch", "Fencing epoch of this instance's leadership, 0 when standing by.", func(s *invalidate.Stats) float64 { return float64(s.Epoch) }),
	counter("transactions_total", "Transactions whose invalidations Redis acknowledged.", func(s *invalidate.Stats) uint64 { return s.Transactions }),
	counter("rows_total", "Row changes acknowledged.", func(s *invalidate.Stats) uint64 { return s.Rows }),
	counter("keys_total", "Keys invalidated.", func(s *invalidate.Stats) uint64 { return s.Keys }),
	counter("batches_total", "Redis round trips of invalidations.", func(s *invalidate.Stats) uint64 { return s.Batches }),
	counter("retries_total", "Failed invalidation attempts, retried.", func(s *invalidate.Stats) uint64 { return s.Retries }),
	counter("flushes_total", "Whole-cache flushes after a lost binlog position.", func(s *invalidate.Stats) uint64 { return s.Flushes }),
	counter("filter_resets_total", "Deletions of the Bloom filter.", func(s *invalidate.Stats) uint64 { return s.FilterResets }),
	gauge("pending", "Transactions taken from the binlog and not yet acknowledged by Redis.", func(s *invalidate.Stats) float64 { return float64(s.Pending) }),
	gauge("lag_p50_seconds", "Median time from a transaction's commit to Redis's acknowledgement, over recent transactions.", func(s *invalidate.Stats) float64 { return s.LagP50.Seconds() }),
	gauge("lag_p99_seconds", "99th percentile of the time from commit to Redis's acknowledgement.", func(s *invalidate.Stats) float64 { return s.LagP99.Seconds() }),
	gauge("apply_p50_seconds", "Median time from a transaction's arrival from the binlog to Redis's acknowledgement.", func(s *invalidate.Stats) float64 { return s.ApplyP50.Seconds() }),
	gauge("apply_p99_seconds", "99th percentile of the time from arrival to Redis's acknowledgement.", func(s *invalidate.Stats) float64 { return s.ApplyP99.Seconds() }),
}

var filterMetrics = []metric[bloom.Stats]{
	counter("lookups_total", "MayContain calls.", func(s *bloom.Stats) uint64 { return s.Lookups }),
	counter("absent_total", "Lookups answered \"cannot contain\".", func(s *bloom.Stats) uint64 { return s.Absent }),
	counter("fail_open_total", "Lookups answered \"may contain\" with no filter to ask.", func(s *bloom.Stats) uint64 { return s.FailOpen }),
	counter("local_total", "Lookups answered by the local copy.", func(s *bloom.Stats) uint64 { return s.Local }),
	counter("added_total", "Keys added.", func(s *bloom.Stats) uint64 { return s.Added }),
	counter("resyncs_total", "Times the local copy was taken out of service to reload it.", func(s *bloom.Stats) uint64 { return s.Resyncs }),
	gauge("live", "1 while the local copy is loaded and receiving adds.", func(s *bloom.Stats) float64 { return boolean(s.Live) }),
	gauge("version", "Current version of the filter, 0 for none.", func(s *bloom.Stats) float64 { return float64(s.Version) }),
}
