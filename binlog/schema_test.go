package binlog_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/binlog"
)

// TestMinimalMetadata runs against a server that logs no column names:
// names come from information_schema, checked against every event, and a
// table whose events no longer match the live schema becomes a table-wide
// change instead of rows with wrong names.
func TestMinimalMetadata(t *testing.T) {
	t.Parallel()
	m, admin := startMySQL(t, "--binlog-row-metadata=MINIMAL")
	exec(t, admin, "CREATE DATABASE d",
		"CREATE TABLE d.t (id INT UNSIGNED NOT NULL, e ENUM('x','y'), b VARBINARY(4), s VARCHAR(10), PRIMARY KEY (id))")
	from := masterPos(t, admin)
	exec(t, admin,
		"INSERT INTO d.t VALUES (4294967295, 'y', X'01', 'a')",
		"ALTER TABLE d.t ADD COLUMN n INT NOT NULL DEFAULT 0 AFTER id",
		"INSERT INTO d.t VALUES (1, 5, 'x', X'02', 'b')",
		"ALTER TABLE d.t DROP COLUMN s",
		"INSERT INTO d.t VALUES (2, 6, 'x', X'03')")

	// Read the events after all the DDL: the first two inserts were
	// written with other columns than the table has now.
	lagging := stream(t, serverConfig(m), nil, "d", from)
	tx := lagging.next()
	assert.Empty(t, tx.Rows, "the live schema has the same column count but other types: no rows")
	assert.Equal(t, []binlog.TableChange{{Schema: "d", Table: "t", Kind: binlog.Unknown}}, tx.Changes)
	assert.Equal(t, binlog.Alter, lagging.next().Changes[0].Kind)
	tx = lagging.next()
	assert.Empty(t, tx.Rows, "one more column than the live schema: no rows")
	assert.Equal(t, []binlog.TableChange{{Schema: "d", Table: "t", Kind: binlog.Unknown}}, tx.Changes)
	assert.Equal(t, binlog.Alter, lagging.next().Changes[0].Kind)
	tx = lagging.next()
	require.Len(t, tx.Rows, 1, "the events match the live schema again")
	assert.Equal(t, map[string]any{"id": uint64(2), "n": int64(6), "e": "x", "b": []byte{3}}, tx.Rows[0].After)
	assert.Equal(t, []string{"id"}, tx.Rows[0].PrimaryKey)

	// A stream that keeps up reads the schema again after each DDL. (Each
	// event is read before the next statement runs: a stream behind the
	// ALTER would see the table-wide change above instead.)
	live := stream(t, serverConfig(m), nil, "d", masterPos(t, admin))
	exec(t, admin, "INSERT INTO d.t VALUES (4294967294, -1, 'y', X'FF')")
	assert.Equal(t, map[string]any{"id": uint64(4294967294), "n": int64(-1), "e": "y", "b": []byte{0xFF}}, live.next().Rows[0].After)
	exec(t, admin, "ALTER TABLE d.t ADD COLUMN z VARCHAR(5) FIRST")
	assert.Equal(t, binlog.Alter, live.next().Changes[0].Kind)
	exec(t, admin, "UPDATE d.t SET z = 'zz' WHERE id = 2")
	tx = live.next()
	require.Len(t, tx.Rows, 1)
	assert.Equal(t, map[string]any{"z": nil, "id": uint64(2), "n": int64(6), "e": "x", "b": []byte{3}}, tx.Rows[0].Before)
	assert.Equal(t, "zz", tx.Rows[0].After["z"])
}

// TestMinimalMetadataCharsets: without charsets in the log, text is
// converted from the character set information_schema names, read again
// after each DDL; a lagging stream that meets a column whose byte length
// changed with its character set reports the table instead of
// converting from the wrong one.
func TestMinimalMetadataCharsets(t *testing.T) {
	t.Parallel()
	m, admin := startMySQL(t, "--binlog-row-metadata=MINIMAL")
	exec(t, admin, "CREATE DATABASE d", `CREATE TABLE d.t (id INT PRIMARY KEY, l VARCHAR(10) CHARACTER SET latin1,
		c CHAR(4) CHARACTER SET cp1251, g TEXT CHARACTER SET gbk, e ENUM('café', 'x') CHARACTER SET latin1,
		u VARCHAR(10) CHARACTER SET utf8mb4, b VARBINARY(4)) DEFAULT CHARSET=latin1`)
	from := masterPos(t, admin)
	live := stream(t, serverConfig(m), nil, "d", from)
	exec(t, admin, "INSERT INTO d.t VALUES (1, 'café', 'Жё', '中文', 'café', '😀', X'E9')")
	assert.Equal(t, map[string]any{"id": int64(1), "l": "café", "c": "Жё", "g": "中文", "e": "café", "u": "😀", "b": []byte{0xe9}},
		live.next().Rows[0].After)
	exec(t, admin, "ALTER TABLE d.t MODIFY l VARCHAR(10) CHARACTER SET utf8mb4")
	assert.Equal(t, binlog.Alter, live.next().Changes[0].Kind)
	exec(t, admin, "INSERT INTO d.t VALUES (2, 'Жё😀', 'Ж', '文', 'x', 'é', X'')")
	assert.Equal(t, map[string]any{"id": int64(2), "l": "Жё😀", "c": "Ж", "g": "文", "e": "x", "u": "é", "b": []byte{}},
		live.next().Rows[0].After)

	// Read again after the ALTER: the first insert's l is latin1 VARCHAR(10),
	// ten bytes, where the live column is utf8mb4, forty.
	lagging := stream(t, serverConfig(m), nil, "d", from)
	tx := lagging.next()
	assert.Empty(t, tx.Rows)
	assert.Equal(t, []binlog.TableChange{{Schema: "d", Table: "t", Kind: binlog.Unknown}}, tx.Changes)
}
