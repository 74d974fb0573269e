package binlog

import (
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/stretchr/testify/assert"
)

func TestColumnValue(t *testing.T) {
	day := time.Date(2024, 2, 29, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		c    column
		in   any
		want any
	}{
		{"nil", column{kind: kInt}, nil, nil},
		{"int8", column{kind: kInt}, int8(-5), int64(-5)},
		{"uint16", column{kind: kInt}, uint16(65535), uint64(65535)},
		{"int64 kept", column{kind: kInt}, int64(-1), int64(-1)},
		{"year", column{kind: kInt}, 2024, int64(2024)},
		{"unsigned from schema: tinyint", column{kind: kInt, signed2u: true}, int8(-1), uint64(255)},
		{"unsigned from schema: mediumint", column{kind: kInt, signed2u: true, typ: mysql.MYSQL_TYPE_INT24}, int32(-1), uint64(16777215)},
		{"unsigned from schema: int", column{kind: kInt, signed2u: true, typ: mysql.MYSQL_TYPE_LONG}, int32(-1), uint64(4294967295)},
		{"unsigned from schema: bigint", column{kind: kInt, signed2u: true}, int64(-1), uint64(18446744073709551615)},
		{"float32 shortest", column{kind: kFloat}, float32(0.1), 0.1},
		{"float64", column{kind: kFloat}, 2.5, 2.5},
		{"datetime local to UTC", column{kind: kDateTime}, time.Date(2024, 2, 29, 1, 0, 0, 0, time.FixedZone("x", 3600)), time.Date(2024, 2, 29, 0, 0, 0, 0, time.UTC)},
		{"datetime text", column{kind: kDateTime}, "1960-01-02 03:04:05.5", time.Date(1960, 1, 2, 3, 4, 5, 500000000, time.UTC)},
		{"zero datetime stays text", column{kind: kDateTime}, "0000-00-00 00:00:00.000", "0000-00-00 00:00:00.000"},
		{"day past the month stays text", column{kind: kDate}, "2024-02-30", "2024-02-30"},
		{"year 1", column{kind: kDate}, "0001-01-01", time.Time{}},
		{"time(3) zero fraction", column{kind: kTime, dec: 3}, "838:59:59", "838:59:59.000"},
		{"time(2) negative", column{kind: kTime, dec: 2}, "-00:00:00.50", "-00:00:00.50"},
		{"time(0)", column{kind: kTime}, "-00:00:01", "-00:00:01"},
		{"text not converted", column{kind: kText, cs: &charset{name: "ujis"}}, "x", Raw{Type: "text in character set ujis", Data: []byte("x")}},
		{"inet6", column{kind: kInet6, padTo: 16}, "\x20\x01\x0d\xb8", "2001:db8::"},
		{"inet4", column{kind: kInet4, padTo: 4}, "\x01\x02\x03\x04", "1.2.3.4"},
		{"invalid datetime", column{kind: kDateTime}, "2024-00-01 00:00:00", "2024-00-01 00:00:00"},
		{"date", column{kind: kDate}, "2024-02-29", day},
		{"zero date stays text", column{kind: kDate}, "0000-00-00", "0000-00-00"},
		{"text from bytes", column{kind: kText}, []byte("hé"), "hé"},
		{"text", column{kind: kText}, "x", "x"},
		{"binary from text", column{kind: kBinary}, "ab", []byte("ab")},
		{"binary(4) padded", column{kind: kBinary, padTo: 4}, []byte("ab"), []byte("ab\x00\x00")},
		{"enum", column{kind: kEnum, values: []string{"a", "b"}}, int64(2), "b"},
		{"enum invalid", column{kind: kEnum, values: []string{"a", "b"}}, int64(0), ""},
		{"enum without names", column{kind: kEnum}, int64(2), int64(2)},
		{"set", column{kind: kSet, values: []string{"a", "b", "c"}}, int64(5), "a,c"},
		{"set empty", column{kind: kSet, values: []string{"a"}}, int64(0), ""},
		{"set without names", column{kind: kSet}, int64(5), uint64(5)},
		{"bit", column{kind: kBit}, int64(513), uint64(513)},
		{"decimal as is", column{kind: kAsIs}, "-1.50", "-1.50"},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, tt.c.value(tt.in), tt.name)
	}
}

func TestFixedLength(t *testing.T) {
	// CHAR/BINARY metadata: real type in the high byte, length in the low
	// byte, with lengths over 255 folding bits into the type byte.
	assert.Equal(t, 3, fixedLength(0xfe03))
	assert.Equal(t, 255, fixedLength(0xfeff))
	assert.Equal(t, 768, fixedLength(0xce00))
	assert.Equal(t, 10, fixedLength(10))
}

func TestEnumValues(t *testing.T) {
	assert.Equal(t, []string{"a", "B c", "it's", ""}, enumValues("enum('a','B c','it''s','')"))
	assert.Equal(t, []string{"x", "y"}, enumValues("set('x','y')"))
	assert.Nil(t, enumValues("int(11)"))
}

func TestTypeFits(t *testing.T) {
	assert.True(t, typeFits(mysql.MYSQL_TYPE_LONG, "int"))
	assert.False(t, typeFits(mysql.MYSQL_TYPE_LONG, "bigint"))
	assert.True(t, typeFits(mysql.MYSQL_TYPE_BLOB, "json"), "MariaDB JSON is LONGTEXT")
	assert.True(t, typeFits(mysql.MYSQL_TYPE_NEWDATE, "date"))
	assert.False(t, typeFits(mysql.MYSQL_TYPE_VARCHAR, "enum"))
	assert.True(t, typeFits(mysql.MYSQL_TYPE_STRING, "inet6"), "MariaDB INET6 is a binary string")
	assert.True(t, typeFits(mysql.MYSQL_TYPE_LONG, "xmltype"), "types it does not know fit")
}

func TestParseGrant(t *testing.T) {
	var g grantSet
	g.privs = map[string]bool{}
	parseGrant("GRANT SELECT, REPLICATION SLAVE ADMIN, BINLOG MONITOR ON *.* TO `u`@`%` IDENTIFIED BY PASSWORD '*ABC'", &g)
	parseGrant("GRANT ALL PRIVILEGES ON `app`.* TO `u`@`%`", &g)
	assert.True(t, g.has("BINLOG MONITOR"))
	assert.False(t, g.has("REPLICATION SLAVE"), "REPLICATION SLAVE ADMIN is another privilege")
	assert.False(t, g.has("INSERT"), "privileges on one database do not count")
	assert.False(t, g.roles)
	parseGrant("GRANT `replicator` TO `u`@`%`", &g)
	assert.True(t, g.roles)
	parseGrant("GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION", &g)
	assert.True(t, g.has("REPLICATION SLAVE"))
}

func TestBackoff(t *testing.T) {
	b := backoff{min: 100 * time.Millisecond, max: time.Second}
	for i, top := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		d := b.next()
		top *= time.Millisecond
		if i >= 4 {
			top = time.Second
		}
		assert.GreaterOrEqual(t, d, top/2)
		assert.LessOrEqual(t, d, top)
	}
	b.reset()
	assert.LessOrEqual(t, b.next(), 100*time.Millisecond)
}
