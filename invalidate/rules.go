package invalidate

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/cacheaside/cacheaside/binlog"
	"github.com/cacheaside/cacheaside/cache"
)

// Rule maps one table to the cache keys that hold copies of its rows.
type Rule struct {
	// Schema is the database of the table; "" matches the table in any database.
	Schema string
	// Table is the table name.
	Table string
	// Keys are key templates such as "user:{id}" or "user:email:{email|lower}":
	// literal text and placeholders naming a column, with an optional format
	// after '|' (lower, upper for text; unix, unixms, rfc3339, date for times).
	// Integers print in decimal (unsigned as unsigned), DECIMAL as the server
	// prints it, times in UTC RFC 3339. "{{" and "}}" are literal braces.
	// Write each template once, as a Key, and give its String here: the
	// repository then builds its keys with the same Key (Key.Build) and the
	// two sides cannot print a key differently.
	Keys []string
	// Func returns more keys for a row change; it sees both images. Optional.
	Func func(row binlog.Row) []string
	// Version names a column whose value grows with every change of a row
	// (a version or update counter). With it, the keys of an inserted or
	// updated row get a versioned tombstone (cache.InvalidateVersions) that
	// refuses any fill older than the change: a reader of a lagging replica
	// (race R4), or of a commit not yet visible (R5), cannot install the old
	// row, for as long as the tombstone lives. Cached values must implement
	// cache.Versioner. Optional.
	Version string
	// Namespaces are the cache namespaces (the key text before the first ':')
	// that Func's keys live in, bumped on a table-wide change. Templates add
	// their own. A rule with a Func and no Namespaces makes a table-wide change
	// of its table flush the whole cache.
	Namespaces []string
}

// Rules is a validated set of Rule values, looked up by table.
type Rules struct {
	byTable map[string][]*compiled // key: table name

	// cascades maps a table to the watched tables that its row changes can
	// change through foreign keys, learnt by Check (MySQL does not log them).
	cascades atomic.Pointer[map[tableOp][]tableName]
}

type tableName struct{ schema, table string }

type tableOp struct {
	tableName
	op binlog.Op
}

type compiled struct {
	Rule
	templates  []*template
	namespaces []string
	flushAll   bool // a table-wide change cannot be scoped to namespaces
}

// NewRules parses the templates of every rule. It fails on a rule without a
// table, without keys, or with a malformed template.
func NewRules(rules ...Rule) (*Rules, error) {
	rs := &Rules{byTable: map[string][]*compiled{}}
	for i, r := range rules {
		if r.Table == "" {
			return nil, fmt.Errorf("invalidate: rule %d: no Table", i)
		}
		if len(r.Keys) == 0 && r.Func == nil {
			return nil, fmt.Errorf("invalidate: rule for %s: no Keys and no Func", r.Table)
		}
		c := &compiled{Rule: r}
		for _, src := range r.Keys {
			t, err := parseTemplate(src)
			if err != nil {
				return nil, err
			}
			c.templates = append(c.templates, t)
			if ns := t.namespace(); ns != "" {
				c.namespaces = append(c.namespaces, ns)
			} else {
				c.flushAll = true
			}
		}
		c.namespaces = append(c.namespaces, r.Namespaces...)
		if r.Func != nil && len(r.Namespaces) == 0 {
			c.flushAll = true
		}
		slices.Sort(c.namespaces)
		c.namespaces = slices.Compact(c.namespaces)
		rs.byTable[r.Table] = append(rs.byTable[r.Table], c)
	}
	return rs, nil
}

func (rs *Rules) match(schema, table string) []*compiled {
	var out []*compiled
	for _, c := range rs.byTable[table] {
		if c.Schema == "" || c.Schema == schema {
			out = append(out, c)
		}
	}
	return out
}

// Keys returns the cache keys a row change touches: the keys built from the
// before image and from the after image, so a changed email invalidates the
// old key and the new one. Duplicates are removed.
func (rs *Rules) Keys(row binlog.Row) ([]string, error) {
	plain, versioned, err := rs.keys(row)
	keys := keyNames(plain, versioned)
	slices.Sort(keys)
	return slices.Compact(keys), err
}

// keyNames returns plain and the keys of versioned in one new slice.
func keyNames(plain []string, versioned []cache.KeyVersion) []string {
	keys := make([]string, 0, len(plain)+len(versioned))
	keys = append(keys, plain...)
	for _, kv := range versioned {
		keys = append(keys, kv.Key)
	}
	return keys
}

// keys splits a row change's keys into plain ones and, for rules with a
// Version column, keys paired with the row's version after the change.
func (rs *Rules) keys(row binlog.Row) (plain []string, versioned []cache.KeyVersion, err error) {
	for _, c := range rs.match(row.Schema, row.Table) {
		version, hasVersion := int64(0), false
		if c.Version != "" {
			version, hasVersion, err = rowVersion(row, c.Version)
			if err != nil {
				return nil, nil, err
			}
		}
		for _, t := range c.templates {
			for _, img := range []map[string]any{row.Before, row.After} {
				if img == nil {
					continue
				}
				k, ok, err := t.expand(img)
				if err != nil {
					return nil, nil, err
				}
				switch {
				case !ok:
				case hasVersion:
					versioned = append(versioned, cache.KeyVersion{Key: k, Version: version})
				default:
					plain = append(plain, k)
				}
			}
		}
		if c.Func != nil {
			plain = append(plain, c.Func(row)...)
		}
	}
	slices.Sort(plain)
	return slices.Compact(plain), versioned, nil
}

// rowVersion returns the version floor of a row change: the after image's
// version, or for a delete the before image's version plus one, which
// refuses the deleted row from a lagging reader (and, for the tombstone's
// life, a cached not-found: readers then get it from the source).
func rowVersion(row binlog.Row, column string) (v int64, hasVersion bool, err error) {
	img, bump := row.After, int64(0)
	if img == nil {
		img, bump = row.Before, 1
	}
	raw, ok := img[column]
	if !ok {
		return 0, false, fmt.Errorf("invalidate: the row image of %s has no version column %s", qualified(row.Schema, row.Table), column)
	}
	switch x := raw.(type) {
	case int64:
		if x == math.MaxInt64 {
			bump = 0
		}
		return x + bump, true, nil
	case uint64:
		if x >= math.MaxInt64 {
			return 0, false, fmt.Errorf("invalidate: version %d of %s does not fit an int64", x, qualified(row.Schema, row.Table))
		}
		return int64(x) + bump, true, nil
	case nil:
		return 0, false, nil
	default:
		return 0, false, fmt.Errorf("invalidate: version column %s of %s holds a %T, not an integer", column, qualified(row.Schema, row.Table), raw)
	}
}

// TableWide returns what a change to a whole table invalidates: the
// namespaces of the table's keys, or all=true when some of its keys cannot
// be scoped to a namespace. A table without rules invalidates nothing.
// An empty table stands for every table of the schema (DROP DATABASE, a
// statement the binlog could not map to one table), and an empty schema
// as well for every schema.
func (rs *Rules) TableWide(schema, table string) (namespaces []string, all bool) {
	var cs []*compiled
	if table != "" {
		cs = rs.match(schema, table)
	} else {
		for _, list := range rs.byTable {
			for _, c := range list {
				if schema == "" || c.Schema == "" || c.Schema == schema {
					cs = append(cs, c)
				}
			}
		}
	}
	for _, c := range cs {
		all = all || c.flushAll
		namespaces = append(namespaces, c.namespaces...)
	}
	slices.Sort(namespaces)
	return slices.Compact(namespaces), all
}

// Watches reports whether any rule names the table.
func (rs *Rules) Watches(schema, table string) bool { return len(rs.match(schema, table)) > 0 }

// Check verifies against the live schema that every table with a rule
// exists and has every column its templates name. db's default database is
// used for rules without a Schema. Run it at start: a template naming a
// column the table lacks would otherwise never produce its key.
//
// Check also learns the foreign keys whose ON DELETE or ON UPDATE CASCADE
// or SET NULL can change a watched table. The binary log holds no rows for
// such cascaded changes (race R8), so a change to the parent table then
// invalidates the watched table as a whole. Run Check again after such a
// foreign key is added.
//
// Under lower_case_table_names=1 the server stores, and the binary log
// names, every database and table in lower case: Check then matches the
// rules' Schema and Table in lower case too, so a rule written with the
// application's spelling ("Users") still matches. Without Check, write
// them in lower case on such a server.
func (rs *Rules) Check(ctx context.Context, db *sql.DB) error {
	var lower int
	if err := db.QueryRowContext(ctx, "SELECT @@lower_case_table_names").Scan(&lower); err != nil {
		return fmt.Errorf("invalidate: read lower_case_table_names: %w", err)
	}
	if lower == 1 {
		rs.foldNames()
	}
	if err := rs.learnCascades(ctx, db); err != nil {
		return err
	}
	var errs []error
	for table, cs := range rs.byTable {
		for _, c := range cs {
			cols, err := tableColumns(ctx, db, c.Schema, table)
			if err != nil {
				return err
			}
			if len(cols) == 0 {
				errs = append(errs, fmt.Errorf("invalidate: rule for %s: table not found", qualified(c.Schema, table)))
				continue
			}
			if c.Version != "" && !cols[c.Version] {
				errs = append(errs, fmt.Errorf("invalidate: rule for %s: no version column %q", qualified(c.Schema, table), c.Version))
			}
			for _, t := range c.templates {
				for _, col := range t.columns() {
					if !cols[col] {
						errs = append(errs, fmt.Errorf("invalidate: template %q: table %s has no column %q",
							t.src, qualified(c.Schema, table), col))
					}
				}
			}
		}
	}
	return errors.Join(errs...)
}

// foldNames keys the rules by their lower-case names, as a server with
// lower_case_table_names=1 reports them.
func (rs *Rules) foldNames() {
	folded := make(map[string][]*compiled, len(rs.byTable))
	for table, cs := range rs.byTable {
		lt := strings.ToLower(table)
		for _, c := range cs {
			c.Schema, c.Table = strings.ToLower(c.Schema), lt
		}
		folded[lt] = append(folded[lt], cs...)
	}
	rs.byTable = folded
}

func qualified(schema, table string) string {
	if schema == "" {
		return table
	}
	return schema + "." + table
}

func tableColumns(ctx context.Context, db *sql.DB, schema, table string) (map[string]bool, error) {
	q := "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = COALESCE(NULLIF(?, ''), DATABASE()) AND TABLE_NAME = ?"
	rows, err := db.QueryContext(ctx, q, schema, table)
	if err != nil {
		return nil, fmt.Errorf("invalidate: read columns of %s: %w", qualified(schema, table), err)
	}
	defer rows.Close()
	cols := map[string]bool{}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, err
		}
		cols[name] = true
	}
	return cols, rows.Err()
}

// cascaded returns the watched tables that a row change of op on a table
// can change through foreign-key cascades, as learnt by Check.
func (rs *Rules) cascaded(schema, table string, op binlog.Op) []tableName {
	m := rs.cascades.Load()
	if m == nil {
		return nil
	}
	return (*m)[tableOp{tableName{schema, table}, op}]
}

// learnCascades reads every foreign key with a cascading action and keeps,
// for each parent table and operation, the watched tables reached through
// any chain of them.
func (rs *Rules) learnCascades(ctx context.Context, db *sql.DB) error {
	rows, err := db.QueryContext(ctx, `SELECT CONSTRAINT_SCHEMA, TABLE_NAME, UNIQUE_CONSTRAINT_SCHEMA,
		REFERENCED_TABLE_NAME, UPDATE_RULE, DELETE_RULE FROM information_schema.REFERENTIAL_CONSTRAINTS`)
	if err != nil {
		return fmt.Errorf("invalidate: read foreign keys: %w", err)
	}
	defer rows.Close()
	type edge struct {
		child tableName
		op    binlog.Op // what the child row undergoes
	}
	edges := map[tableOp][]edge{}
	for rows.Next() {
		var child, parent tableName
		var onUpdate, onDelete string
		if err := rows.Scan(&child.schema, &child.table, &parent.schema, &parent.table, &onUpdate, &onDelete); err != nil {
			return fmt.Errorf("invalidate: read foreign keys: %w", err)
		}
		switch onDelete {
		case "CASCADE":
			edges[tableOp{parent, binlog.Delete}] = append(edges[tableOp{parent, binlog.Delete}], edge{child, binlog.Delete})
		case "SET NULL", "SET DEFAULT":
			edges[tableOp{parent, binlog.Delete}] = append(edges[tableOp{parent, binlog.Delete}], edge{child, binlog.Update})
		}
		if onUpdate == "CASCADE" || onUpdate == "SET NULL" || onUpdate == "SET DEFAULT" {
			edges[tableOp{parent, binlog.Update}] = append(edges[tableOp{parent, binlog.Update}], edge{child, binlog.Update})
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("invalidate: read foreign keys: %w", err)
	}
	out := map[tableOp][]tableName{}
	for start := range edges {
		seen := map[tableOp]bool{start: true}
		queue := []tableOp{start}
		for len(queue) > 0 {
			cur := queue[0]
			queue = queue[1:]
			for _, e := range edges[cur] {
				next := tableOp{e.child, e.op}
				if seen[next] {
					continue
				}
				seen[next] = true
				queue = append(queue, next)
				if rs.Watches(e.child.schema, e.child.table) && !slices.Contains(out[start], e.child) {
					out[start] = append(out[start], e.child)
				}
			}
		}
	}
	rs.cascades.Store(&out)
	return nil
}
