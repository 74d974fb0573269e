package binlog

import (
	"bytes"
	"context"
	"fmt"
	"slices"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
)

// binaryCollation is the collation id of binary strings (BINARY, VARBINARY, BLOB).
const binaryCollation = 63

// maxTables bounds the table maps a decoder remembers.
const maxTables = 4096

// decoder maps row events to Rows. Column names come from the table map
// (binlog_row_metadata=FULL) or, where the server does not log them, from
// information_schema, checked against each table map: a table whose
// mapping cannot be confirmed becomes a table-wide change, never a row
// with the wrong column names.
type decoder struct {
	schema  *schemaCache // nil when the server logs full metadata and none is missing
	include func(schema, table string) bool
	tables  map[uint64]*tableInfo // by table id
}

// tableInfo is what the decoder knows about one table map.
type tableInfo struct {
	tm            *replication.TableMapEvent
	schema, table string
	skip          bool     // excluded by Options.Include
	names         []string // nil when the mapping is unknown
	pk            []string
	cols          []column
}

type colKind uint8

const (
	kAsIs colKind = iota
	kInt
	kFloat
	kDateTime
	kDate
	kText
	kBinary
	kEnum
	kSet
	kBit
	kTime
	kInet6
	kInet4
	kUUID
)

type column struct {
	kind     colKind
	typ      byte     // the real column type
	signed2u bool     // decoded as signed, but the column is unsigned
	padTo    int      // BINARY(n): the log drops trailing zero bytes that SELECT returns
	dec      int      // TIME(n): the digits of the fraction
	values   []string // ENUM and SET names, in UTF-8
	// cs converts text that is not stored in UTF-8; nil for UTF-8.
	cs *charset
	// raw, when set, says why the column's values cannot be converted
	// exactly: they are delivered as Raw.
	raw string

	// Where the character set comes from, until describe resolves it.
	collation int    // from the table map; 0 when it has none
	csName    string // from information_schema
	rawNames  bool   // values are the table map's names, in the column's character set
}

func newDecoder(schema *schemaCache, include func(schema, table string) bool) *decoder {
	return &decoder{schema: schema, include: include, tables: make(map[uint64]*tableInfo)}
}

// forget drops what is known about the tables of changes, so that the
// next table map is checked afresh.
func (d *decoder) forget(changes []TableChange) {
	for _, c := range changes {
		for id, ti := range d.tables {
			if c.Schema == "" || (ti.schema == c.Schema && (c.Table == "" || ti.table == c.Table)) {
				delete(d.tables, id)
			}
		}
		if d.schema != nil {
			d.schema.forget(c.Schema, c.Table)
		}
	}
}

// rows decodes e. It returns the rows, or a table-wide change when the
// columns of the table cannot be named with confidence.
func (d *decoder) rows(ctx context.Context, e *replication.RowsEvent) ([]Row, *TableChange, error) {
	ti, err := d.table(ctx, e.Table)
	if err != nil || ti.skip {
		return nil, nil, err
	}
	if ti.names == nil {
		return nil, &TableChange{Schema: ti.schema, Table: ti.table, Kind: Unknown}, nil
	}
	var op Op
	switch e.Type() {
	case replication.EnumRowsEventTypeInsert:
		op = Insert
	case replication.EnumRowsEventTypeUpdate:
		op = Update
	case replication.EnumRowsEventTypeDelete:
		op = Delete
	default:
		return nil, &TableChange{Schema: ti.schema, Table: ti.table, Kind: Unknown}, nil
	}
	step := 1
	if op == Update {
		step = 2
	}
	out := make([]Row, 0, len(e.Rows)/step)
	for i := 0; i+step <= len(e.Rows); i += step {
		r := Row{Schema: ti.schema, Table: ti.table, Op: op, PrimaryKey: ti.pk}
		img := ti.image(e.Rows[i], skipped(e, i))
		switch op {
		case Insert:
			r.After = img
		case Delete:
			r.Before = img
		case Update:
			r.Before = img
			r.After = ti.image(e.Rows[i+1], skipped(e, i+1))
		}
		out = append(out, r)
	}
	return out, nil, nil
}

func skipped(e *replication.RowsEvent, i int) []int {
	if i < len(e.SkippedColumns) {
		return e.SkippedColumns[i]
	}
	return nil
}

func (ti *tableInfo) image(row []any, skip []int) map[string]any {
	m := make(map[string]any, len(row))
	for i, v := range row {
		if len(skip) > 0 && slices.Contains(skip, i) {
			continue
		}
		m[ti.names[i]] = ti.cols[i].value(v)
	}
	return m
}

// table returns the table info for tm, reusing the last one for the same
// table id when the table map is the same.
func (d *decoder) table(ctx context.Context, tm *replication.TableMapEvent) (*tableInfo, error) {
	if ti := d.tables[tm.TableID]; ti != nil && (ti.tm == tm || sameTableMap(ti.tm, tm)) {
		ti.tm = tm
		return ti, nil
	}
	ti := &tableInfo{tm: tm, schema: string(tm.Schema), table: string(tm.Table)}
	ti.skip = !d.include(ti.schema, ti.table)
	if !ti.skip {
		if err := d.describe(ctx, ti); err != nil {
			return nil, err
		}
	}
	if len(d.tables) >= maxTables {
		clear(d.tables) // ids of reopened tables pile up in a long session
	}
	d.tables[tm.TableID] = ti
	return ti, nil
}

func sameTableMap(a, b *replication.TableMapEvent) bool {
	if !bytes.Equal(a.Schema, b.Schema) || !bytes.Equal(a.Table, b.Table) || a.ColumnCount != b.ColumnCount ||
		!bytes.Equal(a.ColumnType, b.ColumnType) || !slices.Equal(a.ColumnMeta, b.ColumnMeta) ||
		!bytes.Equal(a.SignednessBitmap, b.SignednessBitmap) || !slices.Equal(a.DefaultCharset, b.DefaultCharset) ||
		!slices.Equal(a.ColumnCharset, b.ColumnCharset) || !slices.Equal(a.PrimaryKey, b.PrimaryKey) ||
		len(a.ColumnName) != len(b.ColumnName) || len(a.EnumStrValue) != len(b.EnumStrValue) ||
		len(a.SetStrValue) != len(b.SetStrValue) {
		return false
	}
	for i := range a.ColumnName {
		if !bytes.Equal(a.ColumnName[i], b.ColumnName[i]) {
			return false
		}
	}
	return sameStrValues(a.EnumStrValue, b.EnumStrValue) && sameStrValues(a.SetStrValue, b.SetStrValue)
}

func sameStrValues(a, b [][][]byte) bool {
	for i := range a {
		if len(a[i]) != len(b[i]) {
			return false
		}
		for j := range a[i] {
			if !bytes.Equal(a[i][j], b[i][j]) {
				return false
			}
		}
	}
	return true
}

// describe fills in names, primary key and column conversions. Where the
// table map lacks something it asks information_schema, and leaves names
// nil when the answer does not match the table map.
func (d *decoder) describe(ctx context.Context, ti *tableInfo) error {
	tm := ti.tm
	n := int(tm.ColumnCount)
	var st *schemaTable
	if d.schema != nil && needsSchema(tm) {
		var err error
		if st, err = d.schema.matching(ctx, tm); err != nil {
			return err
		}
		if st != nil && len(tm.ColumnName) == n && !st.sameNames(tm) {
			st = nil // the live table is not the one the event was written for
		}
	}
	ti.cols = columns(tm, st)
	if err := d.charsets(ctx, ti.cols); err != nil {
		return err
	}
	switch {
	case len(tm.ColumnName) == n:
		ti.names = tm.ColumnNameString()
		for _, k := range tm.PrimaryKey {
			if int(k) < n {
				ti.pk = append(ti.pk, ti.names[k])
			}
		}
	case st != nil:
		ti.names = make([]string, n)
		for i := range st.cols {
			ti.names[i] = st.cols[i].name
		}
		ti.pk = st.pk
	}
	return nil
}

// charsets resolves the character set of every text, ENUM and SET column:
// text not stored in UTF-8 is converted, and ENUM and SET names read from
// the table map are converted once here.
func (d *decoder) charsets(ctx context.Context, cols []column) error {
	for i := range cols {
		c := &cols[i]
		if c.kind != kText && !(c.rawNames && (c.kind == kEnum || c.kind == kSet)) {
			continue
		}
		var cs *charset
		var err error
		switch {
		case d.schema == nil:
			cs = &charset{}
		case c.collation != 0:
			cs, err = d.schema.charsets.byCollation(ctx, c.collation)
		default:
			cs, err = d.schema.charsets.named(ctx, c.csName)
		}
		if err != nil {
			return err
		}
		if c.kind == kText {
			if !cs.utf8 {
				c.cs = cs
			}
			continue
		}
		for j, name := range c.values {
			s, ok := cs.decode([]byte(name))
			if !ok {
				c.raw = "ENUM or SET names in character set " + cs.label()
				break
			}
			c.values[j] = s
		}
	}
	return nil
}

// needsSchema reports whether the table map lacks something that
// information_schema has: names, signedness, charsets or ENUM/SET names,
// or whether a BINARY(16) or BINARY(4) column is MariaDB's INET6, UUID or
// INET4, which the log does not tell apart.
func needsSchema(tm *replication.TableMapEvent) bool {
	if len(tm.ColumnName) != int(tm.ColumnCount) {
		return true
	}
	var collation map[int]uint64
	for i := range int(tm.ColumnCount) {
		switch kindOf(realType(tm, i)) {
		case kInt:
			if len(tm.SignednessBitmap) == 0 {
				return true
			}
		case kText:
			if len(tm.DefaultCharset) == 0 && len(tm.ColumnCharset) == 0 {
				return true
			}
			if tm.ColumnType[i] == mysql.MYSQL_TYPE_STRING {
				if collation == nil {
					collation = tm.CollationMap()
				}
				if l := fixedLength(tm.ColumnMeta[i]); collation[i] == binaryCollation && (l == 16 || l == 4) {
					return true
				}
			}
		case kEnum, kSet:
			if len(tm.EnumStrValue) == 0 && len(tm.SetStrValue) == 0 {
				return true
			}
		}
	}
	return false
}

// columns returns the conversions for the columns of tm, from its metadata
// and, where that is missing, from st (nil when unknown).
func columns(tm *replication.TableMapEvent, st *schemaTable) []column {
	cols := make([]column, tm.ColumnCount)
	unsigned := tm.UnsignedMap()
	collation := tm.CollationMap()
	enumSetCollation := tm.EnumSetCollationMap()
	enums, sets := tm.EnumStrValueMap(), tm.SetStrValueMap()
	for i := range cols {
		c := column{typ: realType(tm, i)}
		var sc *schemaCol
		if st != nil {
			sc = &st.cols[i]
		}
		c.kind = kindOf(c.typ)
		switch c.kind {
		case kInt:
			c.signed2u = unsigned == nil && sc != nil && sc.unsigned
		case kText:
			if coll, ok := collation[i]; ok {
				if coll == binaryCollation {
					c.kind = kBinary
				}
				c.collation = int(coll)
			} else if sc != nil {
				if sc.binary {
					c.kind = kBinary
				}
				c.csName = sc.charset
			}
		case kEnum, kSet:
			c.values = enums[i]
			if c.kind == kSet {
				c.values = sets[i]
			}
			if c.values != nil {
				c.values = slices.Clone(c.values)
				c.rawNames = true
				c.collation = int(enumSetCollation[i])
			} else if sc != nil {
				c.values = sc.values
			}
		case kTime:
			if c.typ == mysql.MYSQL_TYPE_TIME2 {
				c.dec = int(tm.ColumnMeta[i])
			}
		}
		if c.kind == kBinary && c.typ == mysql.MYSQL_TYPE_STRING {
			c.padTo = fixedLength(tm.ColumnMeta[i])
			if c.padTo == 16 || c.padTo == 4 {
				c.binaryType(sc)
			}
		}
		cols[i] = c
	}
	return cols
}

// binaryType tells MariaDB's INET6, UUID and INET4 from BINARY(16) and
// BINARY(4), which the log writes alike, by the live schema; without it
// the values cannot be named exactly.
func (c *column) binaryType(sc *schemaCol) {
	switch {
	case sc == nil:
		c.raw = fmt.Sprintf("BINARY(%d), INET6, UUID or INET4 (the live schema does not match the event)", c.padTo)
	case sc.dataType == "inet6" && c.padTo == 16:
		c.kind = kInet6
	case sc.dataType == "uuid" && c.padTo == 16:
		c.kind = kUUID
	case sc.dataType == "inet4" && c.padTo == 4:
		c.kind = kInet4
	}
}

// realType is the column type with ENUM and SET told apart from CHAR.
func realType(tm *replication.TableMapEvent, i int) byte {
	t := tm.ColumnType[i]
	if t == mysql.MYSQL_TYPE_STRING {
		if rt := byte(tm.ColumnMeta[i] >> 8); rt == mysql.MYSQL_TYPE_ENUM || rt == mysql.MYSQL_TYPE_SET {
			return rt
		}
	}
	return t
}

func kindOf(t byte) colKind {
	switch t {
	case mysql.MYSQL_TYPE_TINY, mysql.MYSQL_TYPE_SHORT, mysql.MYSQL_TYPE_INT24, mysql.MYSQL_TYPE_LONG,
		mysql.MYSQL_TYPE_LONGLONG, mysql.MYSQL_TYPE_YEAR:
		return kInt
	case mysql.MYSQL_TYPE_FLOAT, mysql.MYSQL_TYPE_DOUBLE:
		return kFloat
	case mysql.MYSQL_TYPE_DATETIME, mysql.MYSQL_TYPE_DATETIME2, mysql.MYSQL_TYPE_TIMESTAMP, mysql.MYSQL_TYPE_TIMESTAMP2:
		return kDateTime
	case mysql.MYSQL_TYPE_DATE, mysql.MYSQL_TYPE_NEWDATE:
		return kDate
	case mysql.MYSQL_TYPE_STRING, mysql.MYSQL_TYPE_VARCHAR, mysql.MYSQL_TYPE_VAR_STRING, mysql.MYSQL_TYPE_BLOB,
		mysql.MYSQL_TYPE_TINY_BLOB, mysql.MYSQL_TYPE_MEDIUM_BLOB, mysql.MYSQL_TYPE_LONG_BLOB, mysql.MYSQL_TYPE_JSON:
		return kText
	case mysql.MYSQL_TYPE_GEOMETRY, mysql.MYSQL_TYPE_VECTOR:
		return kBinary
	case mysql.MYSQL_TYPE_ENUM:
		return kEnum
	case mysql.MYSQL_TYPE_SET:
		return kSet
	case mysql.MYSQL_TYPE_BIT:
		return kBit
	case mysql.MYSQL_TYPE_TIME, mysql.MYSQL_TYPE_TIME2:
		return kTime
	}
	return kAsIs // DECIMAL arrives as a string already
}
