package lock_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/internal/testenv"
	"github.com/cacheaside/cacheaside/lock"
)

// mutexChild takes the lock LOCK_KEY ROUNDS times. Inside the critical
// section it counts itself in the Redis counter LOCK_KEY:holders, which must
// read 1, and prints a "violation" line when it does not.
func mutexChild(ctx context.Context, env *testenv.Env) error {
	key := os.Getenv("LOCK_KEY")
	rounds, err := strconv.Atoi(os.Getenv("ROUNDS"))
	if err != nil {
		return err
	}
	rdb := env.NewRedis(nil)
	defer rdb.Close()
	holders := key + ":holders"
	retry := lock.Backoff{Min: time.Millisecond, Max: 10 * time.Millisecond, Limit: time.Minute}
	for i := range rounds {
		l, err := lock.Obtain(ctx, rdb, key, 10*time.Second, &lock.Options{Retry: retry})
		if err != nil {
			return fmt.Errorf("round %d: %w", i, err)
		}
		if n := rdb.Incr(ctx, holders).Val(); n != 1 {
			fmt.Printf("violation round %d holders %d\n", i, n)
		}
		time.Sleep(200 * time.Microsecond)
		rdb.Decr(ctx, holders)
		if err := l.Release(ctx); err != nil {
			return fmt.Errorf("round %d: release: %w", i, err)
		}
	}
	fmt.Printf("done %d\n", rounds)
	return nil
}

func TestMutualExclusionProcesses(t *testing.T) {
	const procs, rounds = 4, 25
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	key := env.Prefix(t) + "lock"

	outs := make([]string, procs)
	errs := make([]error, procs)
	var wg sync.WaitGroup
	for i := range procs {
		wg.Go(func() {
			out, err := env.Child(ctx, "mutex", "LOCK_KEY="+key, "ROUNDS="+strconv.Itoa(rounds)).Output()
			outs[i], errs[i] = string(out), err
		})
	}
	wg.Wait()
	for i := range procs {
		require.NoError(t, errs[i], "child %d", i)
		assert.NotContains(t, outs[i], "violation", "child %d saw another holder inside", i)
		assert.Contains(t, outs[i], fmt.Sprintf("done %d", rounds), "child %d", i)
	}
	rdb := env.RedisClient(t)
	assert.Equal(t, "0", rdb.Get(ctx, key+":holders").Val())
	assert.Zero(t, rdb.Exists(ctx, key).Val(), "the last holder released")
}

// fenceSrc is the store of the fencing demonstration: it accepts a write
// only with an epoch at least as high as every epoch it has accepted before.
const fenceSrc = `
local cur = tonumber(redis.call("GET", KEYS[1]) or "0")
if tonumber(ARGV[1]) < cur then return 0 end
redis.call("SET", KEYS[1], ARGV[1])
return 1`

// electChild runs an election on ELECT_KEY with TTL ELECT_TTL. Its fn prints
// "leader <epoch> <unixnano>" when it starts and "lost <epoch> <unixnano>"
// when its context ends, and meanwhile writes its epoch every 10ms to the
// fenced store ELECT_KEY:fence, printing "fenced <epoch> <unixnano>" for a
// refused write. SIGUSR1 cuts the process off from Redis for good (its
// connections close and new ones fail), as a network partition would.
func electChild(ctx context.Context, env *testenv.Env) error {
	key := os.Getenv("ELECT_KEY")
	ttl, err := time.ParseDuration(os.Getenv("ELECT_TTL"))
	if err != nil {
		return err
	}
	cut := newCutter()
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	go func() {
		if _, ok := <-usr1; ok {
			cut.cut()
		}
	}()
	rdb := env.NewRedis(&redis.Options{Dialer: cut.dial})
	defer rdb.Close()
	fence := redis.NewScript(fenceSrc)

	e := lock.NewElection(rdb, key, &lock.ElectionOptions{TTL: ttl})
	return e.Run(ctx, func(ctx context.Context, epoch uint64) error {
		fmt.Printf("leader %d %d\n", epoch, time.Now().UnixNano())
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				fmt.Printf("lost %d %d\n", epoch, time.Now().UnixNano())
				return ctx.Err()
			case <-tick.C:
			}
			ok, err := fence.Run(ctx, rdb, []string{key + ":fence"}, epoch).Bool()
			if err == nil && !ok {
				fmt.Printf("fenced %d %d\n", epoch, time.Now().UnixNano())
			}
		}
	})
}

// cutter dials Redis until cut, then closes every connection it made and
// refuses new ones.
type cutter struct {
	mu    sync.Mutex
	done  bool
	conns []net.Conn
}

func newCutter() *cutter { return &cutter{} }

func (c *cutter) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return nil, errors.New("partitioned from redis")
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err == nil {
		c.conns = append(c.conns, conn)
	}
	return conn, err
}

func (c *cutter) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.done = true
	for _, conn := range c.conns {
		conn.Close()
	}
}

// event is a line printed by electChild.
type event struct {
	proc  int
	kind  string // leader, lost or fenced
	epoch uint64
	at    time.Time
}

// electors runs n electChild processes and merges their lines into one channel.
type electors struct {
	t      *testing.T
	cmds   []*exec.Cmd
	events chan event
	exited []chan error
}

func startElectors(t *testing.T, n int, key string, ttl time.Duration) *electors {
	ctx, cancel := context.WithCancel(context.Background())
	el := &electors{t: t, events: make(chan event, 1000)}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel() // kills the children still running
		wg.Wait()
	})
	for i := range n {
		cmd := env.Child(ctx, "elect", "ELECT_KEY="+key, "ELECT_TTL="+ttl.String())
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		exited := make(chan error, 1)
		el.cmds, el.exited = append(el.cmds, cmd), append(el.exited, exited)
		wg.Go(func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				f := strings.Fields(sc.Text())
				if len(f) != 3 {
					continue
				}
				epoch, err1 := strconv.ParseUint(f[1], 10, 64)
				ns, err2 := strconv.ParseInt(f[2], 10, 64)
				if err1 == nil && err2 == nil {
					el.events <- event{proc: i, kind: f[0], epoch: epoch, at: time.Unix(0, ns)}
				}
			}
			exited <- cmd.Wait()
		})
	}
	return el
}

// next returns the next event of kind from any process but skip (-1 for none).
// Events of other kinds go to seen.
func (el *electors) next(kind string, skip int, seen *[]event) event {
	el.t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case ev := <-el.events:
			if ev.kind == kind && ev.proc != skip {
				return ev
			}
			*seen = append(*seen, ev)
		case <-timeout:
			el.t.Fatalf("no %q event within 20s", kind)
		}
	}
}

func TestLeaderFailover(t *testing.T) {
	const procs = 3
	const ttl = time.Second
	key := env.Prefix(t) + "election"
	el := startElectors(t, procs, key, ttl)

	var seen []event
	leader := el.next("leader", -1, &seen)
	var takeovers []time.Duration
	for i := range procs - 1 {
		// The first kill follows a refresh at once (the worst case: the lock
		// has all of its TTL left); the next falls later in the refresh cycle.
		time.Sleep(time.Duration(i) * ttl / 4)
		killed := time.Now()
		require.NoError(t, el.cmds[leader.proc].Process.Kill())
		assert.Error(t, <-el.exited[leader.proc], "the leader was killed")
		next := el.next("leader", leader.proc, &seen)
		takeover := next.at.Sub(killed)
		takeovers = append(takeovers, takeover)
		assert.LessOrEqual(t, takeover, ttl+time.Second, "a standby leads within TTL + 1s of the leader's death")
		assert.Greater(t, next.epoch, leader.epoch, "every new leadership has a higher epoch")
		leader = next
	}
	t.Logf("TTL %v, takeover after SIGKILL of the leader: %v", ttl, takeovers)

	// The last one shuts down cleanly: fn's context ends, Run returns nil.
	require.NoError(t, el.cmds[leader.proc].Process.Signal(syscall.SIGTERM))
	lost := el.next("lost", -1, &seen)
	assert.Equal(t, leader.epoch, lost.epoch)
	assert.NoError(t, <-el.exited[leader.proc], "Run returned nil after cancellation")
	for _, ev := range seen {
		assert.NotEqual(t, "leader", ev.kind, "a leader nobody expected: %+v", ev)
	}
}

// TestLeaderPartition cuts the leader off from Redis. It must stop leading on
// its own, before its lock can expire and a standby can take over; the test
// records the gap (or overlap) between the two.
func TestLeaderPartition(t *testing.T) {
	const ttl = time.Second
	key := env.Prefix(t) + "election"
	el := startElectors(t, 2, key, ttl)

	var seen []event
	old := el.next("leader", -1, &seen)
	cut := time.Now()
	require.NoError(t, el.cmds[old.proc].Process.Signal(syscall.SIGUSR1))
	lost := el.next("lost", -1, &seen)
	assert.Equal(t, old.proc, lost.proc, "the partitioned leader stepped down")
	assert.Equal(t, old.epoch, lost.epoch)
	var next event
	for _, ev := range seen {
		if ev.kind == "leader" && next.kind == "" {
			next = ev // the standby led before the old leader stepped down
		}
	}
	if next.kind == "" {
		next = el.next("leader", old.proc, &seen)
	}
	assert.NotEqual(t, old.proc, next.proc)
	assert.Greater(t, next.epoch, old.epoch)
	assert.LessOrEqual(t, next.at.Sub(cut), ttl+time.Second, "the standby leads within TTL + 1s")
	t.Logf("TTL %v, partitioned leader stepped down %v after the cut; the standby led %v after the cut; "+
		"gap between the two leaderships %v (negative: overlap)",
		ttl, lost.at.Sub(cut), next.at.Sub(cut), next.at.Sub(lost.at))
}

// TestLeaderPauseIsFenced stops the leader process (SIGSTOP) for longer than
// its TTL. No lease can stop a paused process from believing it leads; when
// it resumes it learns it lost, and until then the epoch lets the store
// refuse its writes.
func TestLeaderPauseIsFenced(t *testing.T) {
	const ttl = time.Second
	key := env.Prefix(t) + "election"
	el := startElectors(t, 2, key, ttl)

	var seen []event
	old := el.next("leader", -1, &seen)
	p := el.cmds[old.proc].Process
	require.NoError(t, p.Signal(syscall.SIGSTOP))
	stopped := time.Now()
	next := el.next("leader", old.proc, &seen)
	assert.Greater(t, next.epoch, old.epoch, "the new leadership has a higher epoch")
	rdb := env.RedisClient(t)
	waitFor(t, func() bool {
		return rdb.Get(context.Background(), key+":fence").Val() == strconv.FormatUint(next.epoch, 10)
	})
	require.NoError(t, p.Signal(syscall.SIGCONT))
	resumed := time.Now()
	lost := el.next("lost", -1, &seen)
	assert.Equal(t, old.proc, lost.proc)
	fenced := 0
	for _, ev := range append(seen, drain(el.events)...) {
		if ev.kind == "fenced" {
			assert.Equal(t, old.epoch, ev.epoch, "only the stale leader is refused")
			fenced++
		}
	}
	assert.Equal(t, strconv.FormatUint(next.epoch, 10), rdb.Get(context.Background(), key+":fence").Val(),
		"the store kept the new leader's epoch")
	t.Logf("TTL %v, paused leader replaced %v after SIGSTOP; after SIGCONT it stepped down in %v "+
		"(overlap %v, all while paused); writes refused by the fence: %d",
		ttl, next.at.Sub(stopped), lost.at.Sub(resumed), lost.at.Sub(next.at), fenced)
}

func drain(ch chan event) []event {
	var out []event
	for {
		select {
		case ev := <-ch:
			out = append(out, ev)
		default:
			return out
		}
	}
}

// waitFor polls cond until it holds, failing the test after 10s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		require.True(t, time.Now().Before(deadline), "condition not met within 10s")
		time.Sleep(5 * time.Millisecond)
	}
}
