package invalidate

import (
	"fmt"
	"slices"
	"strings"
)

// Key is a key template that the repository and the invalidator share. The
// repository builds its cache keys with Build; the rule lists the same Key
// (Rule.Keys takes its String); the invalidator renders the binlog's row
// images through the same template and the same formatting. Written once,
// the two sides cannot print a key differently, which is the one mistake
// the invalidator cannot notice: a key printed differently is a key nobody
// reads, and the cached row stays stale until its TTL.
//
//	var userByEmail = invalidate.MustKey("user:email:{email|lower}")
//
//	rules, err := invalidate.NewRules(invalidate.Rule{Table: "users", Keys: []string{userByEmail.String()}})
//	...
//	u, err := cache.Fetch(ctx, c, userByEmail.Build(email), loadByEmail)
type Key struct {
	t *template
}

// NewKey parses a key template (the syntax of Rule.Keys).
func NewKey(src string) (Key, error) {
	t, err := parseTemplate(src)
	if err != nil {
		return Key{}, err
	}
	return Key{t}, nil
}

// MustKey is NewKey for templates fixed in the program: it panics on a
// malformed template, so a bad one fails at start.
func MustKey(src string) Key {
	k, err := NewKey(src)
	if err != nil {
		panic(err)
	}
	return k
}

// String returns the template, for Rule.Keys.
func (k Key) String() string { return k.t.src }

// Columns returns the columns the template names, each once, in the order
// Build takes their values.
func (k Key) Columns() []string {
	var cols []string
	for _, c := range k.t.columns() {
		if !slices.Contains(cols, c) {
			cols = append(cols, c)
		}
	}
	return cols
}

// Build renders the key from one value per column, in the order of Columns,
// exactly as the invalidator renders a row image: Go integers of any size
// or named integer type print in decimal, strings and []byte as they are (then lower or upper if
// the placeholder says so), time.Time in UTC in the placeholder's format.
// Give each value as the application read it from the database.
//
// Build panics when the number of values differs from the number of
// columns or a value's type cannot be part of a key (a struct, a map): both
// are mistakes in the program, not in the data.
func (k Key) Build(values ...any) string {
	s, err := k.build(values)
	if err != nil {
		panic(err)
	}
	return s
}

func (k Key) build(values []any) (string, error) {
	cols := k.Columns()
	if len(values) != len(cols) {
		return "", fmt.Errorf("invalidate: key %q takes %d value(s) (%s), got %d",
			k.t.src, len(cols), strings.Join(cols, ", "), len(values))
	}
	image := make(map[string]any, len(cols))
	for i, c := range cols {
		image[c] = values[i]
	}
	s, ok, err := k.t.expand(image)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", fmt.Errorf("invalidate: key %q: a nil value (a NULL column) makes no key", k.t.src)
	}
	return s, nil
}
