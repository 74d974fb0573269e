package invalidate_test

import (
	"context"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/binlog"
	"github.com/cacheaside/cacheaside/invalidate"
)

// The tests in this file act out the ways Redis loses data under a running
// invalidator (see "Recovery" in the package doc): everything, a suffix
// with or without the lock, and a checkpoint missing at a start. Each first
// puts a stale copy of user 1 in the cache, then requires it invalidated.

// slowNoticeOptions save a checkpoint after every batch and refresh the
// lock only every second, so that a leader saves after a fault well before
// its refresh can notice a lost lock: the order that loses invalidations
// when saves are not checked against what the leadership last saved.
var slowNoticeOptions = invalidate.Options{LeaderTTL: 3 * time.Second, CheckpointInterval: time.Millisecond}

// freshWithin reads user id through the cache until it matches MariaDB,
// committing a fence row before each read so that transactions (and so
// checkpoint saves) keep flowing; it returns how long that took, or false
// when it did not happen within d.
func (s *stack) freshWithin(t *testing.T, id uint64, d time.Duration) (time.Duration, bool) {
	t.Helper()
	ctx := context.Background()
	start := time.Now()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for time.Since(start) < d {
		_, err := s.db.Exec("INSERT INTO fence VALUES (?)", rand.Int64())
		require.NoError(t, err)
		cached, loaded, err := s.fetchUser(ctx, id)
		require.NoError(t, err)
		truth, err := loadUser(ctx, s.db, id)
		require.NoError(t, err)
		if loaded || cached == truth {
			return time.Since(start), true
		}
		<-tick.C
	}
	return d, false
}

// cacheUser1 commits user 1 at version 1, waits for its invalidation and
// caches it.
func (s *stack) cacheUser1(t *testing.T) {
	t.Helper()
	_, err := s.db.Exec("INSERT INTO users VALUES (1, 'a@x.io', 'v1', 1)")
	require.NoError(t, err)
	s.fence(t)
	u, loaded, err := s.fetchUser(context.Background(), 1)
	require.NoError(t, err)
	require.True(t, loaded)
	require.Equal(t, "v1", u.Name)
}

// restartLeader stops the invalidator and starts a new one: a leader change.
func (s *stack) restartLeader(t *testing.T) {
	t.Helper()
	s.stop()
	s.inv = s.newInvalidator(t)
	s.stop = s.run(t)
}

// Scenario 1: after a few leader changes Redis loses everything (here: every
// key of the stack, as FLUSHALL would). The leader goes on until it
// notices; the next leadership must neither be refused by a checkpoint
// saved meanwhile nor stall while it holds the lock.
func TestRecoveryRedisLosesEverythingAfterLeaderChanges(t *testing.T) {
	s := newStack(t, stackOptions{inv: &slowNoticeOptions})
	ctx := context.Background()
	for range 3 {
		s.restartLeader(t)
	}
	require.GreaterOrEqual(t, s.inv.Stats().Epoch, uint64(4))

	require.NoError(t, s.rdb.FlushAll(ctx).Err())
	lost := time.Now()
	_, err := s.db.Exec("INSERT INTO fence VALUES (?)", rand.Int64())
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return s.rdb.HExists(ctx, s.prefix+"checkpoint", "pos").Val()
	}, 10*time.Second, 5*time.Millisecond, "a checkpoint is saved again")
	s.restartLeader(t)

	s.cacheUser1(t)
	_, err = s.db.Exec("UPDATE users SET name = 'v2', version = 2 WHERE id = 1")
	require.NoError(t, err)
	took, ok := s.freshWithin(t, 1, 10*time.Second)
	assert.True(t, ok, "a commit after the loss and a leader change is invalidated")
	t.Logf("invalidations flowing %v after the loss (an update %v after its commit)", time.Since(lost), took)
	assert.True(t, s.inv.Stats().Leader)
}

// Scenario 2: Redis goes back in time (a failover to a replica that lagged,
// an append-only file that lost its last second): the checkpoint and a
// cached key return to an earlier state, while the lock survives. The
// leader must replay from the rolled-back checkpoint, not overwrite it
// with the position it holds in memory.
func TestRecoveryRollbackWithLockKept(t *testing.T) {
	s := newStack(t, stackOptions{inv: &slowNoticeOptions})
	s.rollback(t, false)
}

// Scenario 3: the same rollback also loses the leader's lock, and a standby
// takes over. Neither the deposed leader's periodic save nor its last save
// may move the rolled-back checkpoint past the lost invalidations before
// the new leader claims it.
func TestRecoveryRollbackWithLockLost(t *testing.T) {
	s := newStack(t, stackOptions{inv: &slowNoticeOptions})
	standby := s.newInvalidator(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- standby.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		assert.NoError(t, <-done)
	})
	s.rollback(t, true)
}

// rollback caches user 1, snapshots the checkpoint and the cached key
// (DUMP), commits an update and waits until it is invalidated and a later
// checkpoint saved, then restores the snapshot (RESTORE): Redis went back
// to before the invalidation. With loseLock the leader lock goes too.
func (s *stack) rollback(t *testing.T, loseLock bool) {
	t.Helper()
	ctx := context.Background()
	s.cacheUser1(t)
	cpKey, userKey := s.prefix+"checkpoint", userKey(s.prefix, 1)
	cpDump, err := s.rdb.Dump(ctx, cpKey).Result()
	require.NoError(t, err)
	userDump, err := s.rdb.Dump(ctx, userKey).Result()
	require.NoError(t, err)
	posBefore := s.rdb.HGet(ctx, cpKey, "pos").Val()

	key := userKey
	before := s.applied.count(key)
	_, err = s.db.Exec("UPDATE users SET name = 'v2', version = 2 WHERE id = 1")
	require.NoError(t, err)
	for s.applied.count(key) == before {
		s.fence(t)
	}
	require.Eventually(t, func() bool { return s.rdb.HGet(ctx, cpKey, "pos").Val() != posBefore },
		10*time.Second, time.Millisecond, "a checkpoint after the invalidation is saved")

	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.RestoreReplace(ctx, cpKey, 0, cpDump)
		p.RestoreReplace(ctx, userKey, time.Minute, userDump)
		if loseLock {
			p.Del(ctx, s.prefix+"leader")
		}
		return nil
	})
	require.NoError(t, err)
	rolledBack := time.Now()
	u, loaded, err := s.fetchUser(ctx, 1)
	require.NoError(t, err)
	require.False(t, loaded)
	require.Equal(t, "v1", u.Name, "the rollback put the stale copy back")

	took, ok := s.freshWithin(t, 1, 10*time.Second)
	assert.True(t, ok, "the invalidation lost in the rollback is replayed")
	t.Logf("stale copy invalidated %v after the rollback", took)
	assert.Less(t, time.Since(rolledBack), time.Minute)
}

// Scenario 4: the checkpoint is missing at a start because Redis lost it
// while no invalidator ran, and a change was committed in between. A
// missing checkpoint must be answered like a lost position (a flush), not
// taken for a harmless first start.
func TestRecoveryMissingCheckpointFlushes(t *testing.T) {
	s := newStack(t, stackOptions{})
	ctx := context.Background()
	_, err := s.db.Exec("INSERT INTO users VALUES (1, 'a@x.io', 'v1', 1)")
	require.NoError(t, err)
	s.fence(t)
	s.stop() // no invalidator runs

	env.DeleteKeys(s.prefix) // Redis lost everything
	u, loaded, err := s.fetchUser(ctx, 1)
	require.NoError(t, err)
	require.True(t, loaded)
	require.Equal(t, "v1", u.Name)
	_, err = s.db.Exec("UPDATE users SET name = 'v2', version = 2 WHERE id = 1")
	require.NoError(t, err)

	s.inv = s.newInvalidator(t)
	s.stop = s.run(t)
	assert.Equal(t, uint64(1), s.inv.Stats().Flushes, "a missing checkpoint flushes the cache")
	u, loaded, err = s.fetchUser(ctx, 1)
	require.NoError(t, err)
	assert.True(t, loaded)
	assert.Equal(t, "v2", u.Name, "the change committed while the checkpoint was missing is not served stale")
}

// A MySQL user without REPLICATION CLIENT cannot read the binlog position:
// Run must return a clear error at start, on a first start and on a resume
// alike, instead of retrying for ever.
func TestMissingPrivilegeIsAnErrorFromRun(t *testing.T) {
	s := newStack(t, stackOptions{})
	s.stop()
	ctx := context.Background()
	user := "norepl_" + strconv.Itoa(rand.IntN(1e9))
	for _, q := range []string{
		"CREATE USER '" + user + "'@'%' IDENTIFIED BY 'secret-pw'",
		"GRANT REPLICATION SLAVE, SELECT ON *.* TO '" + user + "'@'%'",
	} {
		_, err := env.Admin().Exec(q)
		require.NoError(t, err, q)
	}
	t.Cleanup(func() { _, _ = env.Admin().Exec("DROP USER '" + user + "'@'%'") })
	cfg := env.MySQLConfig("")
	stream, err := binlog.New(binlog.Config{Addr: cfg.Addr, User: user, Password: "secret-pw", ServerID: 1000 + rand.Uint32N(1<<30)}, nil)
	require.NoError(t, err)

	for _, start := range []string{"first start", "resume"} {
		if start == "first start" {
			env.DeleteKeys(s.prefix)
		} else {
			s.inv = s.newInvalidator(t)
			s.stop = s.run(t) // saves a checkpoint
			s.stop()
		}
		inv := invalidate.New(stream, s.cache, s.rdb, s.rules, &s.invOpts)
		ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		err := inv.Run(ctx)
		cancel()
		require.Error(t, err, start)
		assert.ErrorIs(t, err, binlog.ErrPreflight, start)
		assert.ErrorContains(t, err, "REPLICATION CLIENT", start)
		assert.NotContains(t, err.Error(), "secret-pw")
	}
}

// TestTakeoverAfterLeaderKill measures, with the default LeaderTTL (5s),
// the time from a SIGKILL of the leading process to invalidations flowing
// again from the standby, and requires that they do.
func TestTakeoverAfterLeaderKill(t *testing.T) {
	s := newStack(t, stackOptions{external: true})
	cs := &childSet{s: s, leaderTTL: 5 * time.Second}
	cs.start(t)
	cs.waitLeader(t)
	cs.start(t)
	s.fence(t)
	killed := time.Now()
	cs.killLeader(t)
	s.fence(t)
	t.Logf("LeaderTTL 5s: invalidations flow again %v after the leader's SIGKILL", time.Since(killed).Round(time.Millisecond))
	assert.True(t, cs.leaderOtherThan(nil))
}

// The checkpoint records the identity of the server its position belongs
// to. A file/offset checkpoint met by another server is a lost position (a
// flush); a GTID checkpoint resumes, since GTIDs name transactions on every
// server of a replication topology.
func TestCheckpointOfAnotherServer(t *testing.T) {
	s := newStack(t, stackOptions{})
	ctx := context.Background()
	cpKey := s.prefix + "checkpoint"
	server := s.rdb.HGet(ctx, cpKey, "server").Val()
	require.Contains(t, server, "server_id=", "the checkpoint records the server")
	require.Contains(t, server, "domains=0")
	for _, tc := range []struct {
		name    string
		gtid    bool
		flushes uint64
	}{
		{"file/offset position of another server", false, 1},
		{"gtid position of another server", true, 0},
	} {
		s.stop()
		p, err := binlog.ParsePosition(s.rdb.HGet(ctx, cpKey, "pos").Val())
		require.NoError(t, err)
		if !tc.gtid {
			p.GTIDSet = ""
		}
		require.NoError(t, s.rdb.HSet(ctx, cpKey, "pos", p.String(), "server", "server_id=999 domains=0").Err())
		s.inv = s.newInvalidator(t)
		s.stop = s.run(t)
		assert.Equal(t, tc.flushes, s.inv.Stats().Flushes, tc.name)
		s.fence(t)
		assert.Eventually(t, func() bool { return s.rdb.HGet(ctx, cpKey, "server").Val() == server },
			5*time.Second, time.Millisecond, "saves record this server again")
	}
}
