package binlog_test

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/binlog"
)

// benchRows is how many rows BenchmarkDecode reads per iteration: 200
// transactions of 100 inserted rows each.
const benchTxs, benchTxRows = 200, 100

// benchLog writes the rows once and returns the schema and the positions
// before and after them.
func benchLog(b *testing.B) (schema string, from, to binlog.Position) {
	db, schema := env.NewDatabase(b)
	exec(b, db, `CREATE TABLE users (id BIGINT UNSIGNED PRIMARY KEY, email VARCHAR(64), n BIGINT,
		balance DECIMAL(12,2), created DATETIME(3), note VARCHAR(100))`)
	from = masterPos(b, env.Admin())
	for i := range benchTxs {
		var q strings.Builder
		q.WriteString("INSERT INTO users VALUES ")
		for j := range benchTxRows {
			id := i*benchTxRows + j
			if j > 0 {
				q.WriteByte(',')
			}
			fmt.Fprintf(&q, "(%d, 'user%d@example.com', %d, %d.25, '2024-01-02 03:04:05.678', 'a note about user %d')", id, id, id*7, id, id)
		}
		exec(b, db, q.String())
	}
	return schema, from, masterPos(b, env.Admin())
}

func syncerConfig(serverID uint32) replication.BinlogSyncerConfig {
	mc := env.MySQLConfig("")
	host, port, _ := net.SplitHostPort(mc.Addr)
	p, _ := strconv.Atoi(port)
	return replication.BinlogSyncerConfig{ServerID: serverID, Flavor: "mariadb", Host: host, Port: uint16(p),
		User: mc.User, Password: mc.Passwd, ParseTime: true, Logger: slog.New(slog.DiscardHandler)}
}

// BenchmarkDecode reads the same 20,000 rows per iteration with a Stream
// (rows decoded into Row maps with normalised values) and with a bare
// BinlogSyncer (go-mysql's decoding only), and reports rows per second.
func BenchmarkDecode(b *testing.B) {
	schema, from, to := benchLog(b)
	const rows = benchTxs * benchTxRows
	report := func(b *testing.B, elapsed time.Duration, mallocs uint64) {
		n := float64(b.N) * rows
		b.ReportMetric(n/elapsed.Seconds(), "rows/s")
		b.ReportMetric(float64(mallocs)/n, "allocs/row")
	}
	b.Run("stream", func(b *testing.B) {
		b.ReportAllocs()
		s, err := binlog.New(rootConfig(b), &binlog.Options{Include: func(s, _ string) bool { return s == schema }})
		require.NoError(b, err)
		var ms0, ms1 runtime.MemStats
		runtime.ReadMemStats(&ms0)
		start := time.Now()
		for b.Loop() {
			ctx, cancel := context.WithCancel(context.Background())
			got := 0
			err := s.Run(ctx, from, binlog.HandlerFunc(func(ctx context.Context, tx *binlog.Tx) error {
				got += len(tx.Rows)
				if tx.Pos.Offset >= to.Offset {
					cancel()
				}
				return nil
			}))
			cancel()
			require.NoError(b, err)
			require.Equal(b, rows, got)
		}
		elapsed := time.Since(start)
		runtime.ReadMemStats(&ms1)
		report(b, elapsed, ms1.Mallocs-ms0.Mallocs)
	})
	b.Run("syncer", func(b *testing.B) {
		b.ReportAllocs()
		var ms0, ms1 runtime.MemStats
		runtime.ReadMemStats(&ms0)
		start := time.Now()
		for b.Loop() {
			syncer := replication.NewBinlogSyncer(syncerConfig(nextServerID()))
			st, err := syncer.StartSync(gomysql.Position{Name: from.File, Pos: from.Offset})
			require.NoError(b, err)
			got := 0
			for {
				ev, err := st.GetEvent(context.Background())
				require.NoError(b, err)
				if re, ok := ev.Event.(*replication.RowsEvent); ok && string(re.Table.Schema) == schema {
					got += len(re.Rows)
				}
				if ev.Header.LogPos >= to.Offset {
					break
				}
			}
			syncer.Close()
			require.Equal(b, rows, got)
		}
		elapsed := time.Since(start)
		runtime.ReadMemStats(&ms1)
		report(b, elapsed, ms1.Mallocs-ms0.Mallocs)
	})
}

// BenchmarkLag measures the time from issuing an autocommit INSERT to the
// delivery of its transaction, with a Stream and with a bare
// BinlogSyncer, one insert per iteration, and reports p50 and p99.
func BenchmarkLag(b *testing.B) {
	db, schema := env.NewDatabase(b)
	exec(b, db, "CREATE TABLE t (id BIGINT PRIMARY KEY, v VARCHAR(32))")
	db.SetMaxIdleConns(4)
	report := func(b *testing.B, lags []time.Duration) {
		slices.Sort(lags)
		b.ReportMetric(float64(lags[len(lags)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lags[len(lags)*99/100].Microseconds()), "p99-µs")
	}
	var next int64
	insert := func(b *testing.B, db *sql.DB) int64 {
		next++
		_, err := db.Exec("INSERT INTO t VALUES (?, 'x')", next)
		require.NoError(b, err)
		return next
	}

	b.Run("stream", func(b *testing.B) {
		b.ReportAllocs()
		got := make(chan int64, 1)
		s, err := binlog.New(rootConfig(b), &binlog.Options{Include: func(s, _ string) bool { return s == schema }})
		require.NoError(b, err)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- s.Run(ctx, masterPos(b, env.Admin()), binlog.HandlerFunc(func(ctx context.Context, tx *binlog.Tx) error {
				if len(tx.Rows) > 0 {
					got <- tx.Rows[0].After["id"].(int64)
				}
				return nil
			}))
		}()
		var lags []time.Duration
		for b.Loop() {
			t0 := time.Now()
			id := insert(b, db)
			select {
			case g := <-got:
				require.Equal(b, id, g)
			case <-time.After(10 * time.Second):
				b.Fatal("no delivery within 10s")
			}
			lags = append(lags, time.Since(t0))
		}
		cancel()
		require.NoError(b, <-done)
		report(b, lags)
	})
	b.Run("syncer", func(b *testing.B) {
		b.ReportAllocs()
		from := masterPos(b, env.Admin())
		syncer := replication.NewBinlogSyncer(syncerConfig(nextServerID()))
		defer syncer.Close()
		st, err := syncer.StartSync(gomysql.Position{Name: from.File, Pos: from.Offset})
		require.NoError(b, err)
		var lags []time.Duration
		for b.Loop() {
			t0 := time.Now()
			id := insert(b, db)
			// Wait for the commit (XID) of the transaction with our row.
			seen := false
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			for {
				ev, err := st.GetEvent(ctx)
				require.NoError(b, err)
				if re, ok := ev.Event.(*replication.RowsEvent); ok && string(re.Table.Schema) == schema {
					seen = re.Rows[0][0].(int64) == id
				}
				if _, ok := ev.Event.(*replication.XIDEvent); ok && seen {
					break
				}
			}
			cancel()
			lags = append(lags, time.Since(t0))
		}
		report(b, lags)
	})
}
