package binlog_test

import (
	"context"
	"database/sql"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/binlog"
	"github.com/cacheaside/cacheaside/cache"
	"github.com/cacheaside/cacheaside/invalidate"
)

// The tests in this file check the promise a cache depends on: the key
// that package invalidate's templates render from a row of the binary log
// is the key the application renders from the same row read with SELECT.
//
// The application they assume: database/sql with go-sql-driver on a
// utf8mb4 connection (the driver's default), time_zone '+00:00', loc=UTC,
// the text protocol (queries without arguments), every column scanned into
// an `any`, and a key printed from that value by appText: []byte as its
// text, integers in decimal, floats with strconv.FormatFloat(x, 'f', -1,
// bits), times in UTC RFC 3339 with nanoseconds. Most checks read with
// parseTime=true; the checks of dates that are not calendar dates read
// with parseTime=false, as the package documentation tells such
// applications to.

// appText is the application's rendering of a value it scanned.
func appText(v any) (string, bool) {
	switch x := v.(type) {
	case nil:
		return "", false
	case []byte:
		return string(x), true
	case int64:
		return strconv.FormatInt(x, 10), true
	case uint64:
		return strconv.FormatUint(x, 10), true
	case float32:
		return strconv.FormatFloat(float64(x), 'f', -1, 32), true
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), true
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano), true
	}
	panic(fmt.Sprintf("appText: unexpected %T", v))
}

// appRow is one row as the application reads it, with parseTime=true
// (parsed) and with parseTime=false (text).
type appRow struct{ parsed, text map[string]any }

// keyCheck pairs a key template with the application's own rendering of
// the same key from its SELECT row (ok=false: the application builds no
// key, because of a NULL).
type keyCheck struct {
	tmpl string
	app  func(r appRow) (key string, ok bool)
}

// col checks "k:{c}" against "k:" + the application's text of c (parsed).
func col(c string) keyCheck {
	return keyCheck{"k:{" + c + "}", func(r appRow) (string, bool) {
		s, ok := appText(r.parsed[c])
		return "k:" + s, ok
	}}
}

// textCol is col for an application that reads with parseTime=false.
func textCol(c string) keyCheck {
	return keyCheck{"k:{" + c + "}", func(r appRow) (string, bool) {
		s, ok := appText(r.text[c])
		return "k:" + s, ok
	}}
}

// lower checks "k:{c|lower}" against strings.ToLower of the application's text.
func lower(c string) keyCheck {
	return keyCheck{"k:{" + c + "|lower}", func(r appRow) (string, bool) {
		s, ok := appText(r.parsed[c])
		return "k:" + strings.ToLower(s), ok
	}}
}

func cols(names ...string) []keyCheck {
	var out []keyCheck
	for _, n := range names {
		out = append(out, col(n))
	}
	return out
}

// appDB opens the application's connection to schema.
func appDB(t *testing.T, schema string, parseTime bool) *sql.DB {
	t.Helper()
	cfg := env.MySQLConfig(schema)
	cfg.ParseTime = parseTime
	cfg.Loc = time.UTC
	cfg.InterpolateParams = false
	cfg.Params = map[string]string{"time_zone": "'+00:00'"}
	db, err := sql.Open("mysql", cfg.FormatDSN())
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	return db
}

// selectAll reads every row of table, by its id column.
func selectAll(t *testing.T, db *sql.DB, table string) map[int64]map[string]any {
	t.Helper()
	rows, err := db.Query("SELECT * FROM " + table)
	require.NoError(t, err)
	defer rows.Close()
	names, err := rows.Columns()
	require.NoError(t, err)
	out := map[int64]map[string]any{}
	for rows.Next() {
		vals := make([]any, len(names))
		ptrs := make([]any, len(names))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		require.NoError(t, rows.Scan(ptrs...))
		m := map[string]any{}
		for i, n := range names {
			m[n] = vals[i]
		}
		out[m["id"].(int64)] = m
	}
	require.NoError(t, rows.Err())
	return out
}

// templateKeys returns the keys invalidate's template renders for row.
func templateKeys(t *testing.T, row binlog.Row, tmpl string) ([]string, error) {
	t.Helper()
	rs, err := invalidate.NewRules(invalidate.Rule{Schema: row.Schema, Table: row.Table, Keys: []string{tmpl}})
	require.NoError(t, err)
	return rs.Keys(row)
}

// writeAndRead creates the tables, runs the statements (one connection,
// so that a SET sql_mode holds for the rest), and returns the inserted
// rows of table as the stream delivered them and as SELECT returns them,
// by id.
func writeAndRead(t *testing.T, ddl []string, stmts []string, table string) (map[int64]binlog.Row, map[int64]appRow) {
	t.Helper()
	db, schema := env.NewDatabase(t)
	exec(t, db, ddl...)
	c := stream(t, rootConfig(t), nil, schema, masterPos(t, env.Admin()))
	conn, err := appDB(t, schema, true).Conn(context.Background())
	require.NoError(t, err)
	defer conn.Close()
	for _, q := range stmts {
		_, err := conn.ExecContext(context.Background(), q)
		require.NoError(t, err, q)
	}
	parsed := selectAll(t, appDB(t, schema, true), table)
	text := selectAll(t, appDB(t, schema, false), table)
	got := map[int64]binlog.Row{}
	for len(got) < len(parsed) {
		for _, r := range c.next().Rows {
			require.Equal(t, binlog.Insert, r.Op)
			got[r.After["id"].(int64)] = r
		}
	}
	app := map[int64]appRow{}
	for id := range parsed {
		app[id] = appRow{parsed[id], text[id]}
	}
	return got, app
}

// checkKeys asserts, for every row and check, that the template renders
// from the stream's row exactly the key the application renders.
func checkKeys(t *testing.T, rows map[int64]binlog.Row, app map[int64]appRow, checks []keyCheck) {
	t.Helper()
	require.Equal(t, len(app), len(rows))
	for id, row := range rows {
		for _, kc := range checks {
			got, err := templateKeys(t, row, kc.tmpl)
			if !assert.NoError(t, err, "row %d, template %s", id, kc.tmpl) {
				continue
			}
			want := []string{}
			if k, ok := kc.app(app[id]); ok {
				want = []string{k}
			}
			assert.Equal(t, want, got, "row %d, template %s", id, kc.tmpl)
		}
	}
}

func TestKeysFromText(t *testing.T) {
	t.Parallel()
	// The table's default is cp1251; most columns have a character set of
	// their own, and cy inherits the table's.
	rows, app := writeAndRead(t, []string{`CREATE TABLE txt (
		id INT NOT NULL,
		name VARCHAR(20) CHARACTER SET latin1 NOT NULL,
		l_char CHAR(10) CHARACTER SET latin1, l_text TEXT CHARACTER SET latin1,
		u3 VARCHAR(20) CHARACTER SET utf8mb3, u4 VARCHAR(20) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
		u4text MEDIUMTEXT CHARACTER SET utf8mb4, a VARCHAR(20) CHARACTER SET ascii, cy VARCHAR(20),
		gb VARCHAR(20) CHARACTER SET gbk, gbt TEXT CHARACTER SET gbk,
		bin VARBINARY(20), bn BINARY(4), bl BLOB,
		e ENUM('café', 'Bøb', 'x') CHARACTER SET latin1, s SET('é', 'ø', 'x') CHARACTER SET latin1,
		ecy ENUM('Жёлтый', 'b'), egb ENUM('中文', 'b') CHARACTER SET gbk,
		PRIMARY KEY (id, name)) DEFAULT CHARSET=cp1251`},
		[]string{
			`INSERT INTO txt VALUES (1, 'café', 'Bøb', 'naïve Grüße', 'ŝ€ñ', '😀 emoji', '𝄞', 'plain', 'Жёлтый €',
				'中文汉字', '龍', X'00FF', X'0102', X'', 'café', 'é,ø', 'Жёлтый', '中文')`,
			`INSERT INTO txt VALUES (2, '', '', '', '', '', '', '', '', '', '', '', '', '', 'x', '', 'b', 'b')`,
			`INSERT INTO txt (id, name) VALUES (3, 'NULLs')`,
			`INSERT INTO txt VALUES (4, 'a\0b', 'é\0', '\0ü', 'ä\0', '😀\0', '\0\0', '\0', 'Ж\0',
				'中\0', '\0', X'000000', X'00', X'00', 'Bøb', 'x,ø', 'b', 'b')`,
			`INSERT INTO txt VALUES (5, 'ÉCOLE Ÿ', 'ÀÉÎÕÜ', 'ÆØÅ', 'ĞŞİ', 'ΩΣ', 'ÉCOLE', 'MiXeD', 'ЖЁЛТЫЙ',
				'漢字', '中', X'FFFFFFFF', X'FFFFFFFF', X'FF00FF', 'café', 'é,ø,x', 'Жёлтый', '中文')`,
		}, "txt")
	require.Len(t, rows, 5)
	// What the issue saw: latin1 text arrived as "caf\xe9".
	assert.Equal(t, "café", rows[1].After["name"])
	assert.Equal(t, "Жёлтый €", rows[1].After["cy"])
	assert.Equal(t, "中文汉字", rows[1].After["gb"])
	assert.Equal(t, "é,ø", rows[1].After["s"])
	assert.Equal(t, []byte{0, 0xff}, rows[1].After["bin"], "binary stays bytes")
	checks := cols("name", "l_char", "l_text", "u3", "u4", "u4text", "a", "cy", "gb", "gbt", "bin", "bn", "bl",
		"e", "s", "ecy", "egb")
	checks = append(checks, lower("name"), lower("cy"), lower("e"), lower("u4"),
		keyCheck{"u:{id}:{name}", func(r appRow) (string, bool) {
			return fmt.Sprintf("u:%d:%s", r.parsed["id"], r.parsed["name"]), true
		}})
	checkKeys(t, rows, app, checks)
}

// TestEveryCharacterOfEveryCharset stores every byte of every single-byte
// character set the server has, and every two-byte character of gbk,
// euckr, gb2312, sjis and cp932, and reads them back with SELECT and
// from the stream.
func TestEveryCharacterOfEveryCharset(t *testing.T) {
	t.Parallel()
	var names []string
	rows, err := env.Admin().Query(`SELECT CHARACTER_SET_NAME FROM information_schema.CHARACTER_SETS
		WHERE MAXLEN = 1 AND CHARACTER_SET_NAME <> 'binary'
		OR CHARACTER_SET_NAME IN ('gbk', 'euckr', 'gb2312', 'sjis', 'cp932') ORDER BY 1`)
	require.NoError(t, err)
	for rows.Next() {
		var n string
		require.NoError(t, rows.Scan(&n))
		names = append(names, n)
	}
	require.NoError(t, rows.Err())
	require.Contains(t, names, "latin1")
	require.Contains(t, names, "cp1251")
	require.Contains(t, names, "gbk")
	require.Contains(t, names, "sjis")
	require.Greater(t, len(names), 25)

	var all []byte
	for b := range 256 {
		all = append(all, byte(b))
	}
	// The lead bytes of the two-byte character sets, from the server's
	// ismbchar functions.
	twoByte := map[string]func(byte) bool{
		"gbk":    func(b byte) bool { return b >= 0x81 && b <= 0xfe },
		"euckr":  func(b byte) bool { return b >= 0x81 && b <= 0xfe },
		"gb2312": func(b byte) bool { return b >= 0xa1 && b <= 0xf7 },
		"sjis":   func(b byte) bool { return b >= 0x81 && b <= 0x9f || b >= 0xe0 && b <= 0xfc },
		"cp932":  func(b byte) bool { return b >= 0x81 && b <= 0x9f || b >= 0xe0 && b <= 0xfc },
	}
	ddl := "CREATE TABLE every (id INT PRIMARY KEY"
	ins := "INSERT INTO every VALUES (1"
	for _, n := range names {
		ddl += fmt.Sprintf(", `%s` MEDIUMTEXT CHARACTER SET %s", n, n)
		b := all
		if lead := twoByte[n]; lead != nil {
			b = nil
			for c := range 256 {
				if !lead(byte(c)) {
					b = append(b, byte(c))
				}
			}
			for l := range 256 {
				for t := 0x40; t < 0x100 && lead(byte(l)); t++ {
					b = append(b, byte(l), byte(t))
				}
			}
		}
		ins += fmt.Sprintf(", CONVERT(X'%X' USING %s)", b, n)
	}
	got, app := writeAndRead(t, []string{ddl + ")"}, []string{"SET sql_mode = ''", ins + ")"}, "every")
	for _, n := range names {
		v := got[1].After[n]
		assert.IsType(t, "", v, "%s converted", n)
		assert.Equal(t, string(app[1].parsed[n].([]byte)), v, n)
	}
	checkKeys(t, got, app, cols(names...))
}

func TestKeysFromNumbers(t *testing.T) {
	t.Parallel()
	rows, app := writeAndRead(t, []string{`CREATE TABLE num (id INT PRIMARY KEY,
		ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, su SMALLINT UNSIGNED, mi MEDIUMINT, mu MEDIUMINT UNSIGNED,
		i INT, iu INT UNSIGNED, bi BIGINT, bu BIGINT UNSIGNED, y YEAR,
		d DECIMAL(65,30), d0 DECIMAL(10,0), du DECIMAL(5,2) UNSIGNED, f FLOAT, dbl DOUBLE, b64 BIT(64), b1 BIT(1))`},
		[]string{
			`INSERT INTO num VALUES (1, -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295,
				-9223372036854775808, 18446744073709551615, 2155,
				'-99999999999999999999999999999999999.999999999999999999999999999999', -9999999999, 999.99,
				-2.25, -1.7976931348623157e308, b'1111111111111111111111111111111111111111111111111111111111111111', b'1')`,
			`INSERT INTO num VALUES (2, 127, 0, 32767, 0, 8388607, 0, 2147483647, 0, 9223372036854775807, 0, 1901,
				'99999999999999999999999999999999999.999999999999999999999999999999', 0, 0, 0.1, 2.2250738585072014e-308, 0, 0)`,
			`INSERT INTO num VALUES (3, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0,
				'0.000000000000000000000000000001', 1, 0.01, 1.5, 0.1, b'1000000000000000000000000000000000000000000000000000000000000000', 0)`,
			`INSERT INTO num VALUES (4, -1, 254, -1, 65534, -1, 16777214, -1, 4294967294, -1, 18446744073709551614, 2024,
				'-0.5', -1, 1, 100, 1e300, 1, 1)`,
			`INSERT INTO num (id) VALUES (5)`,
		}, "num")
	checks := cols("ti", "tu", "si", "su", "mi", "mu", "i", "iu", "bi", "bu", "y", "d", "d0", "du", "f", "dbl")
	// BIT: the application gets the bytes (big-endian) and prints their number.
	for _, c := range []string{"b64", "b1"} {
		checks = append(checks, keyCheck{"k:{" + c + "}", func(r appRow) (string, bool) {
			b, ok := r.parsed[c].([]byte)
			if !ok {
				return "", false
			}
			var buf [8]byte
			copy(buf[8-len(b):], b)
			return "k:" + strconv.FormatUint(binary.BigEndian.Uint64(buf[:]), 10), true
		}})
	}
	checkKeys(t, rows, app, checks)
}

func TestKeysFromDatesAndTimes(t *testing.T) {
	t.Parallel()
	var ddl, vals []string
	for n := range 7 {
		ddl = append(ddl, fmt.Sprintf("dt%d DATETIME(%d), ts%d TIMESTAMP(%d) NULL, tm%d TIME(%d)", n, n, n, n, n, n))
	}
	row := func(id int, d, dt, ts, tm string) string {
		vals := []string{strconv.Itoa(id), d}
		for range 7 {
			vals = append(vals, dt, ts, tm)
		}
		return "INSERT INTO tm VALUES (" + strings.Join(vals, ", ") + ")"
	}
	vals = []string{
		"SET time_zone = '+00:00'",
		row(1, "'2024-02-29'", "'2024-02-29 13:14:15.123456'", "'2038-01-19 03:14:07.999999'", "'838:59:59'"),
		row(2, "'1000-01-01'", "'1000-01-01 00:00:00'", "'1970-01-01 00:00:01'", "'-838:59:59'"),
		row(3, "'9999-12-31'", "'9999-12-31 23:59:59.999999'", "'2024-06-01 12:00:00.5'", "'-00:00:00.5'"),
		row(4, "'1969-07-20'", "'1969-07-20 20:17:40.000001'", "'2001-09-09 01:46:40.100000'", "'00:00:00'"),
		row(5, "NULL", "NULL", "NULL", "'-12:34:56.780001'"),
		row(6, "'0000-01-01'", "'2024-01-01 00:00:00.1'", "'2024-01-01 00:00:00.01'", "'-00:00:01'"),
	}
	rows, app := writeAndRead(t, []string{"CREATE TABLE tm (id INT PRIMARY KEY, d DATE, " + strings.Join(ddl, ", ") + ")"},
		vals, "tm")
	names := []string{"d"}
	for n := range 7 {
		names = append(names, fmt.Sprintf("dt%d", n), fmt.Sprintf("ts%d", n), fmt.Sprintf("tm%d", n))
	}
	// TIME(3) with an all-zero fraction, which the decoder writes without one.
	assert.Equal(t, "838:59:59.000", rows[1].After["tm3"])
	assert.Equal(t, "-838:59:59.000000", rows[2].After["tm6"])
	checkKeys(t, rows, app, cols(names...))
}

// TestDatesThatAreNotCalendarDates: under ALLOW_INVALID_DATES and without
// NO_ZERO_DATE the server keeps dates that time.Date would roll over.
// The stream keeps them as the text SELECT returns (parseTime=false), and
// tells 0001-01-01 (a time.Time) from the zero date (text).
func TestDatesThatAreNotCalendarDates(t *testing.T) {
	t.Parallel()
	rows, app := writeAndRead(t, []string{"CREATE TABLE bad (id INT PRIMARY KEY, d DATE, dt DATETIME, dt3 DATETIME(3), ts TIMESTAMP(2) NULL)"},
		[]string{
			"SET sql_mode = 'ALLOW_INVALID_DATES', time_zone = '+00:00'",
			"INSERT INTO bad VALUES (1, '2024-02-30', '2024-02-30 10:00:00', '2023-02-29 23:59:59.999', '0000-00-00 00:00:00')",
			"INSERT INTO bad VALUES (2, '0000-00-00', '0000-00-00 00:00:00', '0000-00-00 00:00:00', NULL)",
			"SET sql_mode = ''",
			"INSERT INTO bad VALUES (3, '2024-00-10', '2024-05-00 01:02:03', '0000-00-00 00:00:00.001', NULL)",
		}, "bad")
	assert.Equal(t, "2024-02-30", rows[1].After["d"], "not rolled over to 2024-03-01")
	assert.Equal(t, "2024-02-30 10:00:00", rows[1].After["dt"])
	assert.Equal(t, "2023-02-29 23:59:59.999", rows[1].After["dt3"])
	assert.Equal(t, "0000-00-00 00:00:00.00", rows[1].After["ts"])
	assert.Equal(t, "0000-00-00", rows[2].After["d"])
	assert.Equal(t, "0000-00-00 00:00:00.000", rows[2].After["dt3"])
	checkKeys(t, rows, app, []keyCheck{textCol("d"), textCol("dt"), textCol("dt3"), textCol("ts")})
	// A template that needs a time refuses the text: the invalidator then
	// invalidates the whole table instead of building a wrong key.
	_, err := templateKeys(t, rows[1], "k:{d|unix}")
	assert.ErrorContains(t, err, "applies to times")

	// 0001-01-01 and the zero date are told apart.
	rows2, _ := writeAndRead(t, []string{"CREATE TABLE first (id INT PRIMARY KEY, d DATE)"},
		[]string{"INSERT INTO first VALUES (1, '0001-01-01'), (2, '0000-00-00')"}, "first")
	assert.Equal(t, time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), rows2[1].After["d"])
	assert.Equal(t, "0000-00-00", rows2[2].After["d"])
}

func TestKeysFromMariaDBTypes(t *testing.T) {
	t.Parallel()
	inet6 := []string{"::", "::1", "::ffff:1.2.3.4", "::1.2.3.4", "2001:db8::1", "1:0:2:3:4:5:6:7", "1:0:0:2:0:0:0:3",
		"1:0:0:2:0:0:3:4", "fe80::1:2", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::ffff:0.0.0.0", "::0.0.0.2",
		"0:0:0:0:1::", "1::", "::ffff:ffff:0:1"}
	uuids := []string{"00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff",
		"6ccd780c-baba-1026-9564-5b8c656024db", "f47ac10b-58cc-4372-a567-0e02b2c3d479",
		"01020304-0506-0708-090a-0b0c0d0e0f10", "01020304-0506-7708-c90a-0b0c0d0e0f10"}
	inet4 := []string{"0.0.0.0", "255.255.255.255", "10.0.0.1", "1.2.3.4"}
	geoms := []string{"POINT(1 2)", "LINESTRING(0 0,1 1,2 0)", "POLYGON((0 0,4 0,4 4,0 4,0 0))", "MULTIPOINT(1 1,2 2)",
		"MULTILINESTRING((0 0,1 1),(2 2,3 3))", "MULTIPOLYGON(((0 0,1 0,1 1,0 0)))", "GEOMETRYCOLLECTION(POINT(1 1))"}
	var stmts []string
	for i := range 15 {
		g := geoms[i%len(geoms)]
		stmts = append(stmts, fmt.Sprintf(
			"INSERT INTO mt VALUES (%d, '%s', '%s', '%s', ST_GeomFromText('%s'), ST_GeomFromText('%s', 4326), ST_GeomFromText('POINT(%d -0.5)'), X'%032X')",
			i, inet6[i], uuids[i%len(uuids)], inet4[i%len(inet4)], g, g, i, i))
	}
	stmts = append(stmts, "INSERT INTO mt (id) VALUES (100)")
	rows, app := writeAndRead(t, []string{`CREATE TABLE mt (id INT PRIMARY KEY, i6 INET6, u UUID, i4 INET4,
		g GEOMETRY, gs GEOMETRY, p POINT, b16 BINARY(16))`}, stmts, "mt")
	assert.Equal(t, "::ffff:1.2.3.4", rows[2].After["i6"])
	assert.Equal(t, make([]byte, 16), rows[0].After["b16"], "a plain BINARY(16) stays bytes")
	checkKeys(t, rows, app, cols("i6", "u", "i4", "g", "gs", "p", "b16"))
}

// TestAlterModifyMidStream changes a column's type between two row
// events: each event is read with the types it was written with, by a
// stream that keeps up and by one that reads after the ALTER.
func TestAlterModifyMidStream(t *testing.T) {
	t.Parallel()
	db, schema := env.NewDatabase(t)
	exec(t, db, "CREATE TABLE m (id INT PRIMARY KEY, v INT)")
	from := masterPos(t, env.Admin())
	live := stream(t, rootConfig(t), nil, schema, from)
	exec(t, db, "INSERT INTO m VALUES (1, -42)",
		"ALTER TABLE m MODIFY v VARCHAR(10) CHARACTER SET latin1",
		"INSERT INTO m VALUES (2, 'café')",
		"UPDATE m SET v = 'Bøb' WHERE id = 1",
		"DELETE FROM m",
		"ALTER TABLE m MODIFY v INET6",
		"INSERT INTO m VALUES (3, '::1')")
	check := func(c *collector) {
		t.Helper()
		assert.Equal(t, map[string]any{"id": int64(1), "v": int64(-42)}, c.next().Rows[0].After)
		assert.Equal(t, binlog.Alter, c.next().Changes[0].Kind)
		assert.Equal(t, map[string]any{"id": int64(2), "v": "café"}, c.next().Rows[0].After)
		r := c.next().Rows[0]
		assert.Equal(t, map[string]any{"id": int64(1), "v": "-42"}, r.Before)
		assert.Equal(t, map[string]any{"id": int64(1), "v": "Bøb"}, r.After)
		assert.Len(t, c.next().Rows, 2)
		assert.Equal(t, binlog.Alter, c.next().Changes[0].Kind)
		assert.Equal(t, map[string]any{"id": int64(3), "v": "::1"}, c.next().Rows[0].After)
	}
	check(live)
	check(stream(t, rootConfig(t), nil, schema, from))
}

// TestLowerCaseTableNames runs on a server with lower_case_table_names=1,
// where row events name tables in lower case: the names of table-wide
// changes must be too, whatever the statement's spelling, or a rule for
// the table never sees its TRUNCATE.
func TestLowerCaseTableNames(t *testing.T) {
	t.Parallel()
	m, admin := startMySQL(t, "--lower-case-table-names=1")
	exec(t, admin, "CREATE DATABASE App", "CREATE TABLE App.Users (id INT PRIMARY KEY)")
	c := stream(t, serverConfig(m), nil, "app", masterPos(t, admin))
	exec(t, admin, "INSERT INTO APP.USERS VALUES (1)")
	r := c.next().Rows[0]
	assert.Equal(t, [2]string{"app", "users"}, [2]string{r.Schema, r.Table})

	conn, err := admin.Conn(context.Background())
	require.NoError(t, err)
	defer conn.Close()
	for _, q := range []string{"USE App", "TRUNCATE TABLE Users", "ALTER TABLE App.USERS ADD COLUMN n INT",
		"RENAME TABLE Users TO People, App.People TO App.Users", "DROP TABLE `USERS`"} {
		_, err := conn.ExecContext(context.Background(), q)
		require.NoError(t, err, q)
		if strings.HasPrefix(q, "USE") {
			continue
		}
		ch := c.next().Changes
		require.NotEmpty(t, ch, q)
		for _, x := range ch {
			assert.Equal(t, "app", x.Schema, q)
			assert.Contains(t, []string{"users", "people"}, x.Table, q)
		}
	}
	exec(t, admin, "CREATE TABLE App.Users (id INT PRIMARY KEY)")
	// A rule in the application's spelling matches the lower-case names
	// once Check has read the setting.
	rules, err := invalidate.NewRules(invalidate.Rule{Schema: "App", Table: "Users", Keys: []string{"user:{id}"}})
	require.NoError(t, err)
	assert.False(t, rules.Watches("app", "users"), "names are matched exactly before Check")
	require.NoError(t, rules.Check(context.Background(), admin))
	ns, _ := rules.TableWide("app", "users")
	assert.Equal(t, []string{"user"}, ns)
	keys, err := rules.Keys(binlog.Row{Schema: "app", Table: "users", Op: binlog.Insert, After: map[string]any{"id": int64(1)}})
	require.NoError(t, err)
	assert.Equal(t, []string{"user:1"}, keys)
}

// TestUnconvertedTextInvalidatesTheTable: text in a character set the
// stream does not convert (ujis: characters of up to three bytes) arrives
// as binlog.Raw, and a template refuses it, so the invalidator falls back
// to the table-wide bump instead of a key nobody reads.
func TestUnconvertedTextInvalidatesTheTable(t *testing.T) {
	t.Parallel()
	rows, app := writeAndRead(t, []string{"CREATE TABLE j (id INT PRIMARY KEY, name VARCHAR(10) CHARACTER SET ujis, u VARCHAR(10))"},
		[]string{"INSERT INTO j VALUES (1, 'あい', 'x')"}, "j")
	raw, ok := rows[1].After["name"].(binlog.Raw)
	require.True(t, ok, "got %T", rows[1].After["name"])
	assert.Equal(t, []byte("\xa4\xa2\xa4\xa4"), raw.Data)
	assert.Equal(t, "あい", string(app[1].parsed["name"].([]byte)))
	_, err := templateKeys(t, rows[1], "k:{name}")
	assert.ErrorContains(t, err, "text in character set ujis")
	checkKeys(t, rows, app, cols("u"))
}

// TestUnconvertedValueBumpsTheTable runs the invalidator on a table whose
// key names a ujis column, which the stream delivers as Raw: the update
// reaches the application's key through the table-wide bump. (A template
// that printed Raw's bytes would invalidate "j:name:\xa4\xa2\xa4\xa4",
// a key nobody reads, and the cached row would stay.)
func TestUnconvertedValueBumpsTheTable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, schema := env.NewDatabase(t)
	exec(t, db, "CREATE TABLE j (id INT PRIMARY KEY, name VARCHAR(10) CHARACTER SET ujis)",
		"CREATE TABLE marker (id INT PRIMARY KEY)", "INSERT INTO j VALUES (1, 'あい')")
	rdb, prefix := env.RedisClient(t), env.Prefix(t)
	c, err := cache.New(rdb, &cache.Options{Prefix: prefix})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	rules, err := invalidate.NewRules(
		invalidate.Rule{Schema: schema, Table: "j", Keys: []string{prefix + "j:name:{name}"}},
		invalidate.Rule{Schema: schema, Table: "marker", Keys: []string{prefix + "marker:{id}"}})
	require.NoError(t, err)
	s, err := binlog.New(rootConfig(t), nil)
	require.NoError(t, err)
	applied := make(chan invalidate.Applied, 1000)
	inv := invalidate.New(s, c, rdb, rules, &invalidate.Options{
		LeaderKey: prefix + "leader", Checkpoints: binlog.NewRedisCheckpoints(rdb, prefix+"checkpoint"),
		LeaderTTL: time.Second, OnApplied: func(a invalidate.Applied) { applied <- a },
	})
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- inv.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	// waitFor returns once a transaction touching table has been applied.
	waitFor := func(table string) {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for {
			select {
			case a := <-applied:
				for _, r := range a.Tx.Rows {
					if r.Table == table {
						return
					}
				}
			case <-timeout:
				t.Fatalf("no transaction on %s applied within 30s", table)
			}
		}
	}
	// Streaming has started once a marker row is applied; a marker
	// committed before the stream settled on its start is never seen, so
	// write one every half second.
	markers := make(chan struct{})
	go func() {
		for id := 1; ; id++ {
			if _, err := db.Exec("INSERT INTO marker VALUES (?)", id); err != nil {
				return
			}
			select {
			case <-markers:
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
	waitFor("marker")
	close(markers)

	key := prefix + "j:name:あい" // the application's key, from its SELECT
	var loads atomic.Int64
	load := func(context.Context) (string, error) { return fmt.Sprintf("row, load %d", loads.Add(1)), nil }
	v, err := cache.Fetch(ctx, c, key, load)
	require.NoError(t, err)
	require.Equal(t, "row, load 1", v)
	v, err = cache.Fetch(ctx, c, key, load)
	require.NoError(t, err)
	require.Equal(t, "row, load 1", v, "cached")

	exec(t, db, "UPDATE j SET name = 'あい', id = 2 WHERE id = 1")
	waitFor("j")
	v, err = cache.Fetch(ctx, c, key, load)
	require.NoError(t, err)
	assert.Equal(t, "row, load 2", v, "the update invalidated the application's key")
}

// TestFloatKeys pins note 3 of the package documentation: the stream has
// a FLOAT's stored value, which the application reads exactly only with
// prepared statements; over the text protocol the server rounds it to 6
// significant digits.
func TestFloatKeys(t *testing.T) {
	t.Parallel()
	db, schema := env.NewDatabase(t)
	exec(t, db, "CREATE TABLE fl (id INT PRIMARY KEY, f FLOAT)")
	c := stream(t, rootConfig(t), nil, schema, masterPos(t, env.Admin()))
	exec(t, db, "INSERT INTO fl VALUES (1, 3.402823e38), (2, -1.175494e-38), (3, 1.2345678), (4, 0.1)")
	rows := c.next().Rows
	require.Len(t, rows, 4)
	app := appDB(t, schema, true)
	for _, r := range rows {
		id := r.After["id"].(int64)
		got, err := templateKeys(t, r, "k:{f}")
		require.NoError(t, err)
		var prepared, text any
		require.NoError(t, app.QueryRow("SELECT f FROM fl WHERE id = ?", id).Scan(&prepared))
		require.NoError(t, app.QueryRow("SELECT f FROM fl WHERE id = "+strconv.FormatInt(id, 10)).Scan(&text))
		p, _ := appText(prepared)
		assert.Equal(t, []string{"k:" + p}, got, "row %d, prepared statement", id)
		tx, _ := appText(text)
		if id == 4 {
			assert.Equal(t, []string{"k:" + tx}, got, "0.1 has fewer than 7 digits: the text protocol agrees")
		} else {
			assert.NotEqual(t, []string{"k:" + tx}, got, "row %d: the text protocol rounds", id)
		}
	}
}
