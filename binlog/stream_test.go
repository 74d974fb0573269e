package binlog_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/binlog"
)

func TestRowsArriveWholeAndInOrder(t *testing.T) {
	db, schema := env.NewDatabase(t)
	exec(t, db, "CREATE TABLE users (id BIGINT PRIMARY KEY, email VARCHAR(100) NOT NULL, n INT)",
		"CREATE TABLE orders (id INT PRIMARY KEY, user_id BIGINT)")
	from := masterPos(t, env.Admin())
	c := stream(t, rootConfig(t), nil, schema, from)
	pk := []string{"id"}
	last := from
	advanced := func(tx *binlog.Tx) {
		t.Helper()
		assert.False(t, tx.More)
		assert.NotEmpty(t, tx.Pos.GTIDSet, "MariaDB positions carry the GTID")
		assert.Equal(t, last.File, tx.Pos.File)
		assert.Greater(t, tx.Pos.Offset, last.Offset, "positions grow in commit order")
		assert.NotEqual(t, last.GTIDSet, tx.Pos.GTIDSet)
		assert.WithinDuration(t, time.Now(), tx.CommitTime, time.Minute)
		assert.Equal(t, time.UTC, tx.CommitTime.Location())
		last = tx.Pos
	}

	exec(t, db, "INSERT INTO users VALUES (1, 'a@x', 10)")
	tx := c.next()
	advanced(tx)
	assert.Empty(t, tx.Changes)
	assert.Equal(t, []binlog.Row{{Schema: schema, Table: "users", Op: binlog.Insert, PrimaryKey: pk,
		After: map[string]any{"id": int64(1), "email": "a@x", "n": int64(10)}}}, tx.Rows)

	exec(t, db, "INSERT INTO users VALUES (2, 'b@x', 20), (3, 'c@x', 30), (4, 'd@x', NULL)")
	tx = c.next()
	advanced(tx)
	require.Len(t, tx.Rows, 3, "a multi-row statement arrives as one transaction")
	for i, r := range tx.Rows {
		assert.Equal(t, binlog.Insert, r.Op)
		assert.Equal(t, int64(i+2), r.After["id"])
	}
	assert.Nil(t, tx.Rows[2].After["n"])
	assert.Contains(t, tx.Rows[2].After, "n", "NULL is a nil value, not a missing column")

	exec(t, db, "UPDATE users SET n = n + 1 WHERE id IN (2, 3) ORDER BY id")
	tx = c.next()
	advanced(tx)
	require.Len(t, tx.Rows, 2)
	assert.Equal(t, binlog.Row{Schema: schema, Table: "users", Op: binlog.Update, PrimaryKey: pk,
		Before: map[string]any{"id": int64(2), "email": "b@x", "n": int64(20)},
		After:  map[string]any{"id": int64(2), "email": "b@x", "n": int64(21)}}, tx.Rows[0])
	assert.Equal(t, int64(31), tx.Rows[1].After["n"])

	exec(t, db, "DELETE FROM users WHERE id IN (3, 4)")
	tx = c.next()
	advanced(tx)
	require.Len(t, tx.Rows, 2)
	for _, r := range tx.Rows {
		assert.Equal(t, binlog.Delete, r.Op)
		assert.Nil(t, r.After)
		assert.NotNil(t, r.Before["id"])
	}

	// A multi-statement transaction arrives whole, its rows in statement order.
	sqlTx, err := db.Begin()
	require.NoError(t, err)
	for _, q := range []string{
		"INSERT INTO users VALUES (5, 'e@x', 50)",
		"UPDATE users SET email = 'a2@x' WHERE id = 1",
		"DELETE FROM users WHERE id = 2",
		"INSERT INTO orders VALUES (100, 5)",
	} {
		_, err := sqlTx.Exec(q)
		require.NoError(t, err)
	}
	require.NoError(t, sqlTx.Commit())
	tx = c.next()
	advanced(tx)
	require.Len(t, tx.Rows, 4)
	got := make([]string, len(tx.Rows))
	for i, r := range tx.Rows {
		got[i] = fmt.Sprintf("%s %s", r.Table, r.Op)
	}
	assert.Equal(t, []string{"users insert", "users update", "users delete", "orders insert"}, got)
	assert.Equal(t, "a@x", tx.Rows[1].Before["email"])
	assert.Equal(t, "a2@x", tx.Rows[1].After["email"])

	// Rolled back work never arrives: the next transaction is the marker.
	sqlTx, err = db.Begin()
	require.NoError(t, err)
	_, err = sqlTx.Exec("INSERT INTO users VALUES (6, 'rolled@back', 60)")
	require.NoError(t, err)
	_, err = sqlTx.Exec("DELETE FROM users WHERE id = 1")
	require.NoError(t, err)
	require.NoError(t, sqlTx.Rollback())
	exec(t, db, "INSERT INTO orders VALUES (101, 1)")
	tx = c.next()
	advanced(tx)
	require.Len(t, tx.Rows, 1)
	assert.Equal(t, "orders", tx.Rows[0].Table)
	assert.Equal(t, int64(101), tx.Rows[0].After["id"])
}

func TestValueTypes(t *testing.T) {
	db, schema := env.NewDatabase(t)
	exec(t, db, `CREATE TABLE v (
		id INT PRIMARY KEY,
		ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, su SMALLINT UNSIGNED, mi MEDIUMINT, mu MEDIUMINT UNSIGNED,
		i INT, iu INT UNSIGNED, bi BIGINT, bu BIGINT UNSIGNED,
		d DECIMAL(12,3), f FLOAT, dbl DOUBLE, bt BIT(10), y YEAR,
		dt DATE, dtm DATETIME(6), ts TIMESTAMP(3) NULL, tm TIME(2), old DATETIME, zd DATETIME, zm DATE,
		c CHAR(5), vc VARCHAR(20), tx TEXT, bl BLOB, vb VARBINARY(8), bn BINARY(3),
		e ENUM('small','large'), st SET('a','b','c'), j JSON, nul VARCHAR(5) NULL)`)
	from := masterPos(t, env.Admin())
	c := stream(t, rootConfig(t), nil, schema, from)
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.ExecContext(ctx, "SET time_zone = '+00:00'")
	require.NoError(t, err)
	_, err = conn.ExecContext(ctx, `INSERT INTO v VALUES (1,
		-128, 255, -32768, 65535, -8388608, 16777215,
		-2147483648, 4294967295, -9223372036854775808, 18446744073709551615,
		'-123456789.125', 0.1, 2.5, b'1000000001', 2024,
		'2024-02-29', '2024-02-29 13:14:15.123456', '2024-02-29 13:14:15.123', '-12:34:56.78', '1969-07-20 20:17:40',
		'0000-00-00 00:00:00', '2024-00-10',
		'ab', 'héllo', 'long text', X'00FF', X'0102', 'ab',
		'large', 'c,a', '{"k": [1, 2]}', NULL)`)
	require.NoError(t, err)
	tx := c.next()
	require.Len(t, tx.Rows, 1)
	want := map[string]any{
		"id": int64(1),
		"ti": int64(-128), "tu": uint64(255), "si": int64(-32768), "su": uint64(65535),
		"mi": int64(-8388608), "mu": uint64(16777215), "i": int64(math.MinInt32), "iu": uint64(math.MaxUint32),
		"bi": int64(math.MinInt64), "bu": uint64(math.MaxUint64),
		"d": "-123456789.125", "f": 0.1, "dbl": 2.5, "bt": uint64(513), "y": int64(2024),
		"dt":  time.Date(2024, 2, 29, 0, 0, 0, 0, time.UTC),
		"dtm": time.Date(2024, 2, 29, 13, 14, 15, 123456000, time.UTC),
		"ts":  time.Date(2024, 2, 29, 13, 14, 15, 123000000, time.UTC),
		"tm":  "-12:34:56.78",
		"old": time.Date(1969, 7, 20, 20, 17, 40, 0, time.UTC),
		"zd":  "0000-00-00 00:00:00", "zm": "2024-00-10",
		"c": "ab", "vc": "héllo", "tx": "long text", "bl": []byte{0, 0xff}, "vb": []byte{1, 2}, "bn": []byte("ab\x00"),
		"e": "large", "st": "a,c", "j": `{"k": [1, 2]}`, "nul": nil,
	}
	got := tx.Rows[0].After
	for k, w := range want {
		assert.Equal(t, w, got[k], "column %s", k)
	}
	assert.Len(t, got, len(want))
	for _, k := range []string{"dt", "dtm", "ts", "old"} {
		assert.Equal(t, time.UTC, got[k].(time.Time).Location(), k)
	}
}

func TestAlterMidStreamKeepsMapping(t *testing.T) {
	db, schema := env.NewDatabase(t)
	exec(t, db, "CREATE TABLE t (id INT PRIMARY KEY, a VARCHAR(10))")
	from := masterPos(t, env.Admin())
	live := stream(t, rootConfig(t), nil, schema, from)
	exec(t, db,
		"INSERT INTO t VALUES (1, 'x')",
		"ALTER TABLE t ADD COLUMN b INT NOT NULL DEFAULT 7 AFTER id",
		"INSERT INTO t (id, b, a) VALUES (2, 8, 'y')",
		"ALTER TABLE t DROP COLUMN a",
		"INSERT INTO t VALUES (3, 9)",
		"UPDATE t SET b = 10 WHERE id = 1")
	check := func(c *collector) {
		t.Helper()
		assert.Equal(t, map[string]any{"id": int64(1), "a": "x"}, c.next().Rows[0].After)
		assert.Equal(t, []binlog.TableChange{{Schema: schema, Table: "t", Kind: binlog.Alter,
			Query: "ALTER TABLE t ADD COLUMN b INT NOT NULL DEFAULT 7 AFTER id"}}, c.next().Changes)
		assert.Equal(t, map[string]any{"id": int64(2), "b": int64(8), "a": "y"}, c.next().Rows[0].After)
		ch := c.next().Changes
		require.Len(t, ch, 1)
		assert.Equal(t, binlog.Alter, ch[0].Kind)
		assert.Equal(t, map[string]any{"id": int64(3), "b": int64(9)}, c.next().Rows[0].After)
		r := c.next().Rows[0]
		assert.Equal(t, map[string]any{"id": int64(1), "b": int64(7)}, r.Before)
		assert.Equal(t, map[string]any{"id": int64(1), "b": int64(10)}, r.After)
	}
	check(live)
	// A stream that reads the same events after all the DDL (as a lagging
	// one does) names every row by the columns it had when it was written.
	check(stream(t, rootConfig(t), nil, schema, from))
}

func TestTableChanges(t *testing.T) {
	db, schema := env.NewDatabase(t)
	exec(t, db, "CREATE TABLE a (id INT PRIMARY KEY)", "CREATE TABLE b (id INT PRIMARY KEY)",
		"CREATE TABLE c (id INT PRIMARY KEY)", "CREATE TABLE d (id INT PRIMARY KEY)")
	from := masterPos(t, env.Admin())
	s := stream(t, rootConfig(t), nil, schema, from)
	type ch struct {
		Schema, Table string
		Kind          binlog.ChangeKind
	}
	expect := func(want ...ch) {
		t.Helper()
		tx := s.next()
		assert.Empty(t, tx.Rows)
		var got []ch
		for _, c := range tx.Changes {
			got = append(got, ch{c.Schema, c.Table, c.Kind})
			assert.NotEmpty(t, c.Query)
		}
		assert.Equal(t, want, got)
	}
	exec(t, db, "TRUNCATE TABLE a")
	expect(ch{schema, "a", binlog.Truncate})
	exec(t, db, "RENAME TABLE b TO b2")
	expect(ch{schema, "b", binlog.Rename}, ch{schema, "b2", binlog.Rename})
	exec(t, db, "DROP TABLE c, d")
	expect(ch{schema, "c", binlog.Drop}, ch{schema, "d", binlog.Drop})
	exec(t, db, "CREATE TABLE e (id INT PRIMARY KEY)")
	expect(ch{schema, "e", binlog.Create})
	exec(t, db, "ALTER TABLE e ADD COLUMN x INT, RENAME TO e2")
	expect(ch{schema, "e", binlog.Alter}, ch{schema, "e2", binlog.Rename})
	exec(t, db, "CREATE INDEX ix ON e2 (x)")
	expect(ch{schema, "e2", binlog.Alter})
	// DDL issued from another default database names its schema.
	exec(t, env.Admin(), "ALTER TABLE `"+schema+"`.a ADD COLUMN z INT")
	expect(ch{schema, "a", binlog.Alter})

	// A session that logs statements: the table it names and, for the triggers
	// the log does not show, the whole server; or the whole server alone.
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	for _, q := range []string{"SET SESSION binlog_format = 'STATEMENT'", "INSERT INTO a (id) VALUES (1)",
		"UPDATE a JOIN e2 ON a.id = e2.id SET a.z = 1"} {
		_, err := conn.ExecContext(ctx, q)
		require.NoError(t, err, q)
	}
	expect(ch{schema, "a", binlog.Unknown}, ch{"", "", binlog.Unknown})
	expect(ch{"", "", binlog.Unknown})

	// CREATE TABLE ... SELECT: the new table and its rows in one transaction.
	exec(t, db, "CREATE TABLE g SELECT 1 AS id")
	tx := s.next()
	require.Len(t, tx.Changes, 1)
	assert.Equal(t, ch{schema, "g", binlog.Create}, ch{tx.Changes[0].Schema, tx.Changes[0].Table, tx.Changes[0].Kind})
	require.Len(t, tx.Rows, 1)
	assert.Equal(t, map[string]any{"id": int64(1)}, tx.Rows[0].After)
}

func TestLargeTransactionInParts(t *testing.T) {
	db, schema := env.NewDatabase(t)
	exec(t, db, "CREATE TABLE t (id INT PRIMARY KEY, pad VARCHAR(200))")
	exec(t, db, "INSERT INTO t VALUES (0, 'before')")
	from := masterPos(t, env.Admin())
	c := stream(t, rootConfig(t), &binlog.Options{MaxTxRows: 100}, schema, from)
	exec(t, db, "INSERT INTO t SELECT seq, REPEAT('x', 200) FROM seq_1_to_350")
	next := 1
	var parts []*binlog.Tx
	for {
		tx := c.next()
		parts = append(parts, tx)
		assert.LessOrEqual(t, len(tx.Rows), 100)
		for _, r := range tx.Rows {
			require.Equal(t, int64(next), r.After["id"], "rows in order, none lost or repeated")
			next++
		}
		if !tx.More {
			break
		}
		assert.Equal(t, from, tx.Pos, "a part carries the position before the transaction")
	}
	assert.Equal(t, 351, next)
	assert.Len(t, parts, 4)
	assert.Greater(t, parts[3].Pos.Offset, from.Offset)
}

func TestStartsAtCurrentPosition(t *testing.T) {
	db, schema := env.NewDatabase(t)
	exec(t, db, "CREATE TABLE t (id INT PRIMARY KEY)", "INSERT INTO t VALUES (0)")
	c := stream(t, rootConfig(t), nil, schema, binlog.Position{})
	// The stream starts at some point after Run was called: write until a
	// row arrives, then every later row must follow without a gap.
	first := -1
	for id := 1; first < 0; id++ {
		require.Less(t, id, 200, "no row arrived")
		exec(t, db, fmt.Sprintf("INSERT INTO t VALUES (%d)", id))
		select {
		case tx := <-c.ch:
			first = int(tx.Rows[0].After["id"].(int64))
			assert.Greater(t, first, 0, "the row written before Run never arrives")
			for want := first + 1; want <= id; want++ {
				assert.Equal(t, int64(want), c.next().Rows[0].After["id"])
			}
		case <-time.After(100 * time.Millisecond):
		}
	}
	exec(t, db, "INSERT INTO t VALUES (1000)")
	assert.Equal(t, int64(1000), c.next().Rows[0].After["id"])
}

func TestRunReturnsNilAndLeavesNoGoroutine(t *testing.T) {
	db, schema := env.NewDatabase(t)
	exec(t, db, "CREATE TABLE t (id INT PRIMARY KEY)")
	from := masterPos(t, env.Admin())
	before := runtime.NumGoroutine()

	s, err := binlog.New(rootConfig(t), &binlog.Options{Include: func(s, _ string) bool { return s == schema }})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan *binlog.Tx)
	done := make(chan error, 1)
	go func() {
		done <- s.Run(ctx, from, binlog.HandlerFunc(func(ctx context.Context, tx *binlog.Tx) error {
			if len(tx.Rows) == 0 {
				return nil
			}
			got <- tx
			<-ctx.Done() // a handler blocked when Run is cancelled
			return ctx.Err()
		}))
	}()
	exec(t, db, "INSERT INTO t VALUES (1)")
	select {
	case <-got:
	case <-time.After(20 * time.Second):
		t.Fatal("no transaction")
	}
	cancel()
	select {
	case err := <-done:
		assert.NoError(t, err, "Run returns nil after cancellation")
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return")
	}
	settleGoroutines(t, before)
}

func TestHandlerErrorStopsRun(t *testing.T) {
	db, schema := env.NewDatabase(t)
	exec(t, db, "CREATE TABLE t (id INT PRIMARY KEY)")
	from := masterPos(t, env.Admin())
	exec(t, db, "INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (2)")
	boom := errors.New("boom")
	s, err := binlog.New(rootConfig(t), &binlog.Options{Include: func(s, _ string) bool { return s == schema }})
	require.NoError(t, err)
	calls := 0
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = s.Run(ctx, from, binlog.HandlerFunc(func(ctx context.Context, tx *binlog.Tx) error {
		if len(tx.Rows) == 0 {
			return nil
		}
		calls++
		return boom
	}))
	assert.ErrorIs(t, err, boom)
	assert.Equal(t, 1, calls, "Run stops at the first error")
	assert.NoError(t, ctx.Err())
}
