package invalidate_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/binlog"
	"github.com/cacheaside/cacheaside/cache"
	"github.com/cacheaside/cacheaside/internal/testenv"
	"github.com/cacheaside/cacheaside/invalidate"
)

const (
	chaosRows      = 60
	chaosDuration  = 3 * time.Second
	chaosTombstone = 100 * time.Millisecond
)

// committed is what the test knows MariaDB holds, per id.
type committed struct {
	mu      sync.Mutex
	locks   [chaosRows + 1]sync.Mutex // one writer per id at a time
	version [chaosRows + 1]int64      // 0: absent
	unsure  [chaosRows + 1]bool       // a write failed: its outcome is unknown
}

func (c *committed) get(id uint64) (int64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.version[id], c.unsure[id]
}

func (c *committed) set(id uint64, v int64, unsure bool) {
	c.mu.Lock()
	c.version[id], c.unsure[id] = v, unsure
	c.mu.Unlock()
}

// commit is one write known committed, with the time it returned.
type commit struct {
	id, version int64
	at          time.Time
}

// recordApplied notes the versions of the users rows of an acknowledged
// transaction.
func (c *chaos) recordApplied(a invalidate.Applied) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range a.Tx.Rows {
		if r.Table != "users" {
			continue
		}
		img, sign := r.After, int64(1)
		if r.Op == binlog.Delete {
			img, sign = r.Before, -1
		}
		id, _ := img["id"].(uint64)
		v, _ := img["version"].(int64)
		c.applied[[2]int64{int64(id), sign * v}] = true
	}
}

// watchFlushes notes when the in-process invalidators flush the whole cache.
func (c *chaos) watchFlushes() {
	var seen uint64
	for c.t.Context().Err() == nil {
		if n := c.s.flushes(); n > seen {
			seen = n
			c.sawFlush()
		}
		time.Sleep(time.Millisecond)
	}
}

func (c *chaos) sawFlush() {
	c.mu.Lock()
	c.flushes = append(c.flushes, time.Now())
	c.mu.Unlock()
}

// chaos runs writers and readers against one stack for chaosDuration,
// calls fault halfway, and then checks that no cached key is stale.
type chaos struct {
	t          *testing.T
	s          *stack
	state      committed
	mu         sync.Mutex
	commits    []commit          // every write known committed
	applied    map[[2]int64]bool // (id, version) reported invalidated; deletes as (id, -version)
	flushes    []time.Time       // when a flush of the whole cache was seen
	staleReads atomic.Int64
	reads      atomic.Int64
	writes     atomic.Int64
	writeErrs  atomic.Int64
	freeze     sync.RWMutex
	frozen     bool // ids up to frozenRows are no longer written
}

// frozenRows are the ids a rollback stops writing before it restores its
// snapshot, so that later writes cannot hide a lost invalidation of them.
const frozenRows = 15

// TestConsistency runs writers that bypass the library (plain SQL, so the
// invalidator is the only defence) and readers that fill the cache, injects
// one fault halfway, and then requires, once everything has quiesced, that
// no cached key is stale and that every committed version was reported
// invalidated (or covered by a flush of the whole cache after its commit).
func TestConsistency(t *testing.T) {
	cases := []struct {
		name          string
		external      int // invalidators in child processes (0: one in this process)
		leaderChanges int // before the writers start
		fault         func(t *testing.T, c *chaos, children *childSet)
	}{
		{name: "no faults"},
		{name: "invalidator killed and restarted", external: 1, fault: func(t *testing.T, c *chaos, cs *childSet) {
			cs.killLeader(t)
			cs.start(t)
		}},
		{name: "leader killed, standby takes over", external: 2, fault: func(t *testing.T, c *chaos, cs *childSet) {
			cs.killLeader(t)
			cs.waitLeader(t)
		}},
		{name: "redis restarted", fault: func(t *testing.T, c *chaos, _ *childSet) {
			_, r := env.Faults(t)
			require.NoError(t, r.Kill())
			require.NoError(t, r.Start())
		}},
		{name: "redis FLUSHALL after two leader changes", leaderChanges: 2, fault: func(t *testing.T, c *chaos, _ *childSet) {
			env.Faults(t)
			require.NoError(t, c.s.rdb.FlushAll(context.Background()).Err())
		}},
		{name: "redis restarted without persistence after two leader changes", leaderChanges: 2, fault: func(t *testing.T, c *chaos, _ *childSet) {
			_, r := env.Faults(t)
			require.NoError(t, r.Kill())
			require.NoError(t, r.Wipe())
			require.NoError(t, r.Start())
		}},
		{name: "redis rolled back, lock kept", fault: func(t *testing.T, c *chaos, _ *childSet) {
			env.Faults(t)
			c.rollback(t)
		}},
		{name: "invalidator killed, redis restarted 3s later", external: 1, fault: func(t *testing.T, c *chaos, cs *childSet) {
			_, r := env.Faults(t)
			cs.killLeader(t)
			cs.start(t)
			time.Sleep(3 * time.Second)
			require.NoError(t, r.Kill())
			require.NoError(t, r.Start())
		}},
		{name: "leader's mariadb connection cut past the lock TTL", external: 2, fault: func(t *testing.T, c *chaos, cs *childSet) {
			leader := cs.waitLeader(t)
			cut := time.Now()
			leader.proxy.cut(true)
			// The leader steps down after StepDownAfter (3 x its 1s TTL) and
			// the standby, which reaches MariaDB, takes over.
			require.Eventually(t, func() bool { return cs.leaderOtherThan(leader) }, 20*time.Second, 5*time.Millisecond)
			t.Logf("standby leads %v after the cut", time.Since(cut).Round(time.Millisecond))
			time.Sleep(time.Second)
			leader.proxy.cut(false)
		}},
		{name: "mariadb restarted", fault: func(t *testing.T, c *chaos, _ *childSet) {
			m, _ := env.Faults(t)
			require.NoError(t, m.Restart())
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := &chaos{t: t, applied: map[[2]int64]bool{}}
			inv := &invalidate.Options{OnApplied: c.recordApplied}
			opts := stackOptions{cache: &cache.Options{TombstoneTTL: chaosTombstone}, inv: inv, external: tc.external > 0}
			s := newStack(t, opts)
			c.s = s
			for range tc.leaderChanges {
				s.restartLeader(t)
			}
			c.seed()
			var cs *childSet
			if tc.external > 0 {
				cs = &childSet{s: s, c: c}
				for range tc.external {
					cs.start(t)
				}
				cs.waitLeader(t)
			} else {
				go c.watchFlushes()
			}
			c.run(func() {
				if tc.fault != nil {
					tc.fault(t, c, cs)
				}
			})
			c.verify()
		})
	}
}

// rollback acts out a Redis that went back in time with the lock kept.
// It stops the random writes of the first frozenRows ids, caches them, and
// snapshots (DUMP) the checkpoint and their keys; then it changes each of
// them once, waits until the changes are invalidated and a later
// checkpoint saved, and restores (RESTORE) the snapshot: every one of
// those keys holds a stale copy again, and only a replay from the restored
// checkpoint invalidates them.
func (c *chaos) rollback(t *testing.T) {
	ctx := context.Background()
	rdb, cpKey := c.s.rdb, c.s.prefix+"checkpoint"
	c.freeze.Lock() // waits for the writes in flight
	c.frozen = true
	c.freeze.Unlock()
	c.s.fence(t)
	time.Sleep(chaosTombstone) // the tombstones of their last invalidations let fills in again
	for id := uint64(1); id <= frozenRows; id++ {
		if _, _, err := c.s.fetchUser(ctx, id); err != nil {
			require.ErrorIs(t, err, cache.ErrNotFound)
		}
	}
	dumps := map[string]string{}
	cp, err := rdb.Dump(ctx, cpKey).Result()
	require.NoError(t, err)
	for id := uint64(1); id <= frozenRows; id++ {
		if d, err := rdb.Dump(ctx, userKey(c.s.prefix, id)).Result(); err == nil {
			dumps[userKey(c.s.prefix, id)] = d
		}
	}
	pos := rdb.HGet(ctx, cpKey, "pos").Val()
	for id := uint64(1); id <= frozenRows; id++ {
		c.write(ctx, id)
	}
	c.s.fence(t)
	require.Eventually(t, func() bool { return rdb.HGet(ctx, cpKey, "pos").Val() != pos }, 10*time.Second, time.Millisecond)
	_, err = rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.RestoreReplace(ctx, cpKey, 0, cp)
		for k, d := range dumps {
			p.RestoreReplace(ctx, k, time.Minute, d)
		}
		return nil
	})
	require.NoError(t, err)
	t.Logf("restored the checkpoint and %d keys", len(dumps))
}

func (c *chaos) seed() {
	for id := uint64(1); id <= chaosRows; id++ {
		if id%4 == 0 {
			continue // starts absent: inserts and cached not-found entries
		}
		_, err := c.s.db.Exec("INSERT INTO users VALUES (?, ?, 'seed', 1)", id, fmt.Sprintf("u%d@x.io", id))
		require.NoError(c.t, err)
		c.state.version[id] = 1
	}
}

func (c *chaos) run(fault func()) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { c.writer(ctx) })
	}
	for range 8 {
		wg.Go(func() { c.reader(ctx) })
	}
	time.Sleep(chaosDuration / 2)
	fault()
	faulted := time.Now()
	c.s.fence(c.t)
	c.t.Logf("invalidations flowing again %v after the fault ended", time.Since(faulted).Round(time.Millisecond))
	time.Sleep(chaosDuration / 2)
	cancel()
	wg.Wait()
	c.t.Logf("writes %d (%d failed), reads %d, stale reads %d (served before the invalidation of a committed write reached Redis)",
		c.writes.Load(), c.writeErrs.Load(), c.reads.Load(), c.staleReads.Load())
}

// writer updates, deletes and inserts random rows by plain SQL that
// bypasses the library: only the invalidator invalidates.
func (c *chaos) writer(ctx context.Context) {
	for ctx.Err() == nil {
		id := 1 + rand.Uint64N(chaosRows)
		c.freeze.RLock()
		if !c.frozen || id > frozenRows {
			c.write(ctx, id)
		}
		c.freeze.RUnlock()
	}
}

// write makes one random change to row id and records it.
func (c *chaos) write(ctx context.Context, id uint64) {
	c.state.locks[id].Lock()
	defer c.state.locks[id].Unlock()
	v, _ := c.state.get(id)
	var q string
	var args []any
	next := v + 1
	switch {
	case v == 0:
		next = c.nextVersion(id)
		q, args = "INSERT INTO users VALUES (?, ?, ?, ?)", []any{id, fmt.Sprintf("u%d@x.io", id), fmt.Sprint("n", rand.Int()), next}
	case rand.IntN(10) == 0:
		q, args, next = "DELETE FROM users WHERE id = ?", []any{id}, 0
	default:
		q, args = "UPDATE users SET name = ?, version = ? WHERE id = ?", []any{fmt.Sprint("n", rand.Int()), next, id}
	}
	_, err := c.s.db.ExecContext(context.WithoutCancel(ctx), q, args...)
	c.writes.Add(1)
	if err != nil {
		c.writeErrs.Add(1)
		c.state.set(id, v, true)
		c.resolve(id)
		return
	}
	c.state.set(id, next, false)
	version := next
	if next == 0 {
		version = -v
	}
	c.mu.Lock()
	c.commits = append(c.commits, commit{int64(id), version, time.Now()})
	c.mu.Unlock()
}

// nextVersion returns a version for a re-inserted row above any it had.
func (c *chaos) nextVersion(uint64) int64 { return time.Now().UnixNano() }

// resolve reads the true state of a row whose write failed, once MariaDB answers.
func (c *chaos) resolve(id uint64) {
	for i := 0; i < 600; i++ {
		u, err := loadUser(context.Background(), c.s.db, id)
		switch {
		case err == nil:
			c.state.set(id, u.Version, false)
			return
		case err == cache.ErrNotFound:
			c.state.set(id, 0, false)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// reader reads through the cache with a random pause between the read from
// MariaDB and the fill, and counts reads older than the last write that had
// committed before the read began.
func (c *chaos) reader(ctx context.Context) {
	for ctx.Err() == nil {
		id := 1 + rand.Uint64N(chaosRows)
		want, unsure := c.state.get(id)
		u, err := cache.Fetch(ctx, c.s.cache, userKey(c.s.prefix, id), func(ctx context.Context) (user, error) {
			u, err := loadUser(ctx, c.s.db, id)
			time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
			return u, err
		})
		if ctx.Err() != nil {
			return
		}
		got := u.Version
		if err == cache.ErrNotFound {
			got = 0
		} else if err != nil {
			continue // MariaDB down: the error reached the caller, nothing was cached
		}
		c.reads.Add(1)
		if !unsure && got != want && (want == 0 || got < want) {
			c.staleReads.Add(1)
		}
	}
}

// verify waits until the invalidator has applied every commit and the
// tombstone window has passed, then compares every cached key with MariaDB.
func (c *chaos) verify() {
	t := c.t
	require.Eventually(t, func() bool { return c.s.db.Ping() == nil }, 60*time.Second, 50*time.Millisecond)
	c.s.fence(t)
	time.Sleep(chaosTombstone)
	ctx := context.Background()
	stale := 0
	for id := uint64(1); id <= chaosRows; id++ {
		cached, loaded, err := c.s.fetchUser(ctx, id)
		if loaded {
			continue // not cached: nothing stale
		}
		truth, dbErr := loadUser(ctx, c.s.db, id)
		if err != dbErr || cached != truth {
			stale++
			t.Errorf("stale key %s: cache %+v (%v), MariaDB %+v (%v)", userKey(c.s.prefix, id), cached, err, truth, dbErr)
		}
	}
	assert.Zero(t, stale, "stale keys after quiescence")

	c.mu.Lock()
	defer c.mu.Unlock()
	missed := 0
	for _, cm := range c.commits {
		if c.applied[[2]int64{cm.id, cm.version}] || slices.ContainsFunc(c.flushes, func(f time.Time) bool { return f.After(cm.at) }) {
			continue
		}
		missed++
		if missed <= 10 {
			t.Errorf("committed version never reported invalidated: id %d version %d at %v", cm.id, cm.version, cm.at.Format(time.StampMicro))
		}
	}
	assert.Zero(t, missed, "of %d committed versions, %d never reported invalidated (%d flushes)", len(c.commits), missed, len(c.flushes))
}

// childSet runs invalidators of one stack in child processes.
type childSet struct {
	s         *stack
	c         *chaos
	leaderTTL time.Duration // 0: the tests' 1s
	mu        sync.Mutex
	procs     []*childProc
}

type childProc struct {
	cmd    *exec.Cmd
	proxy  *proxy // the child's only way to MariaDB
	leader atomic.Bool
	dead   atomic.Bool
}

func (cs *childSet) start(t *testing.T) {
	t.Helper()
	px := newProxy(t, env.MySQLConfig("").Addr)
	cmd := env.Child(context.Background(), "invalidator", "DB="+cs.s.dbName, "PREFIX="+cs.s.prefix, "MYSQL_ADDR="+px.addr(),
		"LEADER_TTL="+cs.leaderTTL.String())
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	p := &childProc{cmd: cmd, proxy: px}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			switch {
			case len(f) == 0:
			case f[0] == "leading":
				p.leader.Store(true)
			case f[0] == "flushed" && cs.c != nil:
				cs.c.sawFlush()
			case f[0] == "applied" && len(f) == 3 && cs.c != nil:
				id, _ := strconv.ParseInt(f[1], 10, 64)
				v, _ := strconv.ParseInt(f[2], 10, 64)
				cs.c.mu.Lock()
				cs.c.applied[[2]int64{id, v}] = true
				cs.c.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	cs.mu.Lock()
	cs.procs = append(cs.procs, p)
	cs.mu.Unlock()
}

// waitLeader waits until a live child leads.
func (cs *childSet) waitLeader(t *testing.T) *childProc {
	t.Helper()
	var leader *childProc
	require.Eventually(t, func() bool {
		cs.mu.Lock()
		defer cs.mu.Unlock()
		for _, p := range cs.procs {
			if p.leader.Load() && !p.dead.Load() {
				leader = p
				return true
			}
		}
		return false
	}, 20*time.Second, 5*time.Millisecond)
	return leader
}

// leaderOtherThan reports whether a live child other than p has led since
// it started.
func (cs *childSet) leaderOtherThan(p *childProc) bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for _, q := range cs.procs {
		if q != p && q.leader.Load() && !q.dead.Load() {
			return true
		}
	}
	return false
}

// proxy forwards TCP connections to MariaDB until it is cut: then it closes
// every connection it carries and refuses new ones, as a network partition
// between one process and MariaDB would.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  map[net.Conn]bool
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() {
		ln.Close()
		p.cut(true)
	})
	go p.serve()
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.forward(c)
	}
}

func (p *proxy) forward(c net.Conn) {
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	if !p.track(c, up) {
		c.Close()
		up.Close()
		return
	}
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
	c.Close()
	up.Close()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, up)
	p.mu.Unlock()
}

// track registers a connection pair, false when the proxy is cut.
func (p *proxy) track(conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		return false
	}
	for _, c := range conns {
		p.conns[c] = true
	}
	return true
}

// cut closes every carried connection and refuses new ones (down), or lets
// connections through again.
func (p *proxy) cut(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for c := range p.conns {
			c.Close()
		}
	}
}

// killLeader SIGKILLs the leading child and measures nothing: the
// consistency check afterwards is the measure.
func (cs *childSet) killLeader(t *testing.T) {
	p := cs.waitLeader(t)
	p.dead.Store(true)
	require.NoError(t, p.cmd.Process.Kill())
	_ = p.cmd.Wait()
}

// childInvalidator runs an invalidator for the database and prefix in its
// environment until it is killed or told to stop, printing "leading" once it leads.
func childInvalidator(ctx context.Context, e *testenv.Env) error {
	db, prefix := os.Getenv("DB"), os.Getenv("PREFIX")
	rdb := e.NewRedis(nil)
	defer rdb.Close()
	c, err := cache.New(rdb, &cache.Options{Prefix: prefix, TombstoneTTL: chaosTombstone})
	if err != nil {
		return err
	}
	defer c.Close()
	rules, err := invalidate.NewRules(usersRules(db, prefix)...)
	if err != nil {
		return err
	}
	stream, err := openStream(e)
	if err != nil {
		return err
	}
	// Report to the parent: leadership, flushes and every users row version
	// acknowledged (deletes as the negative version).
	var out sync.Mutex
	report := func(format string, args ...any) {
		out.Lock()
		fmt.Printf(format+"\n", args...)
		out.Unlock()
	}
	onApplied := func(a invalidate.Applied) {
		for _, r := range a.Tx.Rows {
			if r.Table != "users" {
				continue
			}
			img, sign := r.After, int64(1)
			if r.Op == binlog.Delete {
				img, sign = r.Before, -1
			}
			id, _ := img["id"].(uint64)
			v, _ := img["version"].(int64)
			report("applied %d %d", id, sign*v)
		}
	}
	ttl, _ := time.ParseDuration(os.Getenv("LEADER_TTL"))
	inv := invalidate.New(stream, c, rdb, rules, invalidatorOptions(invalidate.Options{OnApplied: onApplied, LeaderTTL: ttl}, rdb, prefix))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		led := false
		var flushes uint64
		for ctx.Err() == nil {
			st := inv.Stats()
			if st.Leader && !led {
				led = true
				report("leading %d", st.Epoch)
			}
			if st.Flushes > flushes {
				flushes = st.Flushes
				report("flushed")
			}
			time.Sleep(time.Millisecond)
		}
	}()
	return inv.Run(ctx)
}
