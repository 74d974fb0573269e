package invalidate

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cacheaside/cacheaside/binlog"
)

// Stats is a snapshot of an Invalidator's counters.
type Stats struct {
	// Leader reports whether this instance consumes the binlog now, and Epoch
	// the number of its leadership, counted in the checkpoint record (it
	// restarts at 1 when Redis loses the record).
	Leader bool
	Epoch  uint64
	// Transactions, Rows and Keys count what was acknowledged by Redis since start.
	Transactions, Rows, Keys uint64
	// Batches counts Redis round trips of invalidations; Retries failed attempts.
	Batches, Retries uint64
	// Flushes counts whole-cache flushes after a lost binlog position.
	Flushes uint64
	// FilterResets counts deletions of the filter (see Options.Filter).
	FilterResets uint64
	// Pending is the number of transactions taken from the binlog whose
	// invalidations Redis has not acknowledged yet; it stays within
	// Options.Queue plus one batch, because the stream waits (backpressure).
	Pending int
	// TransactionsPerSecond and KeysPerSecond are the averages since Since.
	TransactionsPerSecond, KeysPerSecond float64
	// Position is the last checkpoint saved.
	Position binlog.Position
	// LagP50 and LagP99 are percentiles of the time from a transaction's commit
	// to Redis's acknowledgement of its invalidations, over the last 4096
	// transactions. The binlog stamps commits in whole seconds, so these are
	// coarse; ApplyP50 and ApplyP99 measure from the moment the transaction was
	// received from the binlog, in microseconds.
	LagP50, LagP99, ApplyP50, ApplyP99 time.Duration
	// Since is when the counters started.
	Since time.Time
}

const lagWindow = 4096

type stats struct {
	transactions, rows, keys, batches, retries, flushes, received, filterResets atomic.Uint64

	mu       sync.Mutex
	leader   bool
	epoch    uint64
	position binlog.Position
	lag      [lagWindow]time.Duration
	apply    [lagWindow]time.Duration
	n        int
	since    time.Time
}

func (s *stats) init() { s.since = time.Now() }

func (s *stats) setLeader(epoch uint64) {
	s.mu.Lock()
	s.leader, s.epoch = epoch != 0, epoch
	s.mu.Unlock()
}

func (s *stats) setPosition(p binlog.Position) {
	s.mu.Lock()
	s.position = p
	s.mu.Unlock()
}

func (s *stats) record(w *work, acked time.Time) {
	s.transactions.Add(1)
	s.mu.Lock()
	i := s.n % lagWindow
	s.lag[i] = max(0, acked.Sub(w.tx.CommitTime))
	s.apply[i] = acked.Sub(w.received)
	s.n++
	s.mu.Unlock()
}

// Stats returns a snapshot of the counters.
func (inv *Invalidator) Stats() Stats {
	s := &inv.stats
	out := Stats{
		Transactions: s.transactions.Load(), Rows: s.rows.Load(), Keys: s.keys.Load(),
		Batches: s.batches.Load(), Retries: s.retries.Load(), Flushes: s.flushes.Load(),
		FilterResets: s.filterResets.Load(),
		Since:        s.since,
	}
	out.Pending = int(int64(s.received.Load()) - int64(out.Transactions))
	if secs := time.Since(s.since).Seconds(); secs > 0 {
		out.TransactionsPerSecond = float64(out.Transactions) / secs
		out.KeysPerSecond = float64(out.Keys) / secs
	}
	s.mu.Lock()
	out.Leader, out.Epoch, out.Position = s.leader, s.epoch, s.position
	n := min(s.n, lagWindow)
	lag := slices.Clone(s.lag[:n])
	apply := slices.Clone(s.apply[:n])
	s.mu.Unlock()
	out.LagP50, out.LagP99 = percentiles(lag)
	out.ApplyP50, out.ApplyP99 = percentiles(apply)
	return out
}

func percentiles(d []time.Duration) (p50, p99 time.Duration) {
	if len(d) == 0 {
		return 0, 0
	}
	slices.Sort(d)
	return d[len(d)*50/100], d[min(len(d)-1, len(d)*99/100)]
}
