// Command quickstart wires a repository to a read-through cache, a Bloom
// filter of existing users and the binlog invalidator, then acts out what
// each protection is for and prints what it measured:
//
//	go run ./examples/quickstart
//	go run ./examples/quickstart -mysql 'root@tcp(127.0.0.1:3306)/' -redis 127.0.0.1:6379
//
// With no servers named (flags, or CACHEASIDE_MYSQL_DSN and
// CACHEASIDE_REDIS_ADDR), it starts a throwaway MariaDB with the binlog on
// and a Redis on loopback ports. A MariaDB of your own needs log_bin,
// binlog_format=ROW and binlog_row_image=FULL, and a user with REPLICATION
// SLAVE and REPLICATION CLIENT.
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"

	"github.com/cacheaside/cacheaside/binlog"
	"github.com/cacheaside/cacheaside/bloom"
	"github.com/cacheaside/cacheaside/cache"
	"github.com/cacheaside/cacheaside/internal/testenv"
	"github.com/cacheaside/cacheaside/invalidate"
)

func main() {
	dsn := flag.String("mysql", os.Getenv(testenv.EnvMySQLDSN), "go-sql-driver DSN of a MariaDB/MySQL with the binlog on; empty starts a throwaway one")
	addr := flag.String("redis", os.Getenv(testenv.EnvRedisAddr), "Redis host:port; empty starts a throwaway one")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Stdout, *dsn, *addr); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

// User is a row of shop.users.
type User struct {
	ID    int64
	Email string
	Name  string
}

// Users is a repository whose reads go through the cache.
type Users struct {
	db    *sql.DB
	cache *cache.Cache
	loads atomic.Int64  // reads that reached MariaDB, for the summary
	slow  time.Duration // added to every load, to act out a slow query
}

// Get reads a user through the cache; on a miss it loads from MariaDB.
func (r *Users) Get(ctx context.Context, id int64) (User, error) {
	return cache.Fetch(ctx, r.cache, userKey(id), func(ctx context.Context) (User, error) {
		return r.load(ctx, id)
	})
}

func (r *Users) load(ctx context.Context, id int64) (User, error) {
	r.loads.Add(1)
	u := User{ID: id}
	err := r.db.QueryRowContext(ctx, "SELECT email, name FROM shop.users WHERE id = ?", id).Scan(&u.Email, &u.Name)
	if errors.Is(err, sql.ErrNoRows) {
		return User{}, cache.ErrNotFound
	}
	time.Sleep(r.slow)
	return u, err
}

// Rename updates a user through the cache: delete, write, delete again.
func (r *Users) Rename(ctx context.Context, id int64, name string) error {
	return r.cache.Write(ctx, []string{userKey(id)}, func(ctx context.Context) error {
		_, err := r.db.ExecContext(ctx, "UPDATE shop.users SET name = ? WHERE id = ?", name, id)
		return err
	})
}

func userKey(id int64) string { return fmt.Sprintf("quickstart:user:%d", id) }

// demo is what the steps share.
type demo struct {
	out     io.Writer
	db      *sql.DB
	users   *Users
	cache   *cache.Cache
	applied chan invalidate.Applied
	redis   *testenv.Redis // the throwaway Redis, nil for one of yours
	summary [][2]string
}

func run(ctx context.Context, out io.Writer, dsn, addr string) error {
	var rs *testenv.Redis
	if dsn == "" || addr == "" {
		fmt.Fprintln(out, "starting a throwaway MariaDB (binlog on) and Redis on loopback ports ...")
		env, err := testenv.Start(nil)
		if err != nil {
			return err
		}
		defer env.Close()
		dsn, addr, rs = env.DSN(""), env.RedisAddr(), env.Redis
	}
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return err
	}
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	for _, q := range []string{
		"CREATE DATABASE IF NOT EXISTS shop",
		"CREATE TABLE IF NOT EXISTS shop.users (id BIGINT PRIMARY KEY, email VARCHAR(100), name VARCHAR(100))",
		"REPLACE INTO shop.users VALUES (1, 'ada@example.com', 'Ada'), (2, 'bob@example.com', 'Bob'), (3, 'cy@example.com', 'Cy')",
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return err
		}
	}

	// ContextTimeoutEnabled lets the cache give up on a hung Redis in time
	// to answer from MariaDB; the timeouts bound the calls that carry none.
	rdb := redis.NewClient(&redis.Options{
		Addr:                  addr,
		ContextTimeoutEnabled: true,
		DialTimeout:           100 * time.Millisecond,
		ReadTimeout:           100 * time.Millisecond,
		WriteTimeout:          100 * time.Millisecond,
		PoolTimeout:           100 * time.Millisecond,
	})
	defer rdb.Close()
	const prefix = "quickstart:" // every key of this program starts so
	defer deleteKeys(rdb, prefix)

	// The filter knows every user that exists: warmed by a scan now, fed by
	// the invalidator on every insert.
	filter := bloom.New(rdb, prefix+"bloom:users", &bloom.Options{ExpectedItems: 100_000, LookupTimeout: 250 * time.Millisecond})
	c, err := cache.New(rdb, &cache.Options{
		Prefix: prefix, Filter: filter, TombstoneTTL: 50 * time.Millisecond,
		RedisTimeout: 250 * time.Millisecond, // no read waits on Redis longer
	})
	if err != nil {
		return err
	}
	defer c.Close()
	users := &Users{db: db, cache: c}

	// The invalidator: binlog row changes of shop.users -> cache keys.
	rules, err := invalidate.NewRules(invalidate.Rule{Schema: "shop", Table: "users", Keys: []string{"quickstart:user:{id}"}})
	if err != nil {
		return err
	}
	stream, err := binlog.New(binlog.Config{Addr: cfg.Addr, User: cfg.User, Password: cfg.Passwd, ServerID: 100 + rand.Uint32N(1<<20)}, nil)
	if err != nil {
		return err
	}
	d := &demo{out: out, db: db, users: users, cache: c, applied: make(chan invalidate.Applied, 64), redis: rs}
	inv := invalidate.New(stream, c, rdb, rules, &invalidate.Options{
		Filter:      filter,
		LeaderKey:   prefix + "leader",
		Checkpoints: binlog.NewRedisCheckpoints(rdb, prefix+"checkpoint"),
		LeaderTTL:   time.Second,
		OnApplied: func(a invalidate.Applied) {
			select {
			case d.applied <- a:
			default:
			}
		},
	})
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	invDone := make(chan error, 1)
	go func() { invDone <- inv.Run(ctx) }()
	for !inv.Stats().Leader {
		select {
		case err := <-invDone:
			return err
		case <-time.After(10 * time.Millisecond):
		}
	}
	if err := filter.Warm(ctx, bloom.Scan(ctx, db, "quickstart:user:", "SELECT id FROM shop.users")); err != nil {
		return err
	}

	for _, step := range []func(context.Context) error{
		d.readThrough, d.penetration, d.stampede, d.plainUpdate, d.staleFill, d.redisDown,
	} {
		if err := step(ctx); err != nil {
			return err
		}
	}
	fmt.Fprintln(out, "\nwhat each protection did")
	for _, row := range d.summary {
		fmt.Fprintf(out, "  %-34s %s\n", row[0], row[1])
	}
	cancel()
	return <-invDone
}

// step prints a step's title.
func (d *demo) step(title string) { fmt.Fprintf(d.out, "\n%s\n", title) }

// record adds a line to the summary and prints it.
func (d *demo) record(protection, result string, args ...any) {
	r := fmt.Sprintf(result, args...)
	d.summary = append(d.summary, [2]string{protection, r})
	fmt.Fprintf(d.out, "  -> %s\n", r)
}

// get reads a user and says where the answer came from.
func (d *demo) get(ctx context.Context, id int64) (User, string, error) {
	before := d.users.loads.Load()
	u, err := d.users.Get(ctx, id)
	from := "from the cache"
	if d.users.loads.Load() != before {
		from = "from MariaDB"
	}
	return u, from, err
}

func (d *demo) readThrough(ctx context.Context) error {
	d.step("1. read-through: the first read loads from MariaDB, the next is a hit")
	var took [2]time.Duration
	var froms [2]string
	for i := range took {
		start := time.Now()
		u, from, err := d.get(ctx, 1)
		if err != nil {
			return err
		}
		took[i], froms[i] = time.Since(start), from
		fmt.Fprintf(d.out, "  %s %q %s in %v\n", userKey(1), u.Name, from, ms(took[i]))
	}
	d.record("read-through", "first read %s (%v), second %s (%v)", froms[0], ms(took[0]), froms[1], ms(took[1]))
	return nil
}

func (d *demo) stampede(ctx context.Context) error {
	const n = 1000
	d.step(fmt.Sprintf("3. stampede: %d goroutines read a cold key whose load takes 50 ms", n))
	d.users.slow = 50 * time.Millisecond
	defer func() { d.users.slow = 0 }()
	before := d.users.loads.Load()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			if _, err := d.users.Get(ctx, 3); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	d.record("stampede (1,000 goroutines)", "%d load(s) from MariaDB; all served in %v",
		d.users.loads.Load()-before, ms(time.Since(start)))
	return nil
}

func (d *demo) penetration(ctx context.Context) error {
	const n = 1000
	d.step(fmt.Sprintf("2. penetration: %d reads of ids that never existed", n))
	before := d.users.loads.Load()
	for id := int64(1_000_000); id < 1_000_000+n; id++ {
		if _, err := d.users.Get(ctx, id); !errors.Is(err, cache.ErrNotFound) {
			return fmt.Errorf("user %d: got %v, want not found", id, err)
		}
	}
	d.record("penetration (1,000 absent ids)", "%d load(s) from MariaDB; %d answered by the Bloom filter",
		d.users.loads.Load()-before, d.cache.Stats().FilterRejects)
	return nil
}

func (d *demo) plainUpdate(ctx context.Context) error {
	d.step("4. an UPDATE by plain SQL, bypassing the library, reaches the cache through the binlog")
	if _, _, err := d.get(ctx, 1); err != nil { // cached
		return err
	}
	d.drain()
	if _, err := d.db.ExecContext(ctx, "UPDATE shop.users SET name = 'Ada Lovelace' WHERE id = 1"); err != nil {
		return err
	}
	committed := time.Now()
	a, err := d.waitFor(ctx, userKey(1))
	if err != nil {
		return err
	}
	u, from, err := d.get(ctx, 1)
	if err != nil {
		return err
	}
	fmt.Fprintf(d.out, "  %s %q %s\n", userKey(1), u.Name, from)
	d.record("plain-SQL UPDATE", "invalidated %v after COMMIT returned; next read %q %s",
		ms(max(0, a.AckedAt.Sub(committed))), u.Name, from)
	return nil
}

func (d *demo) staleFill(ctx context.Context) error {
	d.step("5. a slow reader loads the row, an UPDATE commits meanwhile; the reader's old copy must not be cached")
	d.drain()
	loaded, release := make(chan struct{}), make(chan struct{})
	refused := d.cache.Stats().FillsRefused
	slow := make(chan User, 1)
	go func() {
		u, _ := cache.Fetch(ctx, d.cache, userKey(2), func(ctx context.Context) (User, error) {
			u, err := d.users.load(ctx, 2)
			close(loaded)
			<-release // the UPDATE commits and is invalidated while we hold the old row
			return u, err
		})
		slow <- u
	}()
	<-loaded
	if _, err := d.db.ExecContext(ctx, "UPDATE shop.users SET name = 'Bob Moog' WHERE id = 2"); err != nil {
		return err
	}
	if _, err := d.waitFor(ctx, userKey(2)); err != nil {
		return err
	}
	close(release)
	old := <-slow
	u, from, err := d.get(ctx, 2)
	if err != nil {
		return err
	}
	d.record("slow reader's stale fill", "%d refused (it read %q); next read %q %s",
		d.cache.Stats().FillsRefused-refused, old.Name, u.Name, from)
	return nil
}

func (d *demo) redisDown(ctx context.Context) error {
	if d.redis == nil {
		d.summary = append(d.summary, [2]string{"Redis killed", "not tried: the quickstart only kills the Redis it started"})
		return nil
	}
	const n = 50
	d.step(fmt.Sprintf("6. Redis is killed; %d reads are still answered, from MariaDB", n))
	redis.SetLogger(quiet{}) // go-redis would log every refused dial
	if err := d.redis.Kill(); err != nil {
		return err
	}
	degraded := d.cache.Stats().Degraded
	var slowest time.Duration
	for range n {
		start := time.Now()
		if _, _, err := d.get(ctx, 1); err != nil {
			return fmt.Errorf("read with Redis down: %w", err)
		}
		slowest = max(slowest, time.Since(start))
	}
	st := d.cache.Stats()
	d.record("Redis killed", "%d of %d reads answered from MariaDB, slowest %v; breaker open: %v",
		st.Degraded-degraded, n, ms(slowest), st.BreakerOpen)
	return d.redis.Start()
}

// drain forgets invalidations already reported.
func (d *demo) drain() {
	for {
		select {
		case <-d.applied:
		default:
			return
		}
	}
}

// waitFor waits until the invalidator reports key invalidated.
func (d *demo) waitFor(ctx context.Context, key string) (invalidate.Applied, error) {
	timeout := time.After(10 * time.Second)
	for {
		select {
		case a := <-d.applied:
			for _, r := range a.Tx.Rows {
				fmt.Fprintf(d.out, "  binlog: %s %s.%s after=%v\n", r.Op, r.Schema, r.Table, r.After)
			}
			for _, k := range a.Keys {
				if k == key {
					return a, nil
				}
			}
		case <-timeout:
			return invalidate.Applied{}, fmt.Errorf("no invalidation of %s within 10s", key)
		case <-ctx.Done():
			return invalidate.Applied{}, ctx.Err()
		}
	}
}

// ms rounds d for printing.
func ms(d time.Duration) time.Duration {
	if d < time.Millisecond {
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(100 * time.Microsecond)
}

type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

func deleteKeys(rdb *redis.Client, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		rdb.Del(ctx, iter.Val())
	}
}
