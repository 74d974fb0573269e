package binlog

import (
	"strings"
)

// This file classifies the statements that reach the binary log as text
// (query events): DDL, and DML written by sessions that log statements.
// It reads just enough of the statement to find its kind and table names;
// anything it cannot read with confidence becomes an Unknown change with
// an empty Table, which a consumer treats as "the whole schema (or server)
// may have changed". It never guesses a wrong table: a wrong guess would be
// a missed invalidation.

// stmtClass is what a query event means for the transaction being read.
type stmtClass int

const (
	stmtChange      stmtClass = iota // table changes (DDL, statement DML, unknown)
	stmtChangeBegin                  // a stmtChange that opens a transaction (see changeClass)
	stmtBegin                        // BEGIN, XA START
	stmtCommit                       // COMMIT
	stmtRollback                     // ROLLBACK (the whole transaction)
	stmtIgnore                       // changes no table data: GRANT, SAVEPOINT, FLUSH, ...
)

// classify reads query, run with default database schema, and returns its
// class and, for stmtChange and stmtChangeBegin, the tables it changes.
func classify(schema, query string) (stmtClass, []TableChange) {
	t, truncated := tokenize(query, 64)
	if len(t) == 0 {
		return stmtIgnore, nil
	}
	kw := func(i int) string {
		if i < len(t) && !t[i].quoted {
			return strings.ToUpper(t[i].text)
		}
		return ""
	}
	switch kw(0) {
	case "BEGIN":
		return stmtBegin, nil
	case "COMMIT":
		return stmtCommit, nil
	case "ROLLBACK":
		if kw(1) == "TO" {
			return stmtIgnore, nil // ROLLBACK TO SAVEPOINT keeps the transaction
		}
		return stmtRollback, nil
	case "XA":
		if kw(1) == "START" || kw(1) == "BEGIN" {
			return stmtBegin, nil
		}
		return stmtIgnore, nil
	case "SAVEPOINT", "RELEASE", "GRANT", "REVOKE", "FLUSH", "ANALYZE", "OPTIMIZE", "CHECK",
		"CHECKSUM", "SET", "USE", "INSTALL", "UNINSTALL", "SHOW":
		return stmtIgnore, nil
	case "SELECT", "DO":
		// Logged only when a stored function it calls changed data, which
		// may be in any table of any schema.
		return changeClass(query), []TableChange{{Kind: Unknown, Query: query}}
	}
	switch kw(0) {
	case "DROP", "CREATE", "ALTER", "RENAME", "TRUNCATE", "REPAIR":
		if truncated {
			// DDL is short; read it all so that no listed table is missed.
			t, truncated = tokenize(query, 0)
		}
	}
	p := &parser{toks: t, schema: schema, query: query, truncated: truncated}
	class, changes := p.statement()
	if class == stmtChange {
		class = changeClass(query)
	}
	return class, changes
}

// changeClass is stmtChangeBegin for a statement that ends with START
// TRANSACTION, and stmtChange otherwise. MySQL 8.0.21+ logs CREATE TABLE
// ... SELECT as a DDL ending in START TRANSACTION, then the rows and an
// XID, all under one GTID: ending the transaction at the DDL would
// checkpoint past its rows.
func changeClass(query string) stmtClass {
	q := strings.TrimRight(query, " \t\r\n;")
	const tail = "START TRANSACTION"
	if len(q) >= len(tail) && strings.EqualFold(q[len(q)-len(tail):], tail) {
		return stmtChangeBegin
	}
	return stmtChange
}

type token struct {
	text   string
	quoted bool // a `quoted` or "quoted" identifier, or a 'string'
	punct  bool // a single punctuation character
}

// tokenize splits the first max tokens of a statement (all of them when
// max is 0), dropping comments but keeping the text inside /*! ... */ and
// /*M! ... */, which servers execute. truncated reports that tokens were
// left unread.
func tokenize(s string, max int) (out []token, truncated bool) {
	for i := 0; i < len(s); {
		if max > 0 && len(out) == max {
			return out, true
		}
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f':
			i++
		case c == '#' || (c == '-' && strings.HasPrefix(s[i:], "-- ")):
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case strings.HasPrefix(s[i:], "/*!") || strings.HasPrefix(s[i:], "/*M!"):
			i += strings.IndexByte(s[i:], '!') + 1
			for i < len(s) && s[i] >= '0' && s[i] <= '9' {
				i++
			}
		case strings.HasPrefix(s[i:], "/*"):
			end := strings.Index(s[i+2:], "*/")
			if end < 0 {
				return out, false
			}
			i += end + 4
		case strings.HasPrefix(s[i:], "*/"):
			i += 2 // the end of an executable comment
		case c == '`' || c == '"' || c == '\'':
			var b strings.Builder
			j := i + 1
			for ; j < len(s); j++ {
				if s[j] == '\\' && c != '`' && j+1 < len(s) {
					j++
					b.WriteByte(s[j])
					continue
				}
				if s[j] == c {
					if j+1 < len(s) && s[j+1] == c {
						b.WriteByte(c)
						j++
						continue
					}
					break
				}
				b.WriteByte(s[j])
			}
			out = append(out, token{text: b.String(), quoted: true})
			i = j + 1
		case isIdentByte(c):
			j := i
			for j < len(s) && isIdentByte(s[j]) {
				j++
			}
			out = append(out, token{text: s[i:j]})
			i = j
		default:
			out = append(out, token{text: s[i : i+1], punct: true})
			i++
		}
	}
	return out, false
}

func isIdentByte(c byte) bool {
	return c == '_' || c == '$' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}

type parser struct {
	toks      []token
	i         int
	schema    string
	query     string
	truncated bool // toks ends before the statement does
}

func (p *parser) peek() string {
	if p.i < len(p.toks) && !p.toks[p.i].quoted {
		return strings.ToUpper(p.toks[p.i].text)
	}
	return ""
}

// accept consumes the keywords words if they come next, in order.
func (p *parser) accept(words ...string) bool {
	for k, w := range words {
		j := p.i + k
		if j >= len(p.toks) || p.toks[j].quoted || !strings.EqualFold(p.toks[j].text, w) {
			return false
		}
	}
	p.i += len(words)
	return true
}

// name reads [schema.]table. ok is false when no name is there.
func (p *parser) name() (schema, table string, ok bool) {
	if p.i >= len(p.toks) || p.toks[p.i].punct || (p.toks[p.i].quoted && p.toks[p.i].text == "") {
		return "", "", false
	}
	first := p.toks[p.i].text
	p.i++
	if p.i+1 < len(p.toks) && p.toks[p.i].punct && p.toks[p.i].text == "." && !p.toks[p.i+1].punct {
		second := p.toks[p.i+1].text
		p.i += 2
		return first, second, true
	}
	return p.schema, first, true
}

func (p *parser) change(kind ChangeKind, schema, table string) TableChange {
	return TableChange{Schema: schema, Table: table, Kind: kind, Query: p.query}
}

// unknown is the answer for a statement that may change data in ways this
// parser does not follow: the whole server, since a statement run from one
// default database can name tables of any other.
func (p *parser) unknown() (stmtClass, []TableChange) {
	return stmtChange, []TableChange{p.change(Unknown, "", "")}
}

// tableList reads name [, name ...] as changes of kind.
func (p *parser) tableList(kind ChangeKind) (stmtClass, []TableChange) {
	var out []TableChange
	for {
		s, t, ok := p.name()
		if !ok {
			return p.unknown()
		}
		out = append(out, p.change(kind, s, t))
		if !p.acceptPunct(",") {
			return stmtChange, out
		}
	}
}

func (p *parser) acceptPunct(c string) bool {
	if p.i < len(p.toks) && p.toks[p.i].punct && p.toks[p.i].text == c {
		p.i++
		return true
	}
	return false
}

func (p *parser) statement() (stmtClass, []TableChange) {
	switch verb := p.peek(); verb {
	case "TRUNCATE":
		p.i++
		p.accept("TABLE")
		return p.tableList(Truncate)
	case "RENAME":
		p.i++
		if !p.accept("TABLE") && !p.accept("TABLES") {
			return stmtIgnore, nil // RENAME USER
		}
		return p.renames()
	case "DROP", "CREATE", "ALTER":
		p.i++
		return p.object(verb)
	case "INSERT", "REPLACE", "UPDATE", "DELETE", "LOAD":
		p.i++
		return p.dml(verb)
	case "REPAIR":
		p.i++
		p.accept("NO_WRITE_TO_BINLOG")
		p.accept("LOCAL")
		if p.accept("TABLE") || p.accept("TABLES") {
			return p.tableList(Unknown)
		}
	}
	return p.unknown()
}

// renames reads a TO b [, c TO d ...]: every table named is changed.
func (p *parser) renames() (stmtClass, []TableChange) {
	p.accept("IF", "EXISTS")
	var out []TableChange
	for {
		s1, t1, ok1 := p.name()
		p.accept("WAIT")
		if p.peek() == "NOWAIT" {
			p.i++
		}
		if !ok1 || !p.accept("TO") {
			return p.unknown()
		}
		s2, t2, ok2 := p.name()
		if !ok2 {
			return p.unknown()
		}
		out = append(out, p.change(Rename, s1, t1), p.change(Rename, s2, t2))
		if !p.acceptPunct(",") {
			return stmtChange, out
		}
	}
}

// objectWords are the words that may sit between CREATE/DROP/ALTER and the
// kind of object.
var objectWords = map[string]bool{
	"OR": true, "REPLACE": true, "TEMPORARY": true, "ONLINE": true, "OFFLINE": true, "IGNORE": true,
	"UNIQUE": true, "FULLTEXT": true, "SPATIAL": true, "ALGORITHM": true, "DEFINER": true, "SQL": true,
	"SECURITY": true, "INVOKER": true, "UNDEFINED": true, "MERGE": true, "TEMPTABLE": true,
	"AGGREGATE": true, "=": true, "@": true, "CURRENT_USER": true, "(": true, ")": true,
}

func (p *parser) object(verb string) (stmtClass, []TableChange) {
	kind := map[string]ChangeKind{"DROP": Drop, "CREATE": Create, "ALTER": Alter}[verb]
	// Skip modifiers and a DEFINER=user@host clause up to the object kind.
	for n := 0; n < 12 && p.i < len(p.toks); n++ {
		w := p.peek()
		if p.toks[p.i].quoted || objectWords[w] || objectWords[p.toks[p.i].text] {
			p.i++
			continue
		}
		break
	}
	switch p.peek() {
	case "TABLE", "TABLES", "SEQUENCE", "VIEW":
		p.i++
		p.accept("IF", "NOT", "EXISTS")
		p.accept("IF", "EXISTS")
		if verb == "DROP" {
			return p.tableList(kind)
		}
		s, t, ok := p.name()
		if !ok {
			return p.unknown()
		}
		out := []TableChange{p.change(kind, s, t)}
		if verb == "ALTER" {
			out = append(out, p.alterRename()...)
		}
		return stmtChange, out
	case "INDEX", "KEY":
		// CREATE INDEX i ON t / DROP INDEX i ON t: the table is altered.
		p.i++
		p.accept("IF", "NOT", "EXISTS")
		p.accept("IF", "EXISTS")
		if _, _, ok := p.name(); !ok || !p.accept("ON") {
			return p.unknown()
		}
		s, t, ok := p.name()
		if !ok {
			return p.unknown()
		}
		return stmtChange, []TableChange{p.change(Alter, s, t)}
	case "DATABASE", "SCHEMA":
		p.i++
		if verb == "ALTER" {
			return stmtIgnore, nil // defaults only
		}
		p.accept("IF", "NOT", "EXISTS")
		p.accept("IF", "EXISTS")
		if p.i >= len(p.toks) || p.toks[p.i].punct {
			return p.unknown()
		}
		return stmtChange, []TableChange{p.change(kind, p.toks[p.i].text, "")}
	case "USER", "ROLE", "TRIGGER", "PROCEDURE", "FUNCTION", "EVENT", "SERVER", "PACKAGE",
		"TABLESPACE", "LOGFILE", "RESOURCE", "SPATIAL_REFERENCE_SYSTEM":
		return stmtIgnore, nil
	}
	return p.unknown()
}

// alterRename finds a RENAME [TO|AS] clause in an ALTER TABLE, and an
// EXCHANGE PARTITION p WITH TABLE t clause, whose other table's rows change
// too. Only the tokens read by tokenize are searched.
func (p *parser) alterRename() []TableChange {
	for ; p.i < len(p.toks); p.i++ {
		if p.accept("EXCHANGE", "PARTITION") {
			for p.i < len(p.toks) && p.peek() != "WITH" {
				p.i++
			}
			if p.accept("WITH", "TABLE") {
				if s, t, ok := p.name(); ok {
					return []TableChange{p.change(Alter, s, t)}
				}
			}
			return []TableChange{p.change(Unknown, "", "")}
		}
		if p.peek() != "RENAME" {
			continue
		}
		p.i++
		if p.accept("COLUMN") || p.accept("INDEX") || p.accept("KEY") || p.accept("CONSTRAINT") {
			continue
		}
		if !p.accept("TO") {
			p.accept("AS")
		}
		if s, t, ok := p.name(); ok {
			return []TableChange{p.change(Rename, s, t)}
		}
	}
	return nil
}

// dml reads the target of a statement-logged INSERT, REPLACE, UPDATE,
// DELETE or LOAD DATA. A multi-table form falls back to unknown.
func (p *parser) dml(verb string) (stmtClass, []TableChange) {
	for p.accept("LOW_PRIORITY") || p.accept("DELAYED") || p.accept("HIGH_PRIORITY") ||
		p.accept("QUICK") || p.accept("IGNORE") || p.accept("CONCURRENT") || p.accept("LOCAL") {
	}
	switch verb {
	case "LOAD":
		if !p.accept("DATA") && !p.accept("XML") {
			return p.unknown()
		}
		for p.accept("LOW_PRIORITY") || p.accept("CONCURRENT") || p.accept("LOCAL") {
		}
		// INFILE 'file' [REPLACE|IGNORE] INTO TABLE t
		for ; p.i < len(p.toks); p.i++ {
			if p.accept("INTO", "TABLE") {
				return p.single()
			}
		}
		return p.unknown()
	case "INSERT", "REPLACE":
		p.accept("INTO")
		return p.single()
	case "DELETE":
		if !p.accept("FROM") {
			return p.unknown() // DELETE t1, t2 FROM ...
		}
		return p.single()
	default: // UPDATE
		return p.single()
	}
}

// single reads one table name. Up to the clause that follows the target
// (SET, WHERE, VALUES, a column list, ...) there must be no list or join;
// otherwise the statement may touch more tables than it names here.
func (p *parser) single() (stmtClass, []TableChange) {
	s, t, ok := p.name()
	if !ok {
		return p.unknown()
	}
	for ; ; p.i++ {
		if p.i == len(p.toks) {
			if p.truncated {
				return p.unknown() // the rest may list more tables
			}
			break
		}
		tok := p.toks[p.i]
		if tok.punct {
			if tok.text == "," {
				return p.unknown()
			}
			break // "(" of a column list, ";" ...
		}
		if tok.quoted {
			continue // an alias
		}
		w := strings.ToUpper(tok.text)
		if singleEnd[w] {
			break
		}
		if joinWords[w] {
			return p.unknown()
		}
	}
	// Triggers fire on the replica side of a statement-logged write and are
	// not in the log: they may change any table of any schema, so the whole
	// server is reported as well as the target.
	return stmtChange, []TableChange{p.change(Unknown, s, t), p.change(Unknown, "", "")}
}

var singleEnd = map[string]bool{
	"SET": true, "WHERE": true, "VALUES": true, "VALUE": true, "SELECT": true, "ORDER": true,
	"LIMIT": true, "PARTITION": true, "RETURNING": true, "ON": true, "CHARACTER": true,
	"FIELDS": true, "COLUMNS": true, "LINES": true, "IGNORE": true, "TABLE": true, "WITH": true,
	"DEFAULT": true, "FOR": true, "PORTION": true,
}

var joinWords = map[string]bool{
	"JOIN": true, "INNER": true, "LEFT": true, "RIGHT": true, "STRAIGHT_JOIN": true, "CROSS": true,
	"NATURAL": true, "USING": true, "FROM": true,
}
