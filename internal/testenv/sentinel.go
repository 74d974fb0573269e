package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"
)

// SentinelOptions configures StartSentinel.
type SentinelOptions struct {
	// DownAfter is the sentinels' down-after-milliseconds: how long the
	// master must be unreachable before they fail it over. Default: 1s.
	DownAfter time.Duration
}

// Sentinel is a throwaway Redis replication group watched by Redis
// Sentinel: a master, a replica and three sentinels (redis-server
// --sentinel, quorum 2) on loopback ports. Roles move with every failover,
// so ask Master and Replica for the current ones.
type Sentinel struct {
	// Dir holds one directory per process.
	Dir string
	// MasterName is the name the sentinels monitor the master under.
	MasterName string
	// Data are the two data servers: Data[0] started as the master.
	Data []*Redis
	// Sentinels are the three sentinel processes.
	Sentinels []*SentinelServer

	downAfter time.Duration
}

// SentinelServer is one sentinel process. It has the fault controls of a
// server (Stop, Kill, Pause, Resume, Start).
type SentinelServer struct {
	// Port is the loopback TCP port of the sentinel.
	Port int

	server
	conf string
}

// Addr returns host:port of the sentinel.
func (s *SentinelServer) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.Port) }

// Start starts the sentinel (again) with its configuration file, which it
// rewrites as it learns, and waits until it answers.
func (s *SentinelServer) Start() error {
	c := redis.NewSentinelClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	return s.launch([]string{s.conf, "--sentinel"}, s.Port, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return c.Ping(ctx).Err()
	})
}

// StartSentinel starts a master, its replica and three sentinels that
// monitor it, and returns once the replica has synced and every sentinel
// knows the master, the replica and the other sentinels. The sentinels are
// told about each other in their configuration files, so start-up does not
// wait for their hello messages.
func StartSentinel(opts *SentinelOptions) (*Sentinel, error) {
	if opts == nil {
		opts = &SentinelOptions{}
	}
	if opts.DownAfter < 0 || (opts.DownAfter > 0 && opts.DownAfter < 100*time.Millisecond) {
		return nil, fmt.Errorf("testenv: SentinelOptions.DownAfter %v is below 100ms; leave it 0 for 1s", opts.DownAfter)
	}
	bin, err := lookBinary("redis-server")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "cacheaside-sentinel-")
	if err != nil {
		return nil, fmt.Errorf("testenv: %w", err)
	}
	s := &Sentinel{Dir: dir, MasterName: "cacheaside", downAfter: opts.DownAfter}
	if s.downAfter == 0 {
		s.downAfter = time.Second
	}
	fail := func(err error) (*Sentinel, error) {
		s.Close()
		return nil, err
	}
	master, err := startRedis(dir, nil)
	if err != nil {
		return fail(err)
	}
	s.Data = append(s.Data, master)
	replica, err := startRedis(dir, func(string, int) ([]string, error) {
		return []string{"--replicaof", "127.0.0.1", strconv.Itoa(master.Port)}, nil
	})
	if err != nil {
		return fail(err)
	}
	s.Data = append(s.Data, replica)

	ids := make([]string, 3)
	for i := range 3 {
		sd, err := os.MkdirTemp(dir, "cacheaside-sentinel-")
		if err != nil {
			return fail(fmt.Errorf("testenv: %w", err))
		}
		port, err := freePort()
		if err != nil {
			return fail(err)
		}
		ids[i] = randomHex(20)
		ss := &SentinelServer{Port: port, conf: filepath.Join(sd, "sentinel.conf")}
		ss.server = server{name: "redis-sentinel", bin: bin, logPath: filepath.Join(sd, "sentinel.log"), stopTimeout: 30 * time.Second, start: ss.Start}
		s.Sentinels = append(s.Sentinels, ss)
	}
	for i, ss := range s.Sentinels {
		conf := []string{
			"port " + strconv.Itoa(ss.Port),
			"bind 127.0.0.1",
			"protected-mode no",
			"dir " + filepath.Dir(ss.conf),
			"sentinel myid " + ids[i],
			fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d 2", s.MasterName, master.Port),
			fmt.Sprintf("sentinel down-after-milliseconds %s %d", s.MasterName, s.downAfter.Milliseconds()),
			// A failed election (split votes) is retried after twice this.
			fmt.Sprintf("sentinel failover-timeout %s %d", s.MasterName, 3*s.downAfter.Milliseconds()),
			fmt.Sprintf("sentinel known-replica %s 127.0.0.1 %d", s.MasterName, replica.Port),
		}
		for j, other := range s.Sentinels {
			if j != i {
				conf = append(conf, fmt.Sprintf("sentinel known-sentinel %s 127.0.0.1 %d %s", s.MasterName, other.Port, ids[j]))
			}
		}
		if err := os.WriteFile(ss.conf, []byte(strings.Join(conf, "\n")+"\n"), 0o644); err != nil {
			return fail(fmt.Errorf("testenv: %w", err))
		}
	}
	var g errgroup.Group
	for _, ss := range s.Sentinels {
		g.Go(ss.Start)
	}
	if err := g.Wait(); err != nil {
		return fail(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterStableTimeout)
	defer cancel()
	if err := s.waitRoles(ctx, master, replica); err != nil {
		return fail(err)
	}
	return s, nil
}

// Addrs returns the sentinels' host:port, for FailoverOptions.SentinelAddrs.
func (s *Sentinel) Addrs() []string {
	addrs := make([]string, len(s.Sentinels))
	for i, ss := range s.Sentinels {
		addrs[i] = ss.Addr()
	}
	return addrs
}

// Client returns a new client that finds the master through the sentinels
// (redis.NewFailoverClient) and follows it across failovers; opts may be nil
// and its MasterName and SentinelAddrs are replaced. Callers close it.
func (s *Sentinel) Client(opts *redis.FailoverOptions) *redis.Client {
	o := redis.FailoverOptions{}
	if opts != nil {
		o = *opts
	}
	o.MasterName, o.SentinelAddrs = s.MasterName, s.Addrs()
	return redis.NewFailoverClient(&o)
}

// Master returns the current master, once every sentinel names it, it
// reports the role of master and the other data server is its synced replica.
func (s *Sentinel) Master(ctx context.Context) (*Redis, error) {
	var master *Redis
	err := poll(ctx, clusterStableTimeout, func(ctx context.Context) (err error) {
		master, err = s.stableOnce(ctx)
		return err
	})
	return master, err
}

// Replica returns the current replica (see Master).
func (s *Sentinel) Replica(ctx context.Context) (*Redis, error) {
	m, err := s.Master(ctx)
	if err != nil {
		return nil, err
	}
	return s.other(m), nil
}

func (s *Sentinel) other(n *Redis) *Redis {
	if s.Data[0] == n {
		return s.Data[1]
	}
	return s.Data[0]
}

// KillMaster kills the master with SIGKILL, waits until the sentinels
// notice (DownAfter), agree and promote the replica, starts the old master
// again as a replica of the new one (as an operator would; the sentinels
// would too, after a delay) and waits until it has synced. It returns the
// new master.
func (s *Sentinel) KillMaster(ctx context.Context) (*Redis, error) {
	old, err := s.Master(ctx)
	if err != nil {
		return nil, err
	}
	promoted := s.other(old)
	if err := old.Kill(); err != nil {
		return nil, err
	}
	if err := s.waitNamed(ctx, promoted); err != nil {
		return nil, err
	}
	promoted.extra = nil
	old.extra = []string{"--replicaof", "127.0.0.1", strconv.Itoa(promoted.Port)}
	if err := old.Start(); err != nil {
		return nil, err
	}
	return promoted, s.waitRoles(ctx, promoted, old)
}

// LoseWrites fails the master over to its replica so that the writes done
// by write are acknowledged by the master and then lost, as in an
// asynchronous failover where the replica lagged: it pauses the replica
// (SIGSTOP), cuts its replication link on the master, runs write (which must
// succeed), pauses the master, resumes the replica, has a sentinel fail the
// master over (SENTINEL FAILOVER), then resumes the old master and makes it
// a replica of the new one, which drops the writes. It returns the new
// master, and an error if the replica had the writes after all.
func (s *Sentinel) LoseWrites(ctx context.Context, write func(ctx context.Context) error) (*Redis, error) {
	old, err := s.Master(ctx)
	if err != nil {
		return nil, err
	}
	promoted := s.other(old)
	if err := promoted.Pause(); err != nil {
		return nil, err
	}
	mc := old.client()
	defer mc.Close()
	if err := mc.Do(ctx, "CLIENT", "KILL", "TYPE", "replica").Err(); err != nil {
		_ = promoted.Resume()
		return nil, fmt.Errorf("testenv: cut replication of %s: %w", old.Addr(), err)
	}
	werr := write(ctx)
	written, oerr := infoInt(ctx, mc, "master_repl_offset")
	if err := old.Pause(); err != nil {
		_ = promoted.Resume()
		return nil, err
	}
	if err := promoted.Resume(); err != nil {
		_ = old.Resume()
		return nil, err
	}
	ferr := s.failover(ctx, promoted)
	if ferr == nil && oerr == nil {
		ferr = notReceived(ctx, promoted, written)
	}
	if err := old.Resume(); err != nil {
		return nil, err
	}
	if ferr != nil {
		return nil, ferr
	}
	promoted.extra = nil
	old.extra = []string{"--replicaof", "127.0.0.1", strconv.Itoa(promoted.Port)}
	if err := mc.Do(ctx, "REPLICAOF", "127.0.0.1", promoted.Port).Err(); err != nil {
		return nil, fmt.Errorf("testenv: make %s a replica: %w", old.Addr(), err)
	}
	if err := s.waitRoles(ctx, promoted, old); err != nil {
		return nil, err
	}
	if werr != nil {
		return promoted, fmt.Errorf("testenv: LoseWrites: write: %w", werr)
	}
	return promoted, nil
}

// failover asks the sentinels, one after the other, for a failover until
// they name promoted as the master.
func (s *Sentinel) failover(ctx context.Context, promoted *Redis) error {
	return poll(ctx, clusterStableTimeout, func(ctx context.Context) error {
		if err := s.namedOnce(ctx, promoted); err == nil {
			return nil
		}
		var errs []error
		for _, ss := range s.Sentinels {
			c := redis.NewSentinelClient(&redis.Options{Addr: ss.Addr(), MaxRetries: -1})
			err := c.Failover(ctx, s.MasterName).Err()
			c.Close()
			if err == nil {
				return s.waitNamed(ctx, promoted)
			}
			errs = append(errs, err)
		}
		return fmt.Errorf("SENTINEL FAILOVER: %w", errors.Join(errs...))
	})
}

// waitNamed waits until every sentinel names n as the master and n has
// taken the role.
func (s *Sentinel) waitNamed(ctx context.Context, n *Redis) error {
	err := poll(ctx, clusterStableTimeout, func(ctx context.Context) error { return s.namedOnce(ctx, n) })
	if err != nil {
		return fmt.Errorf("%w%s", err, s.logs())
	}
	return nil
}

// logs returns the end of every sentinel's log, for an error message.
func (s *Sentinel) logs() string {
	var b strings.Builder
	for _, ss := range s.Sentinels {
		fmt.Fprintf(&b, "\nsentinel %s:\n%s", ss.Addr(), logTail(ss.logPath, 15))
	}
	return b.String()
}

func (s *Sentinel) namedOnce(ctx context.Context, n *Redis) error {
	for _, ss := range s.Sentinels {
		c := redis.NewSentinelClient(&redis.Options{Addr: ss.Addr(), MaxRetries: -1})
		addr, err := c.GetMasterAddrByName(ctx, s.MasterName).Result()
		c.Close()
		if err != nil {
			return fmt.Errorf("sentinel %s: %w", ss.Addr(), err)
		}
		if len(addr) != 2 || addr[1] != strconv.Itoa(n.Port) {
			return fmt.Errorf("sentinel %s names %v as master, not %s", ss.Addr(), addr, n.Addr())
		}
	}
	nc := n.client()
	defer nc.Close()
	info, err := nc.Info(ctx, "replication").Result()
	if err != nil {
		return err
	}
	if !strings.Contains(info, "role:master") {
		return fmt.Errorf("%s has not taken the role of master", n.Addr())
	}
	return nil
}

// waitRoles waits until every sentinel names master, and replica has synced
// with it and every sentinel would promote it: a failover started before
// the sentinels have fresh news of the replica finds "no good slave" and
// is retried only after twice the failover timeout.
func (s *Sentinel) waitRoles(ctx context.Context, master, replica *Redis) error {
	return poll(ctx, clusterStableTimeout, func(ctx context.Context) error {
		if err := s.namedOnce(ctx, master); err != nil {
			return err
		}
		if err := synced(ctx, replica, master); err != nil {
			return err
		}
		return s.goodReplica(ctx, replica)
	})
}

// goodReplica reports an error unless every sentinel sees replica as a
// healthy replica with a working link to its master and recent news of it.
func (s *Sentinel) goodReplica(ctx context.Context, replica *Redis) error {
	for _, ss := range s.Sentinels {
		c := redis.NewSentinelClient(&redis.Options{Addr: ss.Addr(), MaxRetries: -1})
		rs, err := c.Replicas(ctx, s.MasterName).Result()
		c.Close()
		if err != nil {
			return fmt.Errorf("sentinel %s: %w", ss.Addr(), err)
		}
		good := false
		for _, r := range rs {
			if r["port"] == strconv.Itoa(replica.Port) && r["flags"] == "slave" && r["master-link-status"] == "ok" {
				good = true
			}
		}
		if !good {
			return fmt.Errorf("sentinel %s does not see %s as a good replica yet", ss.Addr(), replica.Addr())
		}
	}
	return nil
}

// stableOnce returns the master if waitRoles would succeed for one of the
// two data servers.
func (s *Sentinel) stableOnce(ctx context.Context) (*Redis, error) {
	var errs []error
	for _, m := range s.Data {
		err := s.namedOnce(ctx, m)
		if err == nil {
			err = synced(ctx, s.other(m), m)
		}
		if err == nil {
			return m, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// synced reports an error unless replica is connected to master and done
// with its initial sync.
func synced(ctx context.Context, replica, master *Redis) error {
	rc := replica.client()
	defer rc.Close()
	info, err := rc.Info(ctx, "replication").Result()
	if err != nil {
		return fmt.Errorf("%s: %w", replica.Addr(), err)
	}
	if !strings.Contains(info, "master_port:"+strconv.Itoa(master.Port)+"\r\n") ||
		!strings.Contains(info, "master_link_status:up") ||
		!strings.Contains(info, "master_sync_in_progress:0") {
		return fmt.Errorf("%s has not synced with %s", replica.Addr(), master.Addr())
	}
	return nil
}

// Close kills every process and removes the directory.
func (s *Sentinel) Close() error {
	var errs []error
	for _, ss := range s.Sentinels {
		errs = append(errs, ss.Kill())
	}
	for _, n := range s.Data {
		errs = append(errs, n.Close())
	}
	errs = append(errs, os.RemoveAll(s.Dir))
	return errors.Join(errs...)
}

// WaitReplicated waits until the replica has applied every write the master
// had acknowledged when it was called.
func (s *Sentinel) WaitReplicated(ctx context.Context) error {
	m, err := s.Master(ctx)
	if err != nil {
		return err
	}
	return waitOffset(ctx, m, s.other(m))
}

// waitOffset waits until replica's replication offset reaches the one
// master has now.
func waitOffset(ctx context.Context, master, replica *Redis) error {
	mc := master.client()
	defer mc.Close()
	want, err := infoInt(ctx, mc, "master_repl_offset")
	if err != nil {
		return fmt.Errorf("testenv: %s: %w", master.Addr(), err)
	}
	rc := replica.client()
	defer rc.Close()
	return poll(ctx, clusterStableTimeout, func(ctx context.Context) error {
		got, err := infoInt(ctx, rc, "slave_repl_offset")
		if err != nil {
			return err
		}
		if got < want {
			return fmt.Errorf("%s is at offset %d of %d", replica.Addr(), got, want)
		}
		return nil
	})
}

// infoInt reads an integer field of INFO replication.
func infoInt(ctx context.Context, c *redis.Client, field string) (int64, error) {
	info, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, fmt.Errorf("INFO replication has no %s", field)
}

// notReceived reports an error if promoted had received the master's
// stream up to offset written when it took over: then LoseWrites lost nothing.
func notReceived(ctx context.Context, promoted *Redis, written int64) error {
	c := promoted.client()
	defer c.Close()
	second, err := infoInt(ctx, c, "second_repl_offset")
	if err != nil {
		return fmt.Errorf("testenv: %s: %w", promoted.Addr(), err)
	}
	if second-1 >= written {
		return fmt.Errorf("testenv: LoseWrites: %s took over at offset %d and had the writes (up to %d)", promoted.Addr(), second-1, written)
	}
	return nil
}
