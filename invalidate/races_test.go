package invalidate_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/binlog"
	"github.com/cacheaside/cacheaside/cache"
	"github.com/cacheaside/cacheaside/internal/testenv"
	"github.com/cacheaside/cacheaside/invalidate"
)

func TestRulesCheckNamesMissingColumn(t *testing.T) {
	db, name := env.NewDatabase(t)
	_, err := db.Exec(usersDDL)
	require.NoError(t, err)
	rules, err := invalidate.NewRules(invalidate.Rule{Schema: name, Table: "users", Keys: []string{"user:{id}", "user:phone:{phone}"}})
	require.NoError(t, err)
	err = rules.Check(context.Background(), db)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `no column "phone"`)

	rules, err = invalidate.NewRules(invalidate.Rule{Table: "nope", Keys: []string{"x:{id}"}})
	require.NoError(t, err)
	assert.ErrorContains(t, rules.Check(context.Background(), db), "table not found")
}

func TestRowKeysFromBothImages(t *testing.T) {
	rules, err := invalidate.NewRules(
		invalidate.Rule{Schema: "app", Table: "users", Keys: []string{"user:{id}", "user:email:{email|lower}"}},
		invalidate.Rule{Table: "users", Func: func(r binlog.Row) []string { return []string{"users:count"} }, Namespaces: []string{"users"}},
	)
	require.NoError(t, err)
	keys, err := rules.Keys(binlog.Row{
		Schema: "app", Table: "users", Op: binlog.Update,
		Before: map[string]any{"id": uint64(7), "email": "Old@x.io"},
		After:  map[string]any{"id": uint64(7), "email": "new@x.io"},
	})
	require.NoError(t, err)
	assert.Equal(t, []string{"user:7", "user:email:new@x.io", "user:email:old@x.io", "users:count"}, keys)

	keys, err = rules.Keys(binlog.Row{Schema: "other", Table: "users", Op: binlog.Insert, After: map[string]any{"id": int64(1)}})
	require.NoError(t, err)
	assert.Equal(t, []string{"users:count"}, keys, "a rule with a Schema matches that schema only")

	ns, all := rules.TableWide("app", "users")
	assert.Equal(t, []string{"user", "users"}, ns)
	assert.False(t, all)
	ns, all = rules.TableWide("app", "unwatched")
	assert.Empty(t, ns)
	assert.False(t, all)
	ns, _ = rules.TableWide("app", "")
	assert.Equal(t, []string{"user", "users"}, ns, "a change to the whole schema")
	ns, _ = rules.TableWide("other", "")
	assert.Equal(t, []string{"users"}, ns, "only the rule without a Schema matches another schema")
	ns, _ = rules.TableWide("", "")
	assert.Equal(t, []string{"user", "users"}, ns, "a change to the whole server")
}

func TestUpdateInvalidatesOldAndNewKeys(t *testing.T) {
	s := newStack(t, stackOptions{})
	ctx := context.Background()
	_, err := s.db.Exec("INSERT INTO users VALUES (1, 'ada@x.io', 'Ada', 1)")
	require.NoError(t, err)
	u, loaded, err := s.fetchUser(ctx, 1)
	require.NoError(t, err)
	require.True(t, loaded)
	require.Equal(t, "Ada", u.Name)

	_, err = s.db.Exec("UPDATE users SET name = 'Ada L', email = 'ADA@lovelace.io' WHERE id = 1")
	require.NoError(t, err)
	s.fence(t)
	assert.Positive(t, s.applied.count(s.prefix+"user:email:ada@x.io"), "old email key")
	assert.Positive(t, s.applied.count(s.prefix+"user:email:ada@lovelace.io"), "new email key, lower-cased")
	u, loaded, err = s.fetchUser(ctx, 1)
	require.NoError(t, err)
	assert.True(t, loaded, "the update bypassed the library, yet the cached copy is gone")
	assert.Equal(t, "Ada L", u.Name)

	st := s.inv.Stats()
	assert.True(t, st.Leader)
	assert.Positive(t, st.Transactions)
	assert.Positive(t, st.Keys)
}

// R3: the writer commits and dies before it deletes the key, and no
// invalidator is running at that moment. When one starts, it resumes from
// the checkpoint and the change still reaches the cache.
func TestR3WriterDiesBetweenCommitAndDelete(t *testing.T) {
	s := newStack(t, stackOptions{})
	ctx := context.Background()
	_, err := s.db.Exec("INSERT INTO users VALUES (3, 'c@x.io', 'v1', 1)")
	require.NoError(t, err)
	s.fence(t)
	s.stop() // every invalidator is down

	cmd := env.Child(ctx, "writer-dies", "DB="+s.dbName, "PREFIX="+s.prefix)
	err = cmd.Run()
	var exit *exec.ExitError
	require.True(t, errors.As(err, &exit), "the writer must have died: %v", err)

	u, loaded, err := s.fetchUser(ctx, 3)
	require.NoError(t, err)
	require.False(t, loaded)
	require.Equal(t, "v1", u.Name, "without the invalidator the cache keeps the stale copy (R3 reproduced)")

	s.inv = s.newInvalidator(t)
	s.stop = s.run(t)
	u, loaded, err = s.fetchUser(ctx, 3)
	require.NoError(t, err)
	assert.True(t, loaded)
	assert.Equal(t, "v2", u.Name, "the restarted invalidator replayed the commit from its checkpoint")
}

// childWriterDies fills the cache with user 3, commits an update of it and
// kills itself before it can invalidate.
func childWriterDies(ctx context.Context, e *testenv.Env) error {
	db, err := sql.Open("mysql", e.DSN(os.Getenv("DB")))
	if err != nil {
		return err
	}
	rdb := e.NewRedis(nil)
	c, err := cache.New(rdb, &cache.Options{Prefix: os.Getenv("PREFIX")})
	if err != nil {
		return err
	}
	if _, err := cache.Fetch(ctx, c, userKey(os.Getenv("PREFIX"), 3), func(ctx context.Context) (user, error) { return loadUser(ctx, db, 3) }); err != nil {
		return err
	}
	if _, err := db.ExecContext(ctx, "UPDATE users SET name = 'v2', version = 2 WHERE id = 3"); err != nil {
		return err
	}
	return syscall.Kill(os.Getpid(), syscall.SIGKILL)
}

// R5: the binlog event of a commit can reach the invalidator before the
// commit is visible to every reader. A reader that starts after the
// invalidation but still sees the old row (here: a snapshot taken before
// the commit) would fill the old value. A tombstone window refuses that fill.
func TestR5FillOfInvisibleRowRefusedByTombstone(t *testing.T) {
	for _, tc := range []struct {
		name      string
		tombstone time.Duration
		delayed   time.Duration
		wantStale bool
	}{
		{"without tombstone the stale fill lands", 0, 0, true},
		{"tombstone refuses the stale fill", 300 * time.Millisecond, 0, false},
		{"delayed invalidation removes the stale fill", 0, 300 * time.Millisecond, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStack(t, stackOptions{
				cache: &cache.Options{TombstoneTTL: tc.tombstone},
				inv:   &invalidate.Options{DelayedInvalidation: tc.delayed},
			})
			ctx := context.Background()
			_, err := s.db.Exec("INSERT INTO users VALUES (5, 'e@x.io', 'v1', 1)")
			require.NoError(t, err)
			s.fence(t)

			// A reader whose view of the row predates the commit fills after
			// the invalidation.
			u := s.fillFromOldSnapshot(t, 5)
			require.Equal(t, "v1", u.Name)

			u, loaded, err := s.fetchUser(ctx, 5)
			require.NoError(t, err)
			if tc.wantStale {
				assert.False(t, loaded)
				assert.Equal(t, "v1", u.Name, "the stale fill landed: R5 reproduced")
				if tc.delayed > 0 {
					assert.Eventually(t, func() bool {
						u, _, err := s.fetchUser(ctx, 5)
						return err == nil && u.Name == "v2"
					}, 10*tc.delayed, 10*time.Millisecond, "the delayed second invalidation removes the stale copy")
				}
				return
			}
			assert.True(t, loaded, "the stale fill was refused")
			assert.Equal(t, "v2", u.Name)
			time.Sleep(tc.tombstone) // let the window pass: fills work again
			_, _, err = s.fetchUser(ctx, 5)
			require.NoError(t, err)
			u, loaded, err = s.fetchUser(ctx, 5)
			require.NoError(t, err)
			assert.False(t, loaded, "after the window the value is cached again")
			assert.Equal(t, "v2", u.Name)
		})
	}
}

// R8: TRUNCATE removes every row without a row event; the table's namespace
// generation is bumped, so every cached key of it reads as a miss.
func TestR8TruncateFlushesTheTable(t *testing.T) {
	s := newStack(t, stackOptions{})
	ctx := context.Background()
	for id := 1; id <= 20; id++ {
		_, err := s.db.Exec("INSERT INTO users VALUES (?, ?, 'n', 1)", id, "u"+strconv.Itoa(id)+"@x.io")
		require.NoError(t, err)
	}
	for id := uint64(1); id <= 20; id++ {
		_, _, err := s.fetchUser(ctx, id)
		require.NoError(t, err)
	}
	_, err := s.db.Exec("TRUNCATE TABLE users")
	require.NoError(t, err)
	s.fence(t)
	for id := uint64(1); id <= 20; id++ {
		_, loaded, err := s.fetchUser(ctx, id)
		assert.ErrorIs(t, err, cache.ErrNotFound, "id %d", id)
		assert.True(t, loaded, "id %d must not be served from the cache after TRUNCATE", id)
	}
}

// R9: "not found" is cached; then the row is inserted. The insert event
// clears the not-found entry.
func TestR9InsertClearsCachedNotFound(t *testing.T) {
	s := newStack(t, stackOptions{})
	ctx := context.Background()
	_, loaded, err := s.fetchUser(ctx, 9)
	require.ErrorIs(t, err, cache.ErrNotFound)
	require.True(t, loaded)
	_, loaded, err = s.fetchUser(ctx, 9)
	require.ErrorIs(t, err, cache.ErrNotFound)
	require.False(t, loaded, "not found is cached")

	_, err = s.db.Exec("INSERT INTO users VALUES (9, 'i@x.io', 'new', 1)")
	require.NoError(t, err)
	s.fence(t)
	u, loaded, err := s.fetchUser(ctx, 9)
	require.NoError(t, err)
	assert.True(t, loaded)
	assert.Equal(t, "new", u.Name)
}

// A binlog purged past the checkpoint loses changes: the invalidator flushes
// the whole cache in O(1) (a global generation bump), says so, and goes on
// from the server's current position.
func TestLostPositionFlushesTheWholeCache(t *testing.T) {
	mysqlSrv, _ := env.Faults(t)
	s := newStack(t, stackOptions{})
	ctx := context.Background()
	_, err := s.db.Exec("INSERT INTO users VALUES (1, 'a@x.io', 'v1', 1)")
	require.NoError(t, err)
	s.fence(t)
	_, _, err = s.fetchUser(ctx, 1)
	require.NoError(t, err)
	other, err := cache.Fetch(ctx, s.cache, s.prefix+"other", func(context.Context) (string, error) { return "cached", nil })
	require.NoError(t, err)
	require.Equal(t, "cached", other)
	s.stop()

	_, err = s.db.Exec("UPDATE users SET name = 'v2' WHERE id = 1") // never seen by the invalidator
	require.NoError(t, err)
	require.NoError(t, mysqlSrv.PurgeBinaryLogs(ctx))

	s.inv = s.newInvalidator(t)
	s.stop = s.run(t)
	assert.Equal(t, uint64(1), s.inv.Stats().Flushes)
	u, loaded, err := s.fetchUser(ctx, 1)
	require.NoError(t, err)
	assert.True(t, loaded)
	assert.Equal(t, "v2", u.Name, "the lost change is not served stale")
	loadedOther := false
	_, err = cache.Fetch(ctx, s.cache, s.prefix+"other", func(context.Context) (string, error) { loadedOther = true; return "reloaded", nil })
	require.NoError(t, err)
	assert.True(t, loadedOther, "every key of the cache reads as a miss")
}

// flakyTarget wraps the real cache and fails while failing is set, or blocks
// while gate is closed, to act out a Redis outage and a slow Redis.
type flakyTarget struct {
	invalidate.Target
	failing atomic.Bool
	fails   atomic.Int64
	gate    chan struct{} // nil: open
}

func (f *flakyTarget) Invalidate(ctx context.Context, keys ...string) error {
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if f.failing.Load() {
		f.fails.Add(1)
		return errors.New("injected: redis unavailable")
	}
	return f.Target.Invalidate(ctx, keys...)
}

// While Redis refuses invalidations the invalidator retries without limit,
// the checkpoint stays behind the unacknowledged transactions, and nothing
// is dropped once Redis answers again.
func TestRetriesUntilAcknowledgedAndCheckpointWaits(t *testing.T) {
	s := newStack(t, stackOptions{inv: &invalidate.Options{RetryMin: time.Millisecond, RetryMax: 20 * time.Millisecond, CheckpointInterval: time.Millisecond}})
	ctx := context.Background()
	s.stop()
	flaky := &flakyTarget{Target: s.cache}
	s.inv = invalidate.New(newStream(t, env), flaky, s.rdb, s.rules, &s.invOpts)
	s.stop = s.run(t)

	cp := binlog.NewRedisCheckpoints(s.rdb, s.prefix+"checkpoint")
	now, err := newStream(t, env).CurrentPosition(ctx)
	require.NoError(t, err)
	var before binlog.Position
	require.Eventually(t, func() bool {
		before, err = cp.Load(ctx)
		return err == nil && before == now
	}, 5*time.Second, time.Millisecond, "the checkpoint reaches the last transaction")
	flaky.failing.Store(true)
	for id := 1; id <= 50; id++ {
		_, err := s.db.Exec("INSERT INTO users VALUES (?, ?, 'n', 1)", id, "u"+strconv.Itoa(id)+"@x.io")
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return flaky.fails.Load() >= 5 }, 10*time.Second, time.Millisecond)
	during, err := cp.Load(ctx)
	require.NoError(t, err)
	assert.Equal(t, before, during, "the checkpoint must not pass unacknowledged transactions")

	flaky.failing.Store(false)
	s.fence(t)
	for id := uint64(1); id <= 50; id++ {
		assert.Positive(t, s.applied.count(userKey(s.prefix, id)), "id %d", id)
	}
	assert.GreaterOrEqual(t, s.inv.Stats().Retries, uint64(5))
	require.Eventually(t, func() bool {
		after, err := cp.Load(ctx)
		return err == nil && after != before
	}, 5*time.Second, time.Millisecond, "the checkpoint moves once Redis acknowledges")
}

// A slow Redis holds the binlog stream back (backpressure) instead of
// letting transactions pile up or be dropped: with a queue of 4, while
// invalidations are blocked no more than the queue and one batch are taken.
func TestBackpressureBlocksTheStream(t *testing.T) {
	s := newStack(t, stackOptions{})
	s.stop()
	gated := &flakyTarget{Target: s.cache, gate: make(chan struct{})}
	opts := s.invOpts
	opts.Queue = 4
	opts.MaxBatchKeys = 1
	opts.OnApplied = func(a invalidate.Applied) { s.applied.record(a) }
	s.invOpts = opts
	s.inv = invalidate.New(newStream(t, env), gated, s.rdb, s.rules, &s.invOpts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.inv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	require.Eventually(t, func() bool { return s.inv.Stats().Leader }, 15*time.Second, 5*time.Millisecond)

	for id := 1; id <= 40; id++ {
		_, err := s.db.Exec("INSERT INTO users VALUES (?, ?, 'n', 1)", id, "u"+strconv.Itoa(id)+"@x.io")
		require.NoError(t, err)
	}
	time.Sleep(300 * time.Millisecond) // give the stream every chance to run ahead
	assert.Zero(t, s.inv.Stats().Transactions, "nothing is acknowledged while Redis is blocked")
	assert.LessOrEqual(t, s.inv.Stats().Pending, 6, "the stream waits once the queue is full")
	close(gated.gate)
	s.fence(t)
	for id := uint64(1); id <= 40; id++ {
		assert.Positive(t, s.applied.count(userKey(s.prefix, id)), "id %d", id)
	}
}

// A row value a template cannot print (here a text column under a time
// format) neither stops the invalidator nor is skipped: the whole table's
// namespaces are invalidated instead.
func TestUnprintableValueInvalidatesTheTable(t *testing.T) {
	s := newStack(t, stackOptions{rules: func(db, prefix string) []invalidate.Rule {
		return append(usersRules(db, prefix), invalidate.Rule{Schema: db, Table: "users", Keys: []string{prefix + "bad:{email|unix}"}})
	}})
	ctx := context.Background()
	_, err := s.db.Exec("INSERT INTO users VALUES (1, 'a@x.io', 'v1', 1)")
	require.NoError(t, err)
	s.fence(t)
	_, _, err = s.fetchUser(ctx, 1)
	require.NoError(t, err)
	_, loaded, err := s.fetchUser(ctx, 1)
	require.NoError(t, err)
	require.False(t, loaded)

	_, err = s.db.Exec("UPDATE users SET name = 'v2' WHERE id = 1")
	require.NoError(t, err)
	s.fence(t)
	u, loaded, err := s.fetchUser(ctx, 1)
	require.NoError(t, err)
	assert.True(t, loaded)
	assert.Equal(t, "v2", u.Name)
	assert.True(t, s.inv.Stats().Leader, "the invalidator is still running")
}

// R8, foreign keys: ON DELETE CASCADE removes child rows inside InnoDB and
// the binary log holds no row for them. Check learns the foreign key, and a
// delete of the parent invalidates the watched child table as a whole.
func TestR8ForeignKeyCascade(t *testing.T) {
	for _, learn := range []bool{false, true} {
		t.Run(map[bool]string{false: "unknown foreign key leaves the child stale", true: "learnt foreign key invalidates the child"}[learn], func(t *testing.T) {
			s := newStack(t, stackOptions{
				tables: []string{
					"CREATE TABLE teams (id BIGINT PRIMARY KEY)",
					"CREATE TABLE members (id BIGINT PRIMARY KEY, team_id BIGINT NOT NULL, name VARCHAR(50), FOREIGN KEY (team_id) REFERENCES teams (id) ON DELETE CASCADE)",
				},
				rules: func(db, prefix string) []invalidate.Rule {
					return []invalidate.Rule{
						{Schema: db, Table: "members", Keys: []string{prefix + "member:{id}"}},
						{Schema: db, Table: "fence", Keys: []string{prefix + "fence:{id}"}},
					}
				},
				noCheck: !learn,
			})
			db := s.db
			for _, q := range []string{"INSERT INTO teams VALUES (1)", "INSERT INTO members VALUES (10, 1, 'm')"} {
				_, err := db.Exec(q)
				require.NoError(t, err, q)
			}
			s.fence(t)
			ctx := context.Background()
			loads := 0
			member := func() (string, error) {
				return cache.Fetch(ctx, s.cache, s.prefix+"member:10", func(ctx context.Context) (string, error) {
					loads++
					var n string
					err := db.QueryRowContext(ctx, "SELECT name FROM members WHERE id = 10").Scan(&n)
					if errors.Is(err, sql.ErrNoRows) {
						return "", cache.ErrNotFound
					}
					return n, err
				})
			}
			v, err := member()
			require.NoError(t, err)
			require.Equal(t, "m", v)

			_, err = db.Exec("DELETE FROM teams WHERE id = 1") // cascades to members 10
			require.NoError(t, err)
			s.fence(t)
			v, err = member()
			if !learn {
				require.NoError(t, err)
				assert.Equal(t, "m", v, "the cascaded delete is not in the binlog: stale (R8 reproduced)")
				return
			}
			assert.ErrorIs(t, err, cache.ErrNotFound)
			assert.Equal(t, 2, loads, "the cached member was invalidated")
		})
	}
}

// R4: a reader fills from a lagging replica after the invalidation. Here
// the replica is a snapshot taken before the write, so it still returns
// version 1. A rule with a Version column leaves a versioned tombstone
// that refuses any fill older than the change, while newer fills go on.
func TestR4LaggingReplicaFillRefusedByVersion(t *testing.T) {
	for _, versioned := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain invalidation lets the lagging fill land", true: "versioned tombstone refuses it"}[versioned], func(t *testing.T) {
			s := newStack(t, stackOptions{rules: func(db, prefix string) []invalidate.Rule {
				rules := usersRules(db, prefix)
				if versioned {
					rules[0].Version = "version"
				}
				return rules
			}})
			ctx := context.Background()
			_, err := s.db.Exec("INSERT INTO users VALUES (4, 'd@x.io', 'v1', 1)")
			require.NoError(t, err)
			s.fence(t)

			u := s.fillFromOldSnapshot(t, 4) // the lagging replica
			require.Equal(t, "v1", u.Name, "the replica still has version 1")

			u, loaded, err := s.fetchUser(ctx, 4)
			require.NoError(t, err)
			if !versioned {
				assert.False(t, loaded)
				assert.Equal(t, "v1", u.Name, "the lagging fill landed: R4 reproduced")
				return
			}
			assert.True(t, loaded, "the lagging fill was refused")
			assert.Equal(t, "v2", u.Name)
			u, loaded, err = s.fetchUser(ctx, 4)
			require.NoError(t, err)
			assert.False(t, loaded, "a fill at the tombstone's version is accepted")
			assert.Equal(t, "v2", u.Name)
		})
	}
}

// A parent row whose keys cannot be built (here: a partial image from a
// session that logs binlog_row_image=MINIMAL, without the name its key
// template needs) falls back to invalidating the parent table; the cascade
// to the child must still happen.
func TestR8ForeignKeyCascadeFromUnprintableParent(t *testing.T) {
	s := newStack(t, stackOptions{
		tables: []string{
			"CREATE TABLE teams (id BIGINT PRIMARY KEY, name VARCHAR(50) NOT NULL)",
			"CREATE TABLE members (id BIGINT PRIMARY KEY, team_id BIGINT NOT NULL, name VARCHAR(50), FOREIGN KEY (team_id) REFERENCES teams (id) ON DELETE CASCADE)",
		},
		rules: func(db, prefix string) []invalidate.Rule {
			return []invalidate.Rule{
				{Schema: db, Table: "teams", Keys: []string{"team-" + prefix + "{name}"}}, // a namespace of its own
				{Schema: db, Table: "members", Keys: []string{prefix + "member:{id}"}},
				{Schema: db, Table: "fence", Keys: []string{prefix + "fence:{id}"}},
			}
		},
	})
	ctx := context.Background()
	for _, q := range []string{"INSERT INTO teams VALUES (1, 'blue')", "INSERT INTO members VALUES (10, 1, 'm')"} {
		_, err := s.db.Exec(q)
		require.NoError(t, err, q)
	}
	s.fence(t)
	loads := 0
	member := func() (string, error) {
		return cache.Fetch(ctx, s.cache, s.prefix+"member:10", func(ctx context.Context) (string, error) {
			loads++
			var n string
			err := s.db.QueryRowContext(ctx, "SELECT name FROM members WHERE id = 10").Scan(&n)
			if errors.Is(err, sql.ErrNoRows) {
				return "", cache.ErrNotFound
			}
			return n, err
		})
	}
	v, err := member()
	require.NoError(t, err)
	require.Equal(t, "m", v)

	conn, err := s.db.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.ExecContext(ctx, "SET SESSION binlog_row_image = 'MINIMAL'")
	require.NoError(t, err)
	_, err = conn.ExecContext(ctx, "DELETE FROM teams WHERE id = 1") // its image holds the id only; cascades to member 10
	require.NoError(t, err)
	s.fence(t)
	_, err = member()
	assert.ErrorIs(t, err, cache.ErrNotFound, "the cascaded delete of member 10 was invalidated")
	assert.Equal(t, 2, loads)
}
