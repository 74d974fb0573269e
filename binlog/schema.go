package binlog

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
)

// schemaCache reads column names from information_schema for servers that
// do not log them (binlog_row_metadata=MINIMAL, or servers older than MySQL
// 8.0.1 and MariaDB 10.5). The live schema may be newer than the event
// being read (the stream lags behind a later ALTER), so every answer is
// checked against the event's own table map: the column count and the
// type of every column must agree. A DDL event for the table drops the
// cached answer.
//
// What the check cannot see: a DDL that keeps the column count and every
// column's type but renames or reorders columns, applied to the live
// schema while the stream still reads older events. Use
// binlog_row_metadata=FULL to rule that out.
type schemaCache struct {
	db       *sql.DB
	tables   map[[2]string]*schemaTable
	charsets *charsets
}

type schemaTable struct {
	cols []schemaCol
	pk   []string
}

type schemaCol struct {
	name     string
	dataType string // information_schema DATA_TYPE, lower case
	unsigned bool
	binary   bool
	charset  string   // CHARACTER_SET_NAME, lower case; "" for non-text columns
	octets   int64    // CHARACTER_OCTET_LENGTH; 0 for non-text columns
	values   []string // ENUM and SET names
}

func newSchemaCache(db *sql.DB) *schemaCache {
	return &schemaCache{db: db, tables: make(map[[2]string]*schemaTable), charsets: newCharsets(db)}
}

func (c *schemaCache) forget(schema, table string) {
	for k := range c.tables {
		if schema == "" || (k[0] == schema && (table == "" || k[1] == table)) {
			delete(c.tables, k)
		}
	}
}

// matching returns the table's columns when they match tm, reading
// information_schema again once if the cached answer does not; nil when
// they still do not match.
func (c *schemaCache) matching(ctx context.Context, tm *replication.TableMapEvent) (*schemaTable, error) {
	key := [2]string{string(tm.Schema), string(tm.Table)}
	if st := c.tables[key]; st != nil && st.matches(tm) {
		return st, nil
	}
	st, err := c.read(ctx, key[0], key[1])
	if err != nil {
		return nil, err
	}
	c.tables[key] = st
	if !st.matches(tm) {
		return nil, nil
	}
	return st, nil
}

func (c *schemaCache) read(ctx context.Context, schema, table string) (*schemaTable, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, COALESCE(COLLATION_NAME, ''),
		COALESCE(CHARACTER_SET_NAME, ''), COALESCE(CHARACTER_OCTET_LENGTH, 0)
		FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION`, schema, table)
	if err != nil {
		return nil, fmt.Errorf("binlog: read columns of %s.%s: %w", schema, table, err)
	}
	st := &schemaTable{}
	for rows.Next() {
		var col schemaCol
		var colType, collation string
		if err := rows.Scan(&col.name, &col.dataType, &colType, &collation, &col.charset, &col.octets); err != nil {
			rows.Close()
			return nil, fmt.Errorf("binlog: read columns of %s.%s: %w", schema, table, err)
		}
		col.dataType = strings.ToLower(col.dataType)
		col.charset = strings.ToLower(col.charset)
		col.unsigned = strings.Contains(strings.ToLower(colType), "unsigned")
		switch col.dataType {
		case "binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob":
			col.binary = true
		default:
			col.binary = collation == "binary"
		}
		if col.dataType == "enum" || col.dataType == "set" {
			col.values = enumValues(colType)
		}
		st.cols = append(st.cols, col)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("binlog: read columns of %s.%s: %w", schema, table, err)
	}
	rows, err = c.db.QueryContext(ctx, `SELECT COLUMN_NAME FROM information_schema.STATISTICS
		WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX`, schema, table)
	if err != nil {
		return nil, fmt.Errorf("binlog: read primary key of %s.%s: %w", schema, table, err)
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, fmt.Errorf("binlog: read primary key of %s.%s: %w", schema, table, err)
		}
		st.pk = append(st.pk, name)
	}
	return st, rows.Err()
}

// matches reports whether the table map has as many columns as st, each
// column's binary log type fits its information_schema type, and each
// CHAR and VARCHAR column has the byte length the live one has: a change
// of character set that changes it (latin1 to utf8mb4) shows there, so
// the text is not converted from the wrong character set.
func (st *schemaTable) matches(tm *replication.TableMapEvent) bool {
	if len(st.cols) != int(tm.ColumnCount) {
		return false
	}
	for i := range st.cols {
		t := realType(tm, i)
		if !typeFits(t, st.cols[i].dataType) {
			return false
		}
		if octets := st.cols[i].octets; octets > 0 {
			switch t {
			case mysql.MYSQL_TYPE_VARCHAR, mysql.MYSQL_TYPE_VAR_STRING:
				if int64(tm.ColumnMeta[i]) != octets {
					return false
				}
			case mysql.MYSQL_TYPE_STRING:
				if int64(fixedLength(tm.ColumnMeta[i])) != octets {
					return false
				}
			}
		}
	}
	return true
}

// sameNames reports whether st names the columns as tm does.
func (st *schemaTable) sameNames(tm *replication.TableMapEvent) bool {
	for i := range st.cols {
		if i >= len(tm.ColumnName) || st.cols[i].name != string(tm.ColumnName[i]) {
			return false
		}
	}
	return true
}

// typeFits reports whether a column of binary log type t can be of
// information_schema DATA_TYPE dt. Types this table does not know (plugin
// types of later servers) fit anything.
func typeFits(t byte, dt string) bool {
	want, known := dataTypes[dt]
	if !known {
		return true
	}
	if t == mysql.MYSQL_TYPE_NEWDATE {
		t = mysql.MYSQL_TYPE_DATE
	}
	for _, w := range want {
		if w == t {
			return true
		}
	}
	return false
}

var (
	blobTypes     = []byte{mysql.MYSQL_TYPE_BLOB, mysql.MYSQL_TYPE_TINY_BLOB, mysql.MYSQL_TYPE_MEDIUM_BLOB, mysql.MYSQL_TYPE_LONG_BLOB}
	varcharTypes  = []byte{mysql.MYSQL_TYPE_VARCHAR, mysql.MYSQL_TYPE_VAR_STRING}
	geometryTypes = []byte{mysql.MYSQL_TYPE_GEOMETRY}
)

var dataTypes = map[string][]byte{
	"tinyint":            {mysql.MYSQL_TYPE_TINY},
	"smallint":           {mysql.MYSQL_TYPE_SHORT},
	"mediumint":          {mysql.MYSQL_TYPE_INT24},
	"int":                {mysql.MYSQL_TYPE_LONG},
	"integer":            {mysql.MYSQL_TYPE_LONG},
	"bigint":             {mysql.MYSQL_TYPE_LONGLONG},
	"decimal":            {mysql.MYSQL_TYPE_NEWDECIMAL, mysql.MYSQL_TYPE_DECIMAL},
	"float":              {mysql.MYSQL_TYPE_FLOAT},
	"double":             {mysql.MYSQL_TYPE_DOUBLE},
	"bit":                {mysql.MYSQL_TYPE_BIT},
	"year":               {mysql.MYSQL_TYPE_YEAR},
	"date":               {mysql.MYSQL_TYPE_DATE},
	"time":               {mysql.MYSQL_TYPE_TIME, mysql.MYSQL_TYPE_TIME2},
	"datetime":           {mysql.MYSQL_TYPE_DATETIME, mysql.MYSQL_TYPE_DATETIME2},
	"timestamp":          {mysql.MYSQL_TYPE_TIMESTAMP, mysql.MYSQL_TYPE_TIMESTAMP2},
	"enum":               {mysql.MYSQL_TYPE_ENUM},
	"set":                {mysql.MYSQL_TYPE_SET},
	"char":               {mysql.MYSQL_TYPE_STRING},
	"inet6":              {mysql.MYSQL_TYPE_STRING},
	"inet4":              {mysql.MYSQL_TYPE_STRING},
	"uuid":               {mysql.MYSQL_TYPE_STRING},
	"binary":             {mysql.MYSQL_TYPE_STRING},
	"varchar":            varcharTypes,
	"varbinary":          varcharTypes,
	"tinytext":           blobTypes,
	"text":               blobTypes,
	"mediumtext":         blobTypes,
	"longtext":           blobTypes,
	"tinyblob":           blobTypes,
	"blob":               blobTypes,
	"mediumblob":         blobTypes,
	"longblob":           blobTypes,
	"json":               append([]byte{mysql.MYSQL_TYPE_JSON}, blobTypes...),
	"geometry":           geometryTypes,
	"point":              geometryTypes,
	"linestring":         geometryTypes,
	"polygon":            geometryTypes,
	"multipoint":         geometryTypes,
	"multilinestring":    geometryTypes,
	"multipolygon":       geometryTypes,
	"geometrycollection": geometryTypes,
	"geomcollection":     geometryTypes,
}

// enumValues reads the names from a COLUMN_TYPE like enum('a','b'), where
// a quote inside a name is doubled.
func enumValues(colType string) []string {
	open := strings.IndexByte(colType, '(')
	if open < 0 {
		return nil
	}
	var out []string
	s := colType[open+1:]
	for {
		i := strings.IndexByte(s, '\'')
		if i < 0 {
			return out
		}
		s = s[i+1:]
		var b strings.Builder
		for len(s) > 0 {
			if s[0] == '\'' {
				if len(s) > 1 && s[1] == '\'' {
					b.WriteByte('\'')
					s = s[2:]
					continue
				}
				s = s[1:]
				break
			}
			if s[0] == '\\' && len(s) > 1 {
				b.WriteByte(s[1])
				s = s[2:]
				continue
			}
			b.WriteByte(s[0])
			s = s[1:]
		}
		out = append(out, b.String())
	}
}
