package cache_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/cache"
	"github.com/cacheaside/cacheaside/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	testenv.Main(m, &env, testenv.Children{"stampede": stampedeChild})
}

// user is the row type the tests cache.
type user struct {
	ID   int64  `json:"id"`
	Name string `json:"name"`
}

// fixture is one test's database (a users table holding ann and bob), Redis
// client and key namespace.
type fixture struct {
	t     testing.TB
	db    *sql.DB
	rdb   *redis.Client
	base  string       // unique start of this test's keys and namespaces
	loads atomic.Int64 // calls of loaders made by loader
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	db, _ := env.NewDatabase(t)
	_, err := db.Exec("CREATE TABLE users (id BIGINT PRIMARY KEY, name VARCHAR(64) NOT NULL)")
	require.NoError(t, err)
	_, err = db.Exec("INSERT INTO users VALUES (1, 'ann'), (2, 'bob')")
	require.NoError(t, err)
	f := &fixture{t: t, db: db, rdb: env.RedisClient(t), base: uniqueBase(t)}
	return f
}

// uniqueBase returns a key start that only this test uses, without a ':' so
// that a test can make several namespaces, and deletes its keys at the end.
func uniqueBase(t testing.TB) string {
	base := uniqueBaseNoCleanup()
	t.Cleanup(func() { env.DeleteKeys(base) })
	return base
}

func uniqueBaseNoCleanup() string {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	return "k" + hex.EncodeToString(b)
}

// key returns the cache key of user id in namespace ns of this test.
func (f *fixture) key(ns string, id int64) string {
	return f.base + ns + ":" + strconv.FormatInt(id, 10)
}

// cache returns a Cache on the fixture's Redis (a new client per call, like
// another process would have), closed at the end of the test.
func (f *fixture) cache(opts *cache.Options) *cache.Cache {
	f.t.Helper()
	return f.cacheOn(env.RedisClient(f.t), opts)
}

// cacheOn is cache on a given client (one with hooks, say).
func (f *fixture) cacheOn(rdb redis.UniversalClient, opts *cache.Options) *cache.Cache {
	f.t.Helper()
	o := cache.Options{}
	if opts != nil {
		o = *opts
	}
	if o.Prefix == "" {
		o.Prefix = f.base + "-gen:"
	}
	return mustNew(f.t, rdb, &o)
}

// mustNew is cache.New, closed at the end of the test.
func mustNew(t testing.TB, rdb redis.UniversalClient, o *cache.Options) *cache.Cache {
	t.Helper()
	c, err := cache.New(rdb, o)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// scriptHook runs before and after (either may be nil) around the first
// script request (EVALSHA, alone or leading a pipeline) that its client
// sends once armed: the point between a read and the lease it leads to.
type scriptHook struct {
	armed         atomic.Bool
	before, after func()
}

func (h *scriptHook) around(name string, next func() error) error {
	if name != "evalsha" || !h.armed.CompareAndSwap(true, false) {
		return next()
	}
	if h.before != nil {
		h.before()
	}
	err := next()
	if h.after != nil {
		h.after()
	}
	return err
}

func (h *scriptHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *scriptHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		return h.around(cmd.Name(), func() error { return next(ctx, cmd) })
	}
}
func (h *scriptHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) == 0 {
			return next(ctx, cmds)
		}
		return h.around(cmds[0].Name(), func() error { return next(ctx, cmds) })
	}
}

// hooked returns a Redis client with h added.
func hooked(t testing.TB, h redis.Hook) *redis.Client {
	rdb := env.RedisClient(t)
	rdb.AddHook(h)
	return rdb
}

// loader reads user id from MariaDB, counting its calls.
func (f *fixture) loader(id int64) cache.LoaderFunc[user] {
	return func(ctx context.Context) (user, error) {
		f.loads.Add(1)
		return f.query(ctx, id)
	}
}

// goFetch runs Fetch of key on c with loader(id) in a goroutine that
// asserts it succeeds, and returns a channel that yields its user when it
// returns.
func (f *fixture) goFetch(ctx context.Context, c *cache.Cache, key string, id int64) <-chan user {
	done := make(chan user, 1)
	go func() {
		u, err := cache.Fetch(ctx, c, key, f.loader(id))
		assert.NoError(f.t, err)
		done <- u
	}()
	return done
}

func (f *fixture) query(ctx context.Context, id int64) (user, error) {
	u := user{}
	err := f.db.QueryRowContext(ctx, "SELECT id, name FROM users WHERE id = ?", id).Scan(&u.ID, &u.Name)
	if errors.Is(err, sql.ErrNoRows) {
		return u, cache.ErrNotFound
	}
	return u, err
}

// rename commits a new name for user id.
func (f *fixture) rename(id int64, name string) {
	f.t.Helper()
	_, err := f.db.Exec("UPDATE users SET name = ? WHERE id = ?", name, id)
	require.NoError(f.t, err)
}

// stored returns the bytes in key, nil when absent.
func (f *fixture) stored(key string) []byte {
	f.t.Helper()
	b, err := f.rdb.Get(context.Background(), key).Bytes()
	if err == redis.Nil {
		return nil
	}
	require.NoError(f.t, err)
	return b
}

// kind names what key holds: absent, value, not-found, lease, tombstone,
// refresh or corrupt.
func (f *fixture) kind(key string) string {
	b := f.stored(key)
	if b == nil {
		return "absent"
	}
	return cache.KindOf(b)
}

// mustNotLoad is a loader that fails the test: the value must come from Redis.
func mustNotLoad(t testing.TB) cache.LoaderFunc[user] {
	return func(context.Context) (user, error) {
		t.Error("loader called; the value should have come from Redis")
		return user{}, errors.New("unexpected load")
	}
}

// counter counts the round trips a client attempts (a pipeline counts
// once), leaving out connection set-up (HELLO, CLIENT SETINFO) and health
// checks (a Ring's heartbeat PING).
type counter struct{ n atomic.Int64 }

func setup(cmd redis.Cmder) bool {
	switch cmd.Name() {
	case "hello", "client", "ping":
		return true
	}
	return false
}

func (c *counter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *counter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !setup(cmd) {
			c.n.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (c *counter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && !setup(cmds[0]) {
			c.n.Add(1)
		}
		return next(ctx, cmds)
	}
}

// counted returns a client whose commands are counted, from zero after its
// connection set-up.
func counted(t testing.TB) (*redis.Client, *counter) {
	rdb := env.RedisClient(t)
	n := &counter{}
	rdb.AddHook(n)
	require.NoError(t, rdb.Ping(context.Background()).Err())
	n.n.Store(0)
	return rdb, n
}
