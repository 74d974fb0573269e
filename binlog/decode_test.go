package binlog

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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

func TestInet6Text(t *testing.T) {
	// MariaDB's spelling (checked against SELECT in TestKeysFromMariaDBTypes).
	for hex, want := range map[string]string{
		"00000000000000000000000000000000": "::",
		"00000000000000000000000000000001": "::1",
		"00000000000000000000ffff01020304": "::ffff:1.2.3.4",
		"00000000000000000000000001020304": "::1.2.3.4",
		"20010db8000000000000000000000001": "2001:db8::1",
		"00010000000200030004000500060007": "1::2:3:4:5:6:7",
		"00010000000000020000000000000003": "1:0:0:2::3",
		"00010000000000000000000000000000": "1::",
		"ffffffffffffffffffffffffffffffff": "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
	} {
		b := make([]byte, 16)
		for i := range b {
			x, err := strconv.ParseUint(hex[2*i:2*i+2], 16, 8)
			require.NoError(t, err)
			b[i] = byte(x)
		}
		assert.Equal(t, want, inet6Text(b), hex)
	}
}

func TestCharsetDecode(t *testing.T) {
	single := new([256]rune)
	for i := range single {
		single[i] = rune(i)
	}
	single[0x98] = '?'
	single[0x99] = -1
	cs := &charset{name: "x", single: single}
	s, ok := cs.decode([]byte("a\x00\xe9\x98"))
	assert.True(t, ok)
	assert.Equal(t, "a\x00é?", s)
	_, ok = cs.decode([]byte{'a', 0x99})
	assert.False(t, ok, "a byte without an exact conversion")

	double := make([]rune, 0x10000-doubleBase)
	for i := range double {
		double[i] = -1
	}
	double[0x8140-doubleBase] = '丂'
	two := &charset{name: "y", single: single, double: double, lead: func(b byte) bool { return b >= 0x81 }}
	s, ok = two.decode([]byte("a\x81\x40b"))
	assert.True(t, ok)
	assert.Equal(t, "a丂b", s)
	_, ok = two.decode([]byte("a\x81"))
	assert.False(t, ok, "a lead byte at the end")
	_, ok = two.decode([]byte("\x81\x41"))
	assert.False(t, ok, "a pair the server does not read as one character")
	_, ok = (&charset{name: "ujis"}).decode([]byte("a"))
	assert.False(t, ok, "a character set without tables")
}

// FuzzParseTime: a DATETIME or DATE text becomes a time.Time only when
// that time prints back as the same text; anything else stays the text.
func FuzzParseTime(f *testing.F) {
	for _, s := range []string{"2024-02-29", "2024-02-30", "0000-00-00 00:00:00.000", "1969-07-20 20:17:40.000001",
		"9999-12-31 23:59:59.999999", "0000-01-01", "2023-02-29 23:59:59.9", "2024-1-01", "2024-12-31 24:00:00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		switch v := parseTime(s).(type) {
		case string:
			if v != s {
				t.Fatalf("%q became the text %q", s, v)
			}
		case time.Time:
			layout := "2006-01-02"
			if len(s) > 10 {
				layout = "2006-01-02 15:04:05"
			}
			if len(s) > 20 {
				layout += "." + strings.Repeat("0", len(s)-20)
			}
			if got := v.Format(layout); got != s {
				t.Fatalf("%q read as %v, which prints %q", s, v, got)
			}
		default:
			t.Fatalf("%q became a %T", s, v)
		}
	})
}
