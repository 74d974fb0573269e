package binlog_test

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/binlog"
	"github.com/cacheaside/cacheaside/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &env, nil) }

// Every stream needs its own server id: two replicas with one id push each
// other off the server.
var lastServerID atomic.Uint32

func nextServerID() uint32 { return 100 + lastServerID.Add(1) }

// rootConfig reaches the harness server as root.
func rootConfig(t testing.TB) binlog.Config {
	t.Helper()
	mc := env.MySQLConfig("")
	return binlog.Config{Addr: mc.Addr, User: mc.User, Password: mc.Passwd, ServerID: nextServerID()}
}

// serverConfig reaches an extra server as root.
func serverConfig(m *testenv.MySQL) binlog.Config {
	return binlog.Config{Addr: m.Addr(), User: "root", ServerID: nextServerID()}
}

// collector receives the transactions of one running stream that touch
// its schema.
type collector struct {
	t    testing.TB
	ch   chan *binlog.Tx
	done chan error
	stop context.CancelFunc
}

// stream runs a Stream for schema from from until the test ends.
func stream(t testing.TB, cfg binlog.Config, opts *binlog.Options, schema string, from binlog.Position) *collector {
	t.Helper()
	o := binlog.Options{}
	if opts != nil {
		o = *opts
	}
	if o.Include == nil {
		o.Include = func(s, _ string) bool { return s == schema }
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = 500 * time.Millisecond
	}
	s, err := binlog.New(cfg, &o)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	c := &collector{t: t, ch: make(chan *binlog.Tx, 100000), done: make(chan error, 1), stop: cancel}
	go func() {
		c.done <- s.Run(ctx, from, binlog.HandlerFunc(func(ctx context.Context, tx *binlog.Tx) error {
			if len(tx.Rows) == 0 && len(tx.Changes) == 0 {
				return nil // another test's transaction
			}
			c.ch <- tx
			return nil
		}))
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-c.done:
		case <-time.After(30 * time.Second):
			t.Error("Run did not return within 30s of cancellation")
		}
	})
	return c
}

// next returns the next transaction, failing the test after 20s.
func (c *collector) next() *binlog.Tx {
	c.t.Helper()
	select {
	case tx := <-c.ch:
		return tx
	case err := <-c.done:
		c.t.Fatalf("stream ended: %v", err)
	case <-time.After(20 * time.Second):
		c.t.Fatal("no transaction within 20s")
	}
	return nil
}

// none asserts that no transaction arrives within d.
func (c *collector) none(d time.Duration) {
	c.t.Helper()
	select {
	case tx := <-c.ch:
		c.t.Fatalf("unexpected transaction: %+v", tx)
	case <-time.After(d):
	}
}

// wait stops the stream and returns Run's result.
func (c *collector) wait() error {
	c.stop()
	select {
	case err := <-c.done:
		c.done <- err // for the cleanup
		return err
	case <-time.After(30 * time.Second):
		return errors.New("Run did not return")
	}
}

func exec(t testing.TB, db *sql.DB, queries ...string) {
	t.Helper()
	for _, q := range queries {
		_, err := db.Exec(q)
		require.NoError(t, err, q)
	}
}

// runErr runs a stream until it returns on its own, or fails after timeout.
func runErr(t testing.TB, cfg binlog.Config, from binlog.Position, timeout time.Duration) error {
	t.Helper()
	s, err := binlog.New(cfg, &binlog.Options{MaxBackoff: 200 * time.Millisecond, Logger: testLogger(t)})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err = s.Run(ctx, from, binlog.HandlerFunc(func(context.Context, *binlog.Tx) error { return nil }))
	require.NoError(t, ctx.Err(), "Run did not return by itself within %v", timeout)
	return err
}

// settleGoroutines waits until no more goroutines run than before.
func settleGoroutines(t testing.TB, before int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines left (before: %d):\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// masterPos returns the end of db's server's binary log, with its GTID position.
func masterPos(t testing.TB, db *sql.DB) binlog.Position {
	t.Helper()
	var file string
	var pos uint32
	var doDB, ignoreDB sql.NullString
	require.NoError(t, db.QueryRow("SHOW MASTER STATUS").Scan(&file, &pos, &doDB, &ignoreDB))
	var g sql.NullString
	require.NoError(t, db.QueryRow("SELECT BINLOG_GTID_POS(?, ?)", file, pos).Scan(&g))
	return binlog.Position{File: file, Offset: pos, GTIDSet: g.String}
}

// testLogger logs through t.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
