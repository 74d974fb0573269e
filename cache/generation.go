package cache

import (
	"context"
	_ "embed"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// A generation is a number in Redis that every entry's header records at
// fill time. Bumping it turns every entry filled before into a miss, in O(1):
// InvalidateNamespace bumps <Prefix>gen:<namespace>, InvalidateAll bumps
// <Prefix>gen.
//
// Each process keeps the generations it knows and re-reads one at most every
// Options.GenerationRefresh, pipelined with the GET of the read that finds the
// refresh due. The bumping process knows the new value at once; others serve
// entries older than a bump for at most GenerationRefresh (plus a round trip).
//
// A bump sets the generation to max(current+1, the bumping process's highest
// known value+1, Redis time in microseconds) rather than INCR: if Redis loses
// the key (a failover or a restart without persistence), a process that still
// knows a high generation keeps it (generations only rise locally), and a
// plain INCR would then yield a number below it and the bump would go
// unnoticed. The floor keeps the bump above what the bumping process has
// seen; the clock keeps it above what every other process has seen, since no
// two bumps of one key run within the same microsecond. (A millisecond clock
// was not enough: bumps faster than one per millisecond ran ahead of it, and
// after a lost key the next bump could land on a value already stamped.)

//go:embed bump.lua
var bumpSrc string

var bumpScript = redis.NewScript(bumpSrc)

// maxNamespaces bounds the generations a process remembers. Past it the
// table starts over, which costs one extra generation read per namespace
// (a namespace new to the table is read with the key's GET, so no entry is
// judged against a forgotten generation).
const maxNamespaces = 1 << 16

// generation is one generation as this process knows it.
type generation struct {
	key     string        // Redis key
	val     atomic.Uint64 // highest value seen
	readAt  atomic.Int64  // Unix ns of the last read from Redis; 0 = never read
	reading atomic.Bool   // a read is under way
}

// due reports whether the caller should read g from Redis now. Before the
// first read every caller reads it; afterwards one caller per period does.
func (g *generation) due(now int64, every time.Duration) bool {
	at := g.readAt.Load()
	if at == 0 {
		return true
	}
	return now-at >= int64(every) && g.reading.CompareAndSwap(false, true)
}

// learn records a value read from Redis (or returned by a bump) at now.
func (g *generation) learn(v uint64, now int64) {
	g.raise(v)
	g.readAt.Store(now)
	g.reading.Store(false)
}

// raise sets the known value to v if v is higher.
func (g *generation) raise(v uint64) {
	for {
		cur := g.val.Load()
		if v <= cur || g.val.CompareAndSwap(cur, v) {
			return
		}
	}
}

// generations holds the global generation and one per namespace. The
// table is a sync.Map, so a new namespace costs O(1): a copy-on-write map
// cost a copy of the whole table per new namespace, 2.5ms each at 16,384
// namespaces (BenchmarkNewNamespace), and keys without a ':' made every
// key a new namespace.
type generations struct {
	prefix string
	every  time.Duration
	all    generation
	ns     atomic.Pointer[nsTable]
}

// nsTable is one life of the namespace table.
type nsTable struct {
	m sync.Map // namespace -> *generation
	n atomic.Int64
}

func newGenerations(prefix string, every time.Duration) *generations {
	g := &generations{prefix: prefix, every: every}
	g.all.key = prefix + "gen"
	g.ns.Store(&nsTable{})
	return g
}

// namespace returns the text of key before its first ':', or the whole key:
// the default Options.Namespace.
func namespace(key string) string {
	if i := strings.IndexByte(key, ':'); i >= 0 {
		return key[:i]
	}
	return key
}

// of returns the generation of namespace ns.
func (gs *generations) of(ns string) *generation {
	t := gs.ns.Load()
	if g, ok := t.m.Load(ns); ok {
		return g.(*generation)
	}
	ns = strings.Clone(ns) // not a view into a caller's key
	g, loaded := t.m.LoadOrStore(ns, &generation{key: gs.prefix + "gen:" + ns})
	if !loaded && t.n.Add(1) >= maxNamespaces {
		gs.ns.CompareAndSwap(t, &nsTable{})
	}
	return g.(*generation)
}

// stale reports whether an entry stamped with h predates a known bump.
func (gs *generations) stale(h *header, g *generation) bool {
	return h.nsGen < g.val.Load() || h.allGen < gs.all.val.Load()
}

// claim appends to dst the generations among list (and the global one)
// that the caller should read now, and claims them; the caller reads them
// with read and records the results with finish.
func (gs *generations) claim(now int64, list []*generation, dst []*generation) []*generation {
	if gs.all.due(now, gs.every) {
		dst = append(dst, &gs.all)
	}
	for _, g := range list {
		if g.due(now, gs.every) && !contains(dst, g) {
			dst = append(dst, g)
		}
	}
	return dst
}

func contains(list []*generation, g *generation) bool {
	for _, x := range list {
		if x == g {
			return true
		}
	}
	return false
}

// read queues GETs of claimed generations on pipe.
func read(ctx context.Context, pipe redis.Pipeliner, claimed []*generation) []*redis.StringCmd {
	cmds := make([]*redis.StringCmd, len(claimed))
	for i, g := range claimed {
		cmds[i] = pipe.Get(ctx, g.key)
	}
	return cmds
}

// finish records the results of the reads of claimed generations. A read that
// failed leaves the generation due again.
func finish(claimed []*generation, cmds []*redis.StringCmd, now int64, log *slog.Logger) error {
	var first error
	for i, g := range claimed {
		s, err := cmds[i].Result()
		if err == redis.Nil {
			s, err = "0", nil
		}
		var v uint64
		if err == nil {
			var perr error
			if v, perr = strconv.ParseUint(s, 10, 64); perr != nil {
				log.Warn("cache: generation key holds no number; ignoring it", "key", g.key, "value", s)
			}
		}
		if err != nil {
			g.reading.Store(false)
			if first == nil {
				first = err
			}
			continue
		}
		g.learn(v, now)
	}
	return first
}

// bump raises the generations in Redis, pipelined, and learns the results.
func (gs *generations) bump(ctx context.Context, rdb redis.UniversalClient, list []*generation) error {
	cmds, err := runPipelined(ctx, rdb, bumpScript, len(list), func(i int) (string, []any) {
		return list[i].key, []any{list[i].val.Load()}
	})
	if err != nil {
		return err
	}
	now := time.Now().UnixNano()
	for i, cmd := range cmds {
		v, err := cmd.Uint64()
		if err != nil {
			return fmt.Errorf("cache: bump %s: %w", list[i].key, err)
		}
		list[i].learn(v, now)
	}
	return nil
}
