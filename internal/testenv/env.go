package testenv

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"
)

// Environment variables that point the harness at servers it did not start.
const (
	EnvMySQLDSN  = "CACHEASIDE_MYSQL_DSN"  // a go-sql-driver DSN, e.g. root@tcp(127.0.0.1:3306)/
	EnvRedisAddr = "CACHEASIDE_REDIS_ADDR" // host:port
	envChild     = "CACHEASIDE_TESTENV_CHILD"
)

// Options configures Start.
type Options struct {
	// MySQL configures the MariaDB server the harness starts. Default: binlog on, ROW, FULL metadata.
	MySQL *MySQLOptions
}

// Env is a MariaDB with binlog and a Redis, either started by the harness
// (MySQL and Redis are set, with their fault controls) or given through
// CACHEASIDE_MYSQL_DSN and CACHEASIDE_REDIS_ADDR (MySQL and Redis are nil).
type Env struct {
	// MySQL is the harness's MariaDB, nil for an external server.
	MySQL *MySQL
	// Redis is the harness's Redis, nil for an external server.
	Redis *Redis

	mysqlCfg  *mysql.Config
	redisAddr string
	admin     *sql.DB
	scale     scaleOut // the cluster and the sentinels, started on first use
}

// Start starts a MariaDB and a Redis in parallel, or connects to the servers
// named by CACHEASIDE_MYSQL_DSN and CACHEASIDE_REDIS_ADDR when both are set.
func Start(opts *Options) (*Env, error) {
	if opts == nil {
		opts = &Options{}
	}
	e := &Env{}
	if err := e.scale.fromEnv(); err != nil {
		return nil, err
	}
	dsn, addr := os.Getenv(EnvMySQLDSN), os.Getenv(EnvRedisAddr)
	switch {
	case dsn != "" && addr != "":
		cfg, err := mysql.ParseDSN(dsn)
		if err != nil {
			return nil, fmt.Errorf("testenv: %s: %w", EnvMySQLDSN, err)
		}
		cfg.ParseTime = true
		e.mysqlCfg, e.redisAddr = cfg, addr
	case dsn != "" || addr != "":
		return nil, fmt.Errorf("testenv: set both %s and %s, or neither", EnvMySQLDSN, EnvRedisAddr)
	default:
		var g errgroup.Group
		g.Go(func() (err error) { e.MySQL, err = StartMySQL(opts.MySQL); return err })
		g.Go(func() (err error) { e.Redis, err = StartRedis(); return err })
		if err := g.Wait(); err != nil {
			e.Close()
			return nil, err
		}
		e.mysqlCfg, e.redisAddr = e.MySQL.Config(""), e.Redis.Addr()
	}
	admin, err := sql.Open("mysql", e.DSN(""))
	if err != nil {
		e.Close()
		return nil, fmt.Errorf("testenv: %w", err)
	}
	e.admin = admin
	return e, nil
}

// Close stops the servers the harness started, the cluster and the
// sentinels included, and removes their data.
func (e *Env) Close() error {
	errs := []error{e.scale.close()}
	if e.admin != nil {
		errs = append(errs, e.admin.Close())
	}
	if e.MySQL != nil {
		errs = append(errs, e.MySQL.Close())
	}
	if e.Redis != nil {
		errs = append(errs, e.Redis.Close())
	}
	return errors.Join(errs...)
}

// External reports whether the servers were given by the environment, in
// which case there are no fault controls.
func (e *Env) External() bool { return e.MySQL == nil }

// MySQLConfig returns a copy of the driver configuration for database db.
func (e *Env) MySQLConfig(db string) *mysql.Config {
	cfg := e.mysqlCfg.Clone()
	cfg.DBName = db
	return cfg
}

// DSN returns a go-sql-driver DSN for database db ("" for none).
func (e *Env) DSN(db string) string { return e.MySQLConfig(db).FormatDSN() }

// RedisAddr returns the Redis host:port.
func (e *Env) RedisAddr() string { return e.redisAddr }

// Admin returns a connection pool to the server with no default database.
func (e *Env) Admin() *sql.DB { return e.admin }

// NewRedis returns a new client for the Redis server. Callers close it.
func (e *Env) NewRedis(opts *redis.Options) *redis.Client {
	o := redis.Options{}
	if opts != nil {
		o = *opts
	}
	o.Addr = e.redisAddr
	return redis.NewClient(&o)
}

// RedisClient returns a client that is closed at the end of the test.
func (e *Env) RedisClient(t testing.TB) *redis.Client {
	c := e.NewRedis(nil)
	t.Cleanup(func() { c.Close() })
	return c
}

var unsafeName = regexp.MustCompile(`[^a-z0-9]+`)

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// NewDatabase creates a database that only this test uses and returns a pool
// connected to it and its name; the database is dropped at the end of the test.
func (e *Env) NewDatabase(t testing.TB) (*sql.DB, string) {
	t.Helper()
	base := strings.Trim(unsafeName.ReplaceAllString(strings.ToLower(t.Name()), "_"), "_")
	if len(base) > 40 {
		base = base[:40]
	}
	name := "t_" + base + "_" + randomHex(4)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := e.admin.ExecContext(ctx, "CREATE DATABASE `"+name+"`"); err != nil {
		t.Fatalf("testenv: create database %s: %v", name, err)
	}
	db, err := sql.Open("mysql", e.DSN(name))
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() {
		db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = e.admin.ExecContext(ctx, "DROP DATABASE IF EXISTS `"+name+"`")
	})
	return db, name
}

// Prefix returns a Redis key prefix that only this test uses; its keys are
// deleted at the end of the test.
func (e *Env) Prefix(t testing.TB) string {
	t.Helper()
	p := "t" + randomHex(5) + ":"
	t.Cleanup(func() { e.DeleteKeys(p) })
	return p
}

// DeleteKeys deletes every Redis key that starts with prefix, best effort
// (a stopped server leaves them: it is thrown away anyway).
func (e *Env) DeleteKeys(prefix string) {
	c := e.NewRedis(&redis.Options{MaxRetries: -1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		c.Del(ctx, iter.Val())
	}
}

// Faults returns the harness's own servers for fault injection. With
// external servers there are none and the test is skipped with a message
// that says so; the harness's own servers are always there in CI.
func (e *Env) Faults(t testing.TB) (*MySQL, *Redis) {
	t.Helper()
	if e.External() {
		t.Skipf("fault injection needs the harness's own servers; unset %s and %s", EnvMySQLDSN, EnvRedisAddr)
	}
	return e.MySQL, e.Redis
}

// ChildFunc is the body of a child process started with Env.Child. It returns
// when its work is done or ctx ends (SIGTERM or SIGINT).
type ChildFunc func(ctx context.Context, env *Env) error

// Children names the functions a test binary can run as child processes.
type Children map[string]ChildFunc

// Main is the TestMain of a package whose tests use the harness: it starts
// the servers, sets *env, runs the tests, tears the servers down and exits.
// When the binary was started by Env.Child it instead runs the named child
// against the parent's servers and exits.
func Main(m *testing.M, env **Env, children Children) {
	quietDrivers()
	if name := os.Getenv(envChild); name != "" {
		os.Exit(runChild(name, children))
	}
	e, err := Start(nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		fmt.Fprintln(os.Stderr, "FAIL: the test servers did not start")
		os.Exit(1)
	}
	*env = e
	code := m.Run()
	if err := e.Close(); err != nil && code == 0 {
		fmt.Fprintln(os.Stderr, "testenv: close:", err)
	}
	os.Exit(code)
}

func runChild(name string, children Children) int {
	fn := children[name]
	if fn == nil {
		fmt.Fprintf(os.Stderr, "testenv: no child named %q\n", name)
		return 2
	}
	e, err := Start(nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer e.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := fn(ctx, e); err != nil {
		fmt.Fprintf(os.Stderr, "child %s: %v\n", name, err)
		return 1
	}
	return 0
}

// Child returns a command that runs this test binary as the child process
// name (see Main), connected to this Env's servers. Extra variables in the
// form KEY=VALUE are added to its environment; the child reads them with os.Getenv.
// A cluster or Sentinel setup the parent has started is passed on too
// (Env.ClusterClient and Env.FailoverClient in the child reach them); one
// the parent starts after Child is not.
func (e *Env) Child(ctx context.Context, name string, vars ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		envChild+"="+name,
		EnvMySQLDSN+"="+e.DSN(""),
		EnvRedisAddr+"="+e.redisAddr,
	)
	cmd.Env = append(cmd.Env, e.scale.childVars()...)
	cmd.Env = append(cmd.Env, vars...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = os.Stderr
	return cmd
}

// quietLog drops the drivers' own log lines: the fault tests stop servers
// on purpose, and go-redis and go-sql-driver would print every failed dial.
// Set CACHEASIDE_DRIVER_LOGS=1 to see them.
type quietLog struct{}

func (quietLog) Printf(context.Context, string, ...any) {}
func (quietLog) Print(...any)                           {}

func quietDrivers() {
	if os.Getenv("CACHEASIDE_DRIVER_LOGS") != "" {
		return
	}
	redis.SetLogger(quietLog{})
	_ = mysql.SetLogger(quietLog{})
}
