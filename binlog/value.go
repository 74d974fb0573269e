package binlog

import (
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
			if x.Location() == time.UTC {
				return v // DATETIME arrives in UTC: no new box
			}
			return x.UTC()
		case string:
			return parseTime(x)
		}
	case kText:
		if b, ok := v.([]byte); ok {
			return string(b)
		}
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

// parseTime reads a DATETIME, TIMESTAMP or DATE that the decoder left as
// text: a zero date becomes the zero time.Time, a valid one a time.Time in
// UTC, and an invalid one (month or day 0) stays text.
func parseTime(s string) any {
	if strings.HasPrefix(s, "0000-00-00") && strings.Trim(s, "0-:. ") == "" {
		return time.Time{}
	}
	layout := "2006-01-02 15:04:05.999999"
	if len(s) == len("2006-01-02") {
		layout = "2006-01-02"
	}
	t, err := time.ParseInLocation(layout, s, time.UTC)
	if err != nil {
		return s
	}
	return t
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
