package binlog_test

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/binlog"
	"github.com/cacheaside/cacheaside/internal/testenv"
)

// insertRetry inserts id, retrying while the server is away. An insert
// that committed before its connection broke is a duplicate on retry.
func insertRetry(t testing.TB, db *sql.DB, id int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := db.Exec(fmt.Sprintf("INSERT INTO t VALUES (%d)", id))
		if err == nil || strings.Contains(err.Error(), "Duplicate entry") {
			return
		}
		require.True(t, time.Now().Before(deadline), "insert %d: %v", id, err)
		time.Sleep(50 * time.Millisecond)
	}
}

func TestResumesAfterServerRestartAndCrash(t *testing.T) {
	mysqlSrv, _ := env.Faults(t)
	db, schema := env.NewDatabase(t)
	exec(t, db, "CREATE TABLE t (id INT PRIMARY KEY)")
	from := masterPos(t, env.Admin())
	c := stream(t, rootConfig(t), &binlog.Options{HeartbeatPeriod: 200 * time.Millisecond, MaxBackoff: 300 * time.Millisecond}, schema, from)
	written, read := 0, 0
	write := func(n int) {
		for range n {
			written++
			insertRetry(t, db, written)
		}
	}
	readAll := func() {
		t.Helper()
		for read < written {
			for _, r := range c.next().Rows {
				read++
				require.Equal(t, int64(read), r.After["id"], "every row once, in order")
			}
		}
	}

	write(5)
	readAll()
	require.NoError(t, mysqlSrv.Restart())
	write(5)
	readAll()

	// A crash right after commits: they are in the log and still arrive.
	write(5)
	require.NoError(t, mysqlSrv.Kill())
	require.NoError(t, mysqlSrv.Start())
	write(5)
	readAll()
	c.none(300 * time.Millisecond)
}

// freezer is a TCP proxy whose connections can be frozen: they stay open
// but carry nothing, as a connection to a host that vanished from the
// network does. New connections carry data normally.
type freezer struct {
	ln       net.Listener
	upstream string
	mu       sync.Mutex
	conns    []*frozenPair
	accepted int
	wg       sync.WaitGroup
}

type frozenPair struct {
	client, server net.Conn
	frozen         chan struct{}
	once           sync.Once
}

func newFreezer(t *testing.T, upstream string) *freezer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	f := &freezer{ln: ln, upstream: upstream}
	f.wg.Add(1)
	go f.accept()
	t.Cleanup(func() {
		ln.Close()
		f.mu.Lock()
		for _, p := range f.conns {
			p.client.Close()
			p.server.Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	return f
}

func (f *freezer) addr() string { return f.ln.Addr().String() }

func (f *freezer) accept() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", f.upstream)
		if err != nil {
			c.Close()
			continue
		}
		p := &frozenPair{client: c, server: s, frozen: make(chan struct{})}
		f.mu.Lock()
		f.conns = append(f.conns, p)
		f.accepted++
		f.mu.Unlock()
		f.wg.Add(2)
		go f.pipe(p, c, s)
		go f.pipe(p, s, c)
	}
}

func (f *freezer) pipe(p *frozenPair, dst, src net.Conn) {
	defer f.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		select {
		case <-p.frozen:
			_, _ = io.Copy(io.Discard, src) // swallow everything until closed
			return
		default:
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

// freeze silences every connection open now.
func (f *freezer) freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.conns {
		p.once.Do(func() { close(p.frozen) })
	}
}

func (f *freezer) connections() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.accepted
}

// TestDeadConnectionIsNoticed freezes the replication connection without
// closing it: only the heartbeat and the read timeout can tell, and the
// stream must reconnect and deliver what was written meanwhile.
func TestDeadConnectionIsNoticed(t *testing.T) {
	db, schema := env.NewDatabase(t)
	exec(t, db, "CREATE TABLE t (id INT PRIMARY KEY)")
	from := masterPos(t, env.Admin())
	proxy := newFreezer(t, env.MySQLConfig("").Addr)
	cfg := rootConfig(t)
	cfg.Addr = proxy.addr()
	c := stream(t, cfg, &binlog.Options{HeartbeatPeriod: 200 * time.Millisecond, ReadTimeout: time.Second,
		MaxBackoff: 200 * time.Millisecond}, schema, from)
	exec(t, db, "INSERT INTO t VALUES (1)")
	assert.Equal(t, int64(1), c.next().Rows[0].After["id"])
	before := proxy.connections()

	// An idle log is not a dead connection: heartbeats keep it open.
	time.Sleep(2500 * time.Millisecond)
	assert.Equal(t, before, proxy.connections(), "no reconnect while the log was idle")

	proxy.freeze()
	frozeAt := time.Now()
	exec(t, db, "INSERT INTO t VALUES (2)")
	assert.Equal(t, int64(2), c.next().Rows[0].After["id"])
	t.Logf("delivered %v after the connection froze", time.Since(frozeAt).Round(10*time.Millisecond))
	assert.Greater(t, proxy.connections(), before, "the stream reconnected")
	c.none(300 * time.Millisecond)
}

// startMySQL starts an extra server with args for this test.
func startMySQL(t *testing.T, args ...string) (*testenv.MySQL, *sql.DB) {
	t.Helper()
	m, err := testenv.StartMySQL(&testenv.MySQLOptions{Args: args})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	db, err := sql.Open("mysql", m.Config("").FormatDSN())
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	return m, db
}

func TestPositionLost(t *testing.T) {
	t.Parallel()
	m, admin := startMySQL(t) // purging would disturb the shared server's other tests
	exec(t, admin, "CREATE DATABASE d", "CREATE TABLE d.t (id INT PRIMARY KEY)", "INSERT INTO d.t VALUES (1)")
	old := masterPos(t, admin)
	exec(t, admin, "INSERT INTO d.t VALUES (2)", "INSERT INTO d.t VALUES (3)")
	purgeAll(t, m, admin)
	exec(t, admin, "INSERT INTO d.t VALUES (4)")
	now := masterPos(t, admin)

	oldFile := old
	oldFile.GTIDSet = ""
	for name, p := range map[string]binlog.Position{
		"purged gtid":        old,
		"purged file":        oldFile,
		"unknown file":       {File: "mysql-bin.999999", Offset: 4},
		"beyond the end":     {File: now.File, Offset: now.Offset + 1<<20},
		"gtid of the future": {GTIDSet: "0-1-999999"},
	} {
		err := runErr(t, serverConfig(m), p, 30*time.Second)
		assert.ErrorIs(t, err, binlog.ErrPositionLost, "%s: %v", name, err)
		t.Logf("%s: %v", name, err)
	}

	// Starting afresh works.
	c := stream(t, serverConfig(m), nil, "d", now)
	exec(t, admin, "INSERT INTO d.t VALUES (5)")
	assert.Equal(t, int64(5), c.next().Rows[0].After["id"])
}

// purgeAll purges every binary log but the current one. MariaDB keeps a
// file until InnoDB has made its transactions durable (the binlog
// checkpoint, about a second later here), so purging is repeated until
// only one file is left.
func purgeAll(t *testing.T, m *testenv.MySQL, admin *sql.DB) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		require.NoError(t, m.PurgeBinaryLogs(context.Background()))
		rows, err := admin.Query("SHOW BINARY LOGS")
		require.NoError(t, err)
		n := 0
		for rows.Next() {
			n++
		}
		rows.Close()
		if n == 1 {
			return
		}
		require.True(t, time.Now().Before(deadline), "%d binary logs left after purging", n)
		time.Sleep(200 * time.Millisecond)
	}
}
