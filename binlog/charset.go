package binlog

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"unicode/utf8"
)

// This file turns text stored in a column's character set into the UTF-8
// that an application reading the column over a utf8mb4 connection gets.
// The server converts every text value to the connection's character set
// before it sends it; a key the application builds from a latin1 column
// holds "café", while the binary log holds the latin1 bytes "caf\xe9".
//
// The conversion tables come from the server itself, not from Go's
// encoding packages: the first time a stream meets a character set, it
// asks the server to convert every single-byte character (and, for the
// two-byte character sets it knows the shape of, every two-byte one) to
// utf8mb4, and keeps the answer. Whatever the server does is then what
// this package does, byte for byte: MariaDB's latin1 is cp1252 with five
// extra control characters, its cp1251 turns the undefined byte 0x98 into
// '?', and its gbk differs from the WHATWG GBK tables in places. A Go table
// would be right for most bytes and silently wrong for some, which is the
// one outcome a key must never have.
//
// Character sets with characters of three or more bytes (ujis, eucjpms,
// utf16, utf32, ucs2, gb18030, ...) and big5 (whose stored text the
// tables built this way did not cover) are not converted: their values
// arrive as Raw, which key templates refuse, so their tables are
// invalidated whole instead.

// charset converts the text of one character set to UTF-8.
type charset struct {
	name string
	utf8 bool // the bytes are already what the application reads
	// single is the character of each byte that is a character by itself,
	// and -1 for bytes that start a two-byte character or have no exact
	// conversion. nil when the character set is not converted.
	single *[256]rune
	// double holds the two-byte characters, indexed by lead<<8|trail
	// minus doubleBase; -1 where the pair is not a character.
	double []rune
	lead   func(b byte) bool // nil for single-byte character sets
}

// twoByteLeads are the character sets whose characters are one byte, or
// two from a lead byte on, with the lead bytes of each (from the server's
// ismbchar functions).
var twoByteLeads = map[string]func(byte) bool{
	"gbk":    func(b byte) bool { return b >= 0x81 && b <= 0xfe },
	"euckr":  func(b byte) bool { return b >= 0x81 && b <= 0xfe },
	"gb2312": func(b byte) bool { return b >= 0xa1 && b <= 0xf7 },
	"sjis":   func(b byte) bool { return b >= 0x81 && b <= 0x9f || b >= 0xe0 && b <= 0xfc },
	"cp932":  func(b byte) bool { return b >= 0x81 && b <= 0x9f || b >= 0xe0 && b <= 0xfc },
}

const doubleBase = 0x8000

// decode returns the UTF-8 text of b, or ok=false when some byte sequence
// in it has no conversion known exactly.
func (cs *charset) decode(b []byte) (s string, ok bool) {
	if cs.utf8 {
		return string(b), true
	}
	if cs.single == nil {
		return "", false
	}
	var out strings.Builder
	out.Grow(len(b) + len(b)/2)
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c < utf8.RuneSelf && cs.single[c] == rune(c) {
			out.WriteByte(c)
			continue
		}
		if cs.lead != nil && cs.lead(c) {
			if i+1 >= len(b) {
				return "", false
			}
			r := cs.double[int(c)<<8|int(b[i+1])-doubleBase]
			if r < 0 {
				return "", false
			}
			out.WriteRune(r)
			i++
			continue
		}
		r := cs.single[c]
		if r < 0 {
			return "", false
		}
		out.WriteRune(r)
	}
	return out.String(), true
}

// charsets resolves collation ids and character set names to converters,
// asking the server once for each. It lives as long as one Run.
type charsets struct {
	db         *sql.DB
	collations map[int]string // collation id -> character set name; nil until read
	byName     map[string]*charset
}

func newCharsets(db *sql.DB) *charsets {
	return &charsets{db: db, byName: make(map[string]*charset)}
}

// isUTF8 reports whether text of the character set name needs no conversion.
func isUTF8(name string) bool {
	return name == "utf8mb4" || name == "utf8mb3" || name == "utf8"
}

// byCollation returns the converter for text of the collation id.
func (c *charsets) byCollation(ctx context.Context, id int) (*charset, error) {
	name, err := c.collationCharset(ctx, id)
	if err != nil {
		return nil, err
	}
	return c.named(ctx, name)
}

// collationCharset returns the character set of a collation id; "" when
// the server does not know the id.
func (c *charsets) collationCharset(ctx context.Context, id int) (string, error) {
	if c.collations == nil {
		if c.db == nil {
			return "", nil
		}
		m, err := readCollations(ctx, c.db)
		if err != nil {
			return "", err
		}
		c.collations = m
	}
	return c.collations[id], nil
}

// readCollations reads every collation id the server has. MariaDB 10.10+
// lists the ids of its full collation names (utf8mb4_uca1400_ai_ci for
// each character set) only in COLLATION_CHARACTER_SET_APPLICABILITY; MySQL
// has no ID column there, so that part is read where it exists.
func readCollations(ctx context.Context, db *sql.DB) (map[int]string, error) {
	m := make(map[int]string)
	read := func(q string) error {
		rows, err := db.QueryContext(ctx, q)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id int
			var name string
			if err := rows.Scan(&id, &name); err != nil {
				return err
			}
			m[id] = strings.ToLower(name)
		}
		return rows.Err()
	}
	if err := read("SELECT ID, CHARACTER_SET_NAME FROM information_schema.COLLATIONS WHERE ID IS NOT NULL"); err != nil {
		return nil, fmt.Errorf("binlog: read collations: %w", err)
	}
	_ = read("SELECT ID, CHARACTER_SET_NAME FROM information_schema.COLLATION_CHARACTER_SET_APPLICABILITY WHERE ID IS NOT NULL")
	return m, nil
}

// named returns the converter for a character set name. A name it cannot
// convert gets a converter that refuses every value.
func (c *charsets) named(ctx context.Context, name string) (*charset, error) {
	name = strings.ToLower(name)
	if cs := c.byName[name]; cs != nil {
		return cs, nil
	}
	cs := &charset{name: name, utf8: isUTF8(name)}
	if !cs.utf8 && c.db != nil && validName(name) {
		if err := c.load(ctx, cs); err != nil {
			return nil, err
		}
	}
	c.byName[name] = cs
	return cs, nil
}

func validName(name string) bool {
	if name == "" || name == "binary" {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// load asks the server how it converts the characters of cs to utf8mb4.
// It leaves cs.single nil for a character set that is neither single-byte
// nor one of twoByteLeads.
func (c *charsets) load(ctx context.Context, cs *charset) error {
	var maxLen int
	err := c.db.QueryRowContext(ctx, "SELECT MAXLEN FROM information_schema.CHARACTER_SETS WHERE CHARACTER_SET_NAME = ?", cs.name).Scan(&maxLen)
	if err == sql.ErrNoRows {
		return nil
	}
	if err != nil {
		return fmt.Errorf("binlog: read character set %s: %w", cs.name, err)
	}
	lead := twoByteLeads[cs.name]
	if maxLen != 1 && (maxLen != 2 || lead == nil) {
		return nil
	}
	// Every byte that is a character by itself, in one string.
	var singles []byte
	for b := 0; b < 256; b++ {
		if lead == nil || !lead(byte(b)) {
			singles = append(singles, byte(b))
		}
	}
	got, err := c.convert(ctx, cs.name, singles)
	if err != nil {
		return err
	}
	runes := []rune(got)
	if len(runes) != len(singles) {
		return nil // not one character per byte: leave it unconverted
	}
	table := new([256]rune)
	for i := range table {
		table[i] = -1
	}
	for i, b := range singles {
		table[b] = runes[i]
	}
	if lead != nil {
		// Every pair of a lead byte and a byte from 0x40 on, each followed
		// by a newline, so that a pair the server reads as two characters
		// shows.
		var pairs []byte
		for l := 0x80; l < 0x100; l++ {
			if !lead(byte(l)) {
				continue
			}
			for t := 0x40; t < 0x100; t++ {
				pairs = append(pairs, byte(l), byte(t), '\n')
			}
		}
		got, err := c.convert(ctx, cs.name, pairs)
		if err != nil {
			return err
		}
		parts := strings.Split(got, "\n")
		if len(parts) != len(pairs)/3+1 {
			return nil
		}
		double := make([]rune, 0x10000-doubleBase)
		for i := range double {
			double[i] = -1
		}
		for i, p := range parts[:len(parts)-1] {
			r, size := utf8.DecodeRuneInString(p)
			if size != len(p) || r == utf8.RuneError {
				continue // the server did not read the pair as one character
			}
			double[int(pairs[3*i])<<8|int(pairs[3*i+1])-doubleBase] = r
		}
		cs.double, cs.lead = double, lead
	}
	cs.single = table
	return nil
}

// convert returns the server's utf8mb4 conversion of b read as text of
// the character set name (a validated identifier).
func (c *charsets) convert(ctx context.Context, name string, b []byte) (string, error) {
	var s string
	q := fmt.Sprintf("SELECT CONVERT(CONVERT(UNHEX(?) USING %s) USING utf8mb4)", name)
	if err := c.db.QueryRowContext(ctx, q, fmt.Sprintf("%X", b)).Scan(&s); err != nil {
		return "", fmt.Errorf("binlog: read the conversion of character set %s: %w", name, err)
	}
	return s, nil
}

// label names the character set in a Raw value's Type.
func (cs *charset) label() string {
	if cs.name == "" {
		return "(unknown)"
	}
	return cs.name
}
