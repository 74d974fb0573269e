package invalidate_test

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/binlog"
	"github.com/cacheaside/cacheaside/cache"
	"github.com/cacheaside/cacheaside/internal/testenv"
	"github.com/cacheaside/cacheaside/invalidate"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	testenv.Main(m, &env, testenv.Children{
		"invalidator": childInvalidator,
		"writer-dies": childWriterDies,
	})
}

// newStream returns a binlog stream on the harness server with a server id
// of its own, so several streams can run at once.
func newStream(tb testing.TB, e *testenv.Env) *binlog.Stream {
	tb.Helper()
	s, err := openStream(e)
	require.NoError(tb, err)
	return s
}

// openStream is newStream for a child process, which has no testing.TB. A
// child given MYSQL_ADDR reaches MariaDB there (through a proxy the parent
// can cut).
func openStream(e *testenv.Env) (*binlog.Stream, error) {
	cfg := e.MySQLConfig("")
	if addr := os.Getenv("MYSQL_ADDR"); addr != "" {
		cfg.Addr = addr
	}
	return binlog.New(binlog.Config{
		Addr: cfg.Addr, User: cfg.User, Password: cfg.Passwd,
		ServerID: 1000 + rand.Uint32N(1<<30),
	}, &binlog.Options{Logger: debugLogger()})
}

// invalidatorOptions sets the leader lock and checkpoint of a test's
// invalidators under its key prefix, so they elect among themselves only.
func invalidatorOptions(o invalidate.Options, rdb redis.UniversalClient, prefix string) *invalidate.Options {
	o.LeaderKey = prefix + "leader"
	o.Checkpoints = binlog.NewRedisCheckpoints(rdb, prefix+"checkpoint")
	if o.LeaderTTL == 0 {
		o.LeaderTTL = time.Second
	}
	o.Logger = debugLogger()
	return &o
}

// stack is a cache, an invalidator and a record of what it applied, on a
// database and key prefix of the test's own.
type stack struct {
	db      *sql.DB
	dbName  string
	prefix  string
	rdb     *redis.Client
	cache   *cache.Cache
	inv     *invalidate.Invalidator
	applied *appliedLog
	rules   *invalidate.Rules
	invOpts invalidate.Options
	stop    func()

	mu   sync.Mutex
	invs []*invalidate.Invalidator // every invalidator of this process
}

// flushes sums the whole-cache flushes of the stack's invalidators.
func (s *stack) flushes() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n uint64
	for _, inv := range s.invs {
		n += inv.Stats().Flushes
	}
	return n
}

type stackOptions struct {
	cache *cache.Options
	inv   *invalidate.Options
	rules func(db, prefix string) []invalidate.Rule
	// tables replaces the users table (the fence table is always made).
	tables []string
	// noCheck skips Rules.Check, and so what it learns (foreign keys).
	noCheck bool
	// external: no invalidator in this process (children run them).
	external bool
}

func usersRules(db, prefix string) []invalidate.Rule {
	return []invalidate.Rule{
		{Schema: db, Table: "users", Keys: []string{prefix + "user:{id}", prefix + "user:email:{email|lower}"}},
		{Schema: db, Table: "fence", Keys: []string{prefix + "fence:{id}"}},
	}
}

const usersDDL = `CREATE TABLE users (id BIGINT UNSIGNED PRIMARY KEY, email VARCHAR(100) NOT NULL, name VARCHAR(100) NOT NULL, version BIGINT NOT NULL DEFAULT 0)`

// newStack creates the users and fence tables and starts an invalidator that
// runs until the test ends.
func newStack(t testing.TB, o stackOptions) *stack {
	t.Helper()
	db, name := env.NewDatabase(t)
	tables := o.tables
	if tables == nil {
		tables = []string{usersDDL}
	}
	for _, q := range append(tables, "CREATE TABLE fence (id BIGINT PRIMARY KEY)") {
		_, err := db.Exec(q)
		require.NoError(t, err, q)
	}
	s := &stack{db: db, dbName: name, prefix: env.Prefix(t), rdb: env.RedisClient(t), applied: newAppliedLog()}
	co := cache.Options{}
	if o.cache != nil {
		co = *o.cache
	}
	co.Prefix = s.prefix
	var err error
	s.cache, err = cache.New(s.rdb, &co)
	require.NoError(t, err)
	t.Cleanup(func() { s.cache.Close() })
	rulesFor := usersRules
	if o.rules != nil {
		rulesFor = o.rules
	}
	rules, err := invalidate.NewRules(rulesFor(name, s.prefix)...)
	require.NoError(t, err)
	if !o.noCheck {
		require.NoError(t, rules.Check(context.Background(), db))
	}
	io := invalidate.Options{}
	if o.inv != nil {
		io = *o.inv
	}
	io = *invalidatorOptions(io, s.rdb, s.prefix)
	io.OnApplied = s.applied.record
	if hook := io.OnApplied; o.inv != nil && o.inv.OnApplied != nil {
		extra := o.inv.OnApplied
		io.OnApplied = func(a invalidate.Applied) { hook(a); extra(a) }
	}
	s.rules, s.invOpts = rules, io
	if !o.external {
		s.inv = s.newInvalidator(t)
		s.stop = s.run(t)
	}
	return s
}

// newInvalidator returns another invalidator of the stack, sharing its
// leader lock and checkpoint.
func (s *stack) newInvalidator(t testing.TB) *invalidate.Invalidator {
	inv := invalidate.New(newStream(t, env), s.cache, s.rdb, s.rules, &s.invOpts)
	s.mu.Lock()
	s.invs = append(s.invs, inv)
	s.mu.Unlock()
	return inv
}

// run starts the invalidator, waits until it leads and streams, and returns
// a func that stops it (also called when the test ends).
func (s *stack) run(t testing.TB) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.inv.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			require.NoError(t, <-done)
		})
	}
	t.Cleanup(stop)
	require.Eventually(t, func() bool { return s.inv.Stats().Leader }, 15*time.Second, 5*time.Millisecond)
	s.fence(t) // streaming has started
	return stop
}

// fence commits a marker row and waits until the invalidator has applied
// it: every transaction committed before has been applied too. A marker
// committed before a (re)starting stream settled on its start position is
// never streamed, so a new one follows every half second.
func (s *stack) fence(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	var keys []string
	for time.Now().Before(deadline) {
		id := rand.Int64()
		key := s.prefix + "fence:" + strconv.FormatInt(id, 10)
		keys = append(keys, key)
		if s.inv == nil {
			// The invalidator runs elsewhere: watch a marker value in Redis go.
			require.NoError(t, s.rdb.Set(ctx, key, "marker", time.Minute).Err())
		}
		_, err := s.db.Exec("INSERT INTO fence VALUES (?)", id)
		require.NoError(t, err)
		for retry := time.Now().Add(500 * time.Millisecond); time.Now().Before(retry); {
			for _, k := range keys {
				if s.applied.count(k) > 0 {
					return
				}
				if s.inv == nil {
					v, err := s.rdb.Get(ctx, k).Result()
					if errors.Is(err, redis.Nil) || err == nil && v != "marker" {
						return
					}
				}
			}
			select {
			case <-s.applied.tick:
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
	t.Fatalf("no fence row was invalidated within 30s")
}

// appliedLog records every key the invalidator reported acknowledged.
type appliedLog struct {
	mu   sync.Mutex
	keys map[string]int
	tick chan struct{}
}

func newAppliedLog() *appliedLog {
	return &appliedLog{keys: map[string]int{}, tick: make(chan struct{}, 1)}
}

func (a *appliedLog) record(ap invalidate.Applied) {
	a.mu.Lock()
	for _, k := range ap.Keys {
		a.keys[k]++
	}
	a.mu.Unlock()
	select {
	case a.tick <- struct{}{}:
	default:
	}
}

func (a *appliedLog) count(key string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.keys[key]
}

type user struct {
	ID      uint64
	Email   string
	Name    string
	Version int64
}

// rowReader is a *sql.DB, or a *sql.Conn holding an old snapshot.
type rowReader interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// loadUser reads a user from MariaDB, the source of truth.
func loadUser(ctx context.Context, db rowReader, id uint64) (user, error) {
	u := user{ID: id}
	err := db.QueryRowContext(ctx, "SELECT email, name, version FROM users WHERE id = ?", id).Scan(&u.Email, &u.Name, &u.Version)
	if err == sql.ErrNoRows {
		return user{}, cache.ErrNotFound
	}
	return u, err
}

func userKey(prefix string, id uint64) string { return prefix + "user:" + strconv.FormatUint(id, 10) }

// fetchUser reads through the cache and reports whether the loader ran.
func (s *stack) fetchUser(ctx context.Context, id uint64) (u user, loaded bool, err error) {
	u, err = cache.Fetch(ctx, s.cache, userKey(s.prefix, id), func(ctx context.Context) (user, error) {
		loaded = true
		return loadUser(ctx, s.db, id)
	})
	return u, loaded, err
}

// debugLogger logs to stderr when INVALIDATE_DEBUG is set, else nowhere.
func debugLogger() *slog.Logger {
	if os.Getenv("INVALIDATE_DEBUG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// CacheVersion makes user a cache.Versioner, for rules with a Version column.
func (u user) CacheVersion() int64 { return u.Version }

// fillFromOldSnapshot acts out a reader that still sees user id at version
// 1 after its update to version 2 was committed and invalidated: a lagging
// replica, or a commit not yet visible. It opens a snapshot (which sees
// version 1), commits the update, waits for its invalidation, and then
// reads through the cache with the snapshot as the source. It returns what
// that read got.
func (s *stack) fillFromOldSnapshot(t *testing.T, id uint64) user {
	t.Helper()
	ctx := context.Background()
	old, err := s.db.Conn(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { old.Close() })
	_, err = old.ExecContext(ctx, "START TRANSACTION WITH CONSISTENT SNAPSHOT")
	require.NoError(t, err)
	seen, err := loadUser(ctx, old, id)
	require.NoError(t, err)
	require.Equal(t, int64(1), seen.Version)

	key := userKey(s.prefix, id)
	before := s.applied.count(key)
	_, err = s.db.Exec("UPDATE users SET name = 'v2', version = 2 WHERE id = ?", id)
	require.NoError(t, err)
	for s.applied.count(key) == before {
		s.fence(t)
	}
	u, err := cache.Fetch(ctx, s.cache, key, func(ctx context.Context) (user, error) { return loadUser(ctx, old, id) })
	require.NoError(t, err)
	_, _ = old.ExecContext(ctx, "COMMIT")
	return u
}
