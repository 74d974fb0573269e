package binlog

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
)

// value converts one decoded value to the documented Go type.
func (c *column) value(v any) any {
	if v == nil {
		return nil
	}
	if c.raw != "" {
		return c.rawValue(v)
	}
	switch c.kind {
	case kInt:
		return c.integer(v)
	case kFloat:
		if f, ok := v.(float32); ok {
			// The shortest decimal that reads back as the float32: 0.1, not 0.10000000149.
			d, _ := strconv.ParseFloat(strconv.FormatFloat(float64(f), 'g', -1, 32), 64)
			return d
		}
	case kDateTime, kDate:
		switch x := v.(type) {
		case time.Time:
			return x.UTC()
		case string:
			return parseTime(x)
		}
	case kTime:
		if s, ok := v.(string); ok {
			return timeText(s, c.dec)
		}
	case kText:
		switch x := v.(type) {
		case []byte:
			if c.cs == nil {
				return string(x)
			}
			return c.text(x)
		case string:
			if c.cs == nil {
				return x
			}
			return c.text([]byte(x))
		}
	case kInet6, kInet4, kUUID:
		return c.binaryText(v)
	case kBinary:
		switch x := v.(type) {
		case []byte:
			return c.pad(x) // a copy: do not pin the whole event
		case string:
			return c.pad([]byte(x))
		}
	case kEnum:
		if i, ok := v.(int64); ok && c.values != nil {
			if i >= 1 && int(i) <= len(c.values) {
				return c.values[i-1]
			}
			return "" // 0 is the empty string MySQL stores for an invalid value
		}
	case kSet, kBit:
		i, ok := v.(int64)
		if !ok {
			break
		}
		if c.values == nil {
			return uint64(i) // BIT, or a SET whose names are unknown
		}
		var parts []string
		for b, name := range c.values {
			if i&(1<<uint(b)) != 0 {
				parts = append(parts, name)
			}
		}
		return strings.Join(parts, ",")
	}
	return v
}

func (c *column) integer(v any) any {
	if c.signed2u {
		// The table map carried no signedness; the schema says unsigned.
		switch x := v.(type) {
		case int8:
			return uint64(uint8(x))
		case int16:
			return uint64(uint16(x))
		case int32:
			if c.typ == mysql.MYSQL_TYPE_INT24 {
				return uint64(uint32(x) & 0xFFFFFF)
			}
			return uint64(uint32(x))
		case int64:
			return uint64(x)
		}
	}
	switch x := v.(type) {
	case int64, uint64:
		return v
	case int8:
		return int64(x)
	case int16:
		return int64(x)
	case int32:
		return int64(x)
	case int:
		return int64(x)
	case uint8:
		return uint64(x)
	case uint16:
		return uint64(x)
	case uint32:
		return uint64(x)
	}
	return v
}

// text converts text stored in a character set other than UTF-8.
func (c *column) text(b []byte) any {
	if s, ok := c.cs.decode(b); ok {
		return s
	}
	return Raw{Type: "text in character set " + c.cs.label(), Data: bytes.Clone(b)}
}

// rawValue delivers a value that cannot be converted exactly.
func (c *column) rawValue(v any) any {
	var data []byte
	switch x := v.(type) {
	case []byte:
		data = bytes.Clone(x)
	case string:
		data = []byte(x)
	case int64:
		data = strconv.AppendInt(nil, x, 10) // an ENUM or SET number
	default:
		data = fmt.Append(nil, x)
	}
	if c.padTo > len(data) {
		data = c.pad(data)
	}
	return Raw{Type: c.raw, Data: data}
}

// parseTime reads a DATETIME, TIMESTAMP or DATE, which the decoder leaves
// as the text SELECT returns: a date of the calendar becomes a time.Time in
// UTC; a date that is not one (the zero date, a zero month or day, or
// 2024-02-30 stored under ALLOW_INVALID_DATES) stays that text. time.Date
// would roll 2024-02-30 over to 2024-03-01, and the zero date and
// 0001-01-01 would both become the zero time.Time.
func parseTime(s string) any {
	// YYYY-MM-DD[ HH:MM:SS[.f...]]
	n := len(s)
	if n != 10 && (n < 19 || n == 20 || n > 26) {
		return s
	}
	num := func(i, w int) int {
		v := 0
		for _, c := range []byte(s[i : i+w]) {
			if c < '0' || c > '9' {
				return -1
			}
			v = v*10 + int(c-'0')
		}
		return v
	}
	year, month, day := num(0, 4), num(5, 2), num(8, 2)
	if s[4] != '-' || s[7] != '-' || year < 0 || month < 1 || month > 12 || day < 1 ||
		day > daysIn(time.Month(month), year) {
		return s
	}
	var hour, minute, sec, nsec int
	if n > 10 {
		hour, minute, sec = num(11, 2), num(14, 2), num(17, 2)
		if s[10] != ' ' || s[13] != ':' || s[16] != ':' || hour < 0 || hour > 23 || minute < 0 || minute > 59 || sec < 0 || sec > 59 {
			return s
		}
		if n > 19 {
			if s[19] != '.' {
				return s
			}
			frac := num(20, n-20)
			if frac < 0 {
				return s
			}
			for range 9 - (n - 20) {
				frac *= 10
			}
			nsec = frac
		}
	}
	return time.Date(year, time.Month(month), day, hour, minute, sec, nsec, time.UTC)
}

func daysIn(m time.Month, year int) int {
	return time.Date(year, m+1, 0, 0, 0, 0, 0, time.UTC).Day()
}

// timeText writes a TIME as SELECT does: with exactly dec digits after the
// point. The decoder drops an all-zero fraction ("838:59:59" for a
// TIME(3) that SELECT returns as "838:59:59.000").
func timeText(s string, dec int) string {
	dot := strings.IndexByte(s, '.')
	switch {
	case dec == 0 && dot < 0:
		return s
	case dec == 0:
		return s[:dot]
	case dot < 0:
		return s + "." + strings.Repeat("0", dec)
	case len(s)-dot-1 == dec:
		return s
	case len(s)-dot-1 > dec:
		return s[:dot+1+dec]
	}
	return s + strings.Repeat("0", dec-(len(s)-dot-1))
}

// pad returns a copy of b, padded with zero bytes to a BINARY(n) length.
func (c *column) pad(b []byte) []byte {
	out := make([]byte, max(len(b), c.padTo))
	copy(out, b)
	return out
}

// fixedLength is the byte length of a CHAR or BINARY column from its
// table map metadata (the encoding of Field_string::save_field_metadata).
func fixedLength(meta uint16) int {
	if meta < 256 {
		return int(meta)
	}
	b0, b1 := byte(meta>>8), byte(meta)
	if b0&0x30 != 0x30 {
		return int(uint16(b1) | uint16((b0&0x30)^0x30)<<4)
	}
	return int(b1)
}

// binaryText writes MariaDB's INET6, INET4 and UUID values as SELECT
// returns them; the log holds their 16 or 4 bytes.
func (c *column) binaryText(v any) any {
	var b []byte
	switch x := v.(type) {
	case string:
		b = []byte(x)
	case []byte:
		b = x
	default:
		return v
	}
	b = c.pad(b)
	switch {
	case c.kind == kInet4 && len(b) == 4:
		return inet4Text(b)
	case c.kind == kInet6 && len(b) == 16:
		return inet6Text(b)
	case c.kind == kUUID && len(b) == 16:
		const hex = "0123456789abcdef"
		out := make([]byte, 0, 36)
		for i, x := range b {
			if i == 4 || i == 6 || i == 8 || i == 10 {
				out = append(out, '-')
			}
			out = append(out, hex[x>>4], hex[x&15])
		}
		return string(out)
	}
	return Raw{Type: "INET6, UUID or INET4 of an unexpected length", Data: b}
}

func inet4Text(b []byte) string {
	out := strconv.AppendUint(nil, uint64(b[0]), 10)
	for _, x := range b[1:4] {
		out = append(out, '.')
		out = strconv.AppendUint(out, uint64(x), 10)
	}
	return string(out)
}

// inet6Text follows MariaDB's Inet6::to_string, which differs from Go's
// net/netip: it compresses the first longest run of zero groups even when
// it is one group long, and writes IPv4-compatible addresses (::a.b.c.d)
// as well as IPv4-mapped ones (::ffff:a.b.c.d) with a dotted tail.
func inet6Text(b []byte) string {
	var w [8]int
	for i := range w {
		w[i] = int(b[2*i])<<8 | int(b[2*i+1])
	}
	gapPos, gapLen := -1, -1
	for i := 0; i < 8; {
		if w[i] != 0 {
			i++
			continue
		}
		j := i
		for j < 8 && w[j] == 0 {
			j++
		}
		if j-i > gapLen {
			gapPos, gapLen = i, j-i
		}
		i = j
	}
	var out []byte
	for i := 0; i < 8; i++ {
		switch {
		case i == gapPos:
			if i == 0 {
				out = append(out, ':')
			}
			out = append(out, ':')
			i += gapLen - 1
		case i == 6 && gapPos == 0 && (gapLen == 6 || gapLen == 5 && w[5] == 0xffff):
			return string(out) + inet4Text(b[12:])
		default:
			out = strconv.AppendUint(out, uint64(w[i]), 16)
			if i != 7 {
				out = append(out, ':')
			}
		}
	}
	return string(out)
}
