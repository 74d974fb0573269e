package invalidate_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

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

// chaos runs writers and readers against one stack for chaosDuration,
// calls fault halfway, and then checks that no cached key is stale.
type chaos struct {
	t          *testing.T
	s          *stack
	state      committed
	staleReads atomic.Int64
	reads      atomic.Int64
	writes     atomic.Int64
	writeErrs  atomic.Int64
}

func TestConsistency(t *testing.T) {
	cases := []struct {
		name     string
		external int // invalidators in child processes (0: one in this process)
		fault    func(t *testing.T, c *chaos, children *childSet)
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
			time.Sleep(200 * time.Millisecond)
			require.NoError(t, r.Start())
		}},
		{name: "redis wiped (a failover that lost writes)", fault: func(t *testing.T, c *chaos, _ *childSet) {
			_, r := env.Faults(t)
			require.NoError(t, r.Kill())
			require.NoError(t, r.Wipe())
			require.NoError(t, r.Start())
		}},
		{name: "mariadb restarted", fault: func(t *testing.T, c *chaos, _ *childSet) {
			m, _ := env.Faults(t)
			require.NoError(t, m.Restart())
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opts := stackOptions{cache: &cache.Options{TombstoneTTL: chaosTombstone}, external: tc.external > 0}
			s := newStack(t, opts)
			c := &chaos{t: t, s: s}
			c.seed()
			var cs *childSet
			if tc.external > 0 {
				cs = &childSet{s: s}
				for range tc.external {
					cs.start(t)
				}
				cs.waitLeader(t)
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
	ctx, cancel := context.WithTimeout(context.Background(), chaosDuration)
	defer cancel()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() { c.writer(ctx, w%2 == 0) })
	}
	for range 8 {
		wg.Go(func() { c.reader(ctx) })
	}
	time.Sleep(chaosDuration / 2)
	fault()
	wg.Wait()
	c.t.Logf("writes %d (%d failed), reads %d, stale reads %d (served before the invalidation of a committed write reached Redis)",
		c.writes.Load(), c.writeErrs.Load(), c.reads.Load(), c.staleReads.Load())
}

// writer updates, deletes and inserts random rows, through cache.Write when
// viaLibrary is set and by plain SQL that bypasses the library otherwise.
func (c *chaos) writer(ctx context.Context, viaLibrary bool) {
	for ctx.Err() == nil {
		id := 1 + rand.Uint64N(chaosRows)
		c.state.locks[id].Lock()
		v, _ := c.state.get(id)
		var q string
		var args []any
		next := v + 1
		switch {
		case v == 0:
			q, args = "INSERT INTO users VALUES (?, ?, ?, ?)", []any{id, fmt.Sprintf("u%d@x.io", id), fmt.Sprint("n", rand.Int()), c.nextVersion(id)}
		case rand.IntN(10) == 0:
			q, args, next = "DELETE FROM users WHERE id = ?", []any{id}, 0
		default:
			q, args = "UPDATE users SET name = ?, version = ? WHERE id = ?", []any{fmt.Sprint("n", rand.Int()), next, id}
		}
		if v == 0 {
			next = args[3].(int64)
		}
		write := func(ctx context.Context) error { _, err := c.s.db.ExecContext(ctx, q, args...); return err }
		var err error
		if viaLibrary {
			err = c.s.cache.Write(ctx, []string{userKey(c.s.prefix, id)}, write)
		} else {
			err = write(ctx)
		}
		c.writes.Add(1)
		if err != nil {
			c.writeErrs.Add(1)
			c.state.set(id, v, true)
			c.resolve(id)
		} else {
			c.state.set(id, next, false)
		}
		c.state.locks[id].Unlock()
	}
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
}

// childSet runs invalidators of one stack in child processes.
type childSet struct {
	s     *stack
	mu    sync.Mutex
	procs []*childProc
}

type childProc struct {
	cmd    *exec.Cmd
	leader atomic.Bool
	dead   atomic.Bool
}

func (cs *childSet) start(t *testing.T) {
	t.Helper()
	cmd := env.Child(context.Background(), "invalidator", "DB="+cs.s.dbName, "PREFIX="+cs.s.prefix)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	p := &childProc{cmd: cmd}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "leading") {
				p.leader.Store(true)
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
	inv := invalidate.New(stream, c, rdb, rules, invalidatorOptions(invalidate.Options{}, rdb, prefix))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			if inv.Stats().Leader {
				fmt.Println("leading", inv.Stats().Epoch)
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	return inv.Run(ctx)
}
