package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"
)

// ClusterOptions configures StartCluster.
type ClusterOptions struct {
	// NodeTimeout is the cluster-node-timeout: how long a master must be
	// unreachable before the others agree that it failed and its replica
	// takes over. Shorter makes KillMaster faster and a slow machine more
	// likely to fail a master over on its own. Default: 1s.
	NodeTimeout time.Duration
}

// Cluster is a throwaway Redis Cluster of three masters with one replica
// each, six redis-server processes on loopback ports, created with
// redis-cli --cluster create. Its fault controls (KillMaster, LoseWrites and
// the controls of each node) act on the real processes; roles move with
// every failover, so ask Masters, MasterOf and ReplicaOf for the current ones.
type Cluster struct {
	// Dir holds one directory per node.
	Dir string
	// Nodes are the six servers, in the order they were created.
	Nodes []*Redis

	nodeTimeout time.Duration
}

// clusterStableTimeout bounds every wait for the cluster to settle.
const clusterStableTimeout = 60 * time.Second

// StartCluster starts six cluster-enabled redis-servers and joins them into
// a cluster of three masters, each with one replica, serving all 16384
// slots. It returns once every node reports the cluster ok and every replica
// has synced.
func StartCluster(opts *ClusterOptions) (*Cluster, error) {
	if opts == nil {
		opts = &ClusterOptions{}
	}
	if opts.NodeTimeout < 0 || (opts.NodeTimeout > 0 && opts.NodeTimeout < 100*time.Millisecond) {
		return nil, fmt.Errorf("testenv: ClusterOptions.NodeTimeout %v is below 100ms; leave it 0 for 1s", opts.NodeTimeout)
	}
	cli, err := lookBinary("redis-cli")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "cacheaside-cluster-")
	if err != nil {
		return nil, fmt.Errorf("testenv: %w", err)
	}
	c := &Cluster{Dir: dir, Nodes: make([]*Redis, 6), nodeTimeout: opts.NodeTimeout}
	if c.nodeTimeout == 0 {
		c.nodeTimeout = time.Second
	}
	var g errgroup.Group
	for i := range c.Nodes {
		g.Go(func() (err error) {
			c.Nodes[i], err = startRedis(dir, c.nodeArgs)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		c.Close()
		return nil, err
	}
	args := []string{"--cluster", "create"}
	for _, n := range c.Nodes {
		args = append(args, n.Addr())
	}
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		c.Close()
		return nil, fmt.Errorf("testenv: redis-cli --cluster create: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterStableTimeout)
	defer cancel()
	if _, err := c.stable(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// nodeArgs are the flags of a cluster node on port. The cluster bus gets a
// free port of its own: the default, port+10000, overflows for high ports.
func (c *Cluster) nodeArgs(string, int) ([]string, error) {
	bus, err := freePort()
	if err != nil {
		return nil, err
	}
	return []string{
		"--cluster-enabled", "yes",
		"--cluster-config-file", "nodes.conf",
		"--cluster-port", strconv.Itoa(bus),
		"--cluster-node-timeout", strconv.FormatInt(c.nodeTimeout.Milliseconds(), 10),
		// A replica takes over however long ago it last heard from its
		// master: the tests cut replication on purpose.
		"--cluster-replica-validity-factor", "0",
	}, nil
}

// Addrs returns the host:port of every node, a seed list for a ClusterClient.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		addrs[i] = n.Addr()
	}
	return addrs
}

// Client returns a new ClusterClient for the cluster; opts may be nil and
// its Addrs are replaced. Callers close it.
func (c *Cluster) Client(opts *redis.ClusterOptions) *redis.ClusterClient {
	o := redis.ClusterOptions{}
	if opts != nil {
		o = *opts
	}
	o.Addrs = c.Addrs()
	return redis.NewClusterClient(&o)
}

// Shard is one master of the cluster, its replica and the slots it serves.
type Shard struct {
	Master, Replica *Redis
	// Slots are the master's slot ranges, each [first, last].
	Slots [][2]int
}

// Shards returns the cluster's current shards, once every running node
// agrees on them (see Masters).
func (c *Cluster) Shards(ctx context.Context) ([]Shard, error) {
	return c.stable(ctx)
}

// Masters returns the current masters, once the cluster is stable: every
// running node reports cluster_state:ok and the same three masters, and
// every replica has synced with its master.
func (c *Cluster) Masters(ctx context.Context) ([]*Redis, error) {
	shards, err := c.stable(ctx)
	if err != nil {
		return nil, err
	}
	ms := make([]*Redis, len(shards))
	for i, s := range shards {
		ms[i] = s.Master
	}
	return ms, nil
}

// MasterOf returns the master that serves key now.
func (c *Cluster) MasterOf(ctx context.Context, key string) (*Redis, error) {
	s, err := c.shardOf(ctx, key)
	if err != nil {
		return nil, err
	}
	return s.Master, nil
}

func (c *Cluster) shardOf(ctx context.Context, key string) (Shard, error) {
	shards, err := c.stable(ctx)
	if err != nil {
		return Shard{}, err
	}
	slot := Slot(key)
	for _, s := range shards {
		for _, r := range s.Slots {
			if slot >= r[0] && slot <= r[1] {
				return s, nil
			}
		}
	}
	return Shard{}, fmt.Errorf("testenv: no master serves slot %d of %q", slot, key)
}

// ReplicaOf returns the replica of master.
func (c *Cluster) ReplicaOf(ctx context.Context, master *Redis) (*Redis, error) {
	shards, err := c.stable(ctx)
	if err != nil {
		return nil, err
	}
	for _, s := range shards {
		if s.Master == master {
			return s.Replica, nil
		}
	}
	return nil, fmt.Errorf("testenv: %s is not a master of the cluster", master.Addr())
}

// KillMaster kills master with SIGKILL, waits until the cluster promotes its
// replica (after NodeTimeout and an election), starts the old master again
// and waits until it has rejoined as the replica of the promoted one. It
// returns the new master. Writes the replica had received survive; a
// replica that lags loses the rest, as a real failover would.
func (c *Cluster) KillMaster(ctx context.Context, master *Redis) (*Redis, error) {
	replica, err := c.ReplicaOf(ctx, master)
	if err != nil {
		return nil, err
	}
	if err := master.Kill(); err != nil {
		return nil, err
	}
	if err := c.waitPromoted(ctx, replica, master); err != nil {
		return nil, err
	}
	if err := master.Start(); err != nil {
		return nil, err
	}
	if err := c.waitReplica(ctx, master, replica); err != nil {
		return nil, err
	}
	return replica, nil
}

// LoseWrites fails master over to its replica so that the writes done by
// write are acknowledged by master and then lost, as in an asynchronous
// failover where the replica lagged: it pauses the replica (SIGSTOP), cuts
// its replication link on the master, runs write (which must write to
// master's slots and succeed), pauses the master, resumes the replica and
// makes it take over (CLUSTER FAILOVER TAKEOVER), then resumes the old master,
// which rejoins as a replica of the new one and drops the writes. It returns
// the new master, and an error if the replica had the writes after all.
func (c *Cluster) LoseWrites(ctx context.Context, master *Redis, write func(ctx context.Context) error) (*Redis, error) {
	replica, err := c.ReplicaOf(ctx, master)
	if err != nil {
		return nil, err
	}
	if err := replica.Pause(); err != nil {
		return nil, err
	}
	mc := master.client()
	defer mc.Close()
	// The master drops the link at once; the paused replica finds it closed
	// when it resumes and cannot reconnect to the paused master.
	if err := mc.Do(ctx, "CLIENT", "KILL", "TYPE", "replica").Err(); err != nil {
		_ = replica.Resume()
		return nil, fmt.Errorf("testenv: cut replication of %s: %w", master.Addr(), err)
	}
	werr := write(ctx)
	written, oerr := infoInt(ctx, mc, "master_repl_offset")
	if err := master.Pause(); err != nil {
		_ = replica.Resume()
		return nil, err
	}
	if err := replica.Resume(); err != nil {
		_ = master.Resume()
		return nil, err
	}
	rc := replica.client()
	defer rc.Close()
	if err := rc.Do(ctx, "CLUSTER", "FAILOVER", "TAKEOVER").Err(); err != nil {
		_ = master.Resume()
		return nil, fmt.Errorf("testenv: CLUSTER FAILOVER TAKEOVER on %s: %w", replica.Addr(), err)
	}
	perr := c.waitPromoted(ctx, replica, master)
	if perr == nil && oerr == nil {
		perr = notReceived(ctx, replica, written)
	}
	if err := master.Resume(); err != nil {
		return nil, err
	}
	if perr != nil {
		return nil, perr
	}
	if err := c.waitReplica(ctx, master, replica); err != nil {
		return nil, err
	}
	if werr != nil {
		return replica, fmt.Errorf("testenv: LoseWrites: write: %w", werr)
	}
	return replica, nil
}

// waitPromoted waits until every running node other than old sees replica
// as a master and reports the cluster ok.
func (c *Cluster) waitPromoted(ctx context.Context, replica, old *Redis) error {
	return poll(ctx, clusterStableTimeout, func(ctx context.Context) error {
		for _, n := range c.Nodes {
			if n == old || !n.running() {
				continue
			}
			view, err := n.clusterView(ctx)
			if err != nil {
				return err
			}
			if !view.ok {
				return fmt.Errorf("%s: cluster_state not ok", n.Addr())
			}
			if !view.isMaster(replica.Port) {
				return fmt.Errorf("%s does not see %s as a master yet", n.Addr(), replica.Addr())
			}
		}
		return nil
	})
}

// waitReplica waits until node is a synced replica of master and the cluster is stable.
func (c *Cluster) waitReplica(ctx context.Context, node, master *Redis) error {
	return poll(ctx, clusterStableTimeout, func(ctx context.Context) error {
		shards, err := c.stableOnce(ctx)
		if err != nil {
			return err
		}
		for _, s := range shards {
			if s.Master == master && s.Replica == node {
				return nil
			}
		}
		return fmt.Errorf("%s is not yet the replica of %s", node.Addr(), master.Addr())
	})
}

// stable waits until stableOnce succeeds.
func (c *Cluster) stable(ctx context.Context) ([]Shard, error) {
	var shards []Shard
	err := poll(ctx, clusterStableTimeout, func(ctx context.Context) (err error) {
		shards, err = c.stableOnce(ctx)
		return err
	})
	return shards, err
}

// stableOnce returns the shards if every node runs, reports cluster_state:ok
// and agrees on three masters with one synced replica each.
func (c *Cluster) stableOnce(ctx context.Context) ([]Shard, error) {
	byPort := map[int]*Redis{}
	var first *clusterView
	for _, n := range c.Nodes {
		byPort[n.Port] = n
		if !n.running() {
			return nil, fmt.Errorf("%s is down", n.Addr())
		}
		view, err := n.clusterView(ctx)
		if err != nil {
			return nil, err
		}
		if !view.ok {
			return nil, fmt.Errorf("%s: cluster_state not ok", n.Addr())
		}
		if first == nil {
			first = view
		} else if !slices.Equal(first.masters(), view.masters()) {
			return nil, fmt.Errorf("%s sees masters %v, %s sees %v", c.Nodes[0].Addr(), first.masters(), n.Addr(), view.masters())
		}
	}
	var shards []Shard
	for _, m := range first.nodes {
		if !m.master || len(m.slots) == 0 {
			continue
		}
		s := Shard{Master: byPort[m.port], Slots: m.slots}
		for _, r := range first.nodes {
			if !r.master && r.masterID == m.id && !r.failing {
				s.Replica = byPort[r.port]
			}
		}
		if s.Master == nil || s.Replica == nil {
			return nil, fmt.Errorf("shard of %d has no replica yet", m.port)
		}
		if err := synced(ctx, s.Replica, s.Master); err != nil {
			return nil, err
		}
		shards = append(shards, s)
	}
	if len(shards) != 3 {
		return nil, fmt.Errorf("%d masters serve slots, want 3", len(shards))
	}
	return shards, nil
}

// clusterView is one node's CLUSTER INFO and CLUSTER NODES.
type clusterView struct {
	ok    bool
	nodes []clusterNode
}

type clusterNode struct {
	id, masterID string
	port         int
	master       bool
	failing      bool
	slots        [][2]int
}

func (v *clusterView) masters() []int {
	var ports []int
	for _, n := range v.nodes {
		if n.master && len(n.slots) > 0 && !n.failing {
			ports = append(ports, n.port)
		}
	}
	slices.Sort(ports)
	return ports
}

func (v *clusterView) isMaster(port int) bool { return slices.Contains(v.masters(), port) }

func (r *Redis) clusterView(ctx context.Context) (*clusterView, error) {
	c := r.client()
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	info, err := c.ClusterInfo(ctx).Result()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", r.Addr(), err)
	}
	text, err := c.ClusterNodes(ctx).Result()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", r.Addr(), err)
	}
	v := &clusterView{ok: strings.Contains(info, "cluster_state:ok")}
	for line := range strings.SplitSeq(strings.TrimSpace(text), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		addr, _, _ := strings.Cut(f[1], "@")
		_, port, _ := strings.Cut(addr, ":")
		n := clusterNode{id: f[0], masterID: f[3]}
		n.port, _ = strconv.Atoi(port)
		flags := strings.Split(f[2], ",")
		n.master = slices.Contains(flags, "master")
		n.failing = slices.Contains(flags, "fail") || slices.Contains(flags, "fail?")
		for _, s := range f[8:] {
			if strings.HasPrefix(s, "[") {
				continue // a slot being migrated
			}
			lo, hi, isRange := strings.Cut(s, "-")
			if !isRange {
				hi = lo
			}
			a, _ := strconv.Atoi(lo)
			b, _ := strconv.Atoi(hi)
			n.slots = append(n.slots, [2]int{a, b})
		}
		v.nodes = append(v.nodes, n)
	}
	return v, nil
}

// client returns a plain client for this one server that does not retry.
func (r *Redis) client() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: r.Addr(), MaxRetries: -1, DialTimeout: time.Second})
}

// Close kills every node and removes the cluster's directory.
func (c *Cluster) Close() error {
	var errs []error
	for _, n := range c.Nodes {
		if n != nil {
			errs = append(errs, n.Close())
		}
	}
	errs = append(errs, os.RemoveAll(c.Dir))
	return errors.Join(errs...)
}

// poll calls check every 20ms until it returns nil, ctx ends or timeout
// passes; it then returns check's last error.
func poll(ctx context.Context, timeout time.Duration, check func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := check(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("testenv: %w", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Slot returns the cluster hash slot of key: CRC16 (XMODEM) of the key, or of
// its hash tag (the part between the first { and the next } when not
// empty), modulo 16384.
func Slot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for k := 0; k < len(key); k++ {
		crc ^= uint16(key[k]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % 16384
}

// WaitReplicated waits until every replica has applied every write its
// master had acknowledged when it was called.
func (c *Cluster) WaitReplicated(ctx context.Context) error {
	shards, err := c.stable(ctx)
	if err != nil {
		return err
	}
	for _, s := range shards {
		if err := waitOffset(ctx, s.Master, s.Replica); err != nil {
			return err
		}
	}
	return nil
}
