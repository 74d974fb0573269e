package invalidate

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/cacheaside/cacheaside/binlog"
)

// errInexact is what a template returns for a value the binlog stream
// could not convert to the value the application reads (a binlog.Raw:
// text in a character set it does not convert, say). A key built from it
// could differ from the application's key by a byte, and a wrong key is a
// silently stale entry; the error makes the invalidator invalidate the
// whole table instead (see plan in apply.go).
var errInexact = errors.New("the binlog holds this value in a form the application never reads")

// A template is a key pattern such as "user:{id}" or "user:email:{email|lower}":
// literal text with placeholders that name a column and, after a '|', an
// optional format. "{{" and "}}" stand for literal braces.
type template struct {
	src   string
	parts []part
}

// part is either literal text (column == "") or a placeholder.
type part struct {
	literal string
	column  string
	format  string
}

// formats lists the placeholder formats; the empty format is the default.
var formats = map[string]bool{
	"": true, "lower": true, "upper": true, "unix": true, "unixms": true, "rfc3339": true, "date": true,
}

// parseTemplate parses a key template and rejects empty placeholders,
// unbalanced braces and unknown formats.
func parseTemplate(src string) (*template, error) {
	t := &template{src: src}
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			t.parts = append(t.parts, part{literal: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(src); i++ {
		c := src[i]
		switch {
		case c == '{' && i+1 < len(src) && src[i+1] == '{':
			lit.WriteByte('{')
			i++
		case c == '}' && i+1 < len(src) && src[i+1] == '}':
			lit.WriteByte('}')
			i++
		case c == '{':
			end := strings.IndexByte(src[i+1:], '}')
			if end < 0 {
				return nil, fmt.Errorf("invalidate: template %q: unclosed '{' at %d", src, i)
			}
			body := src[i+1 : i+1+end]
			col, format, _ := strings.Cut(body, "|")
			col, format = strings.TrimSpace(col), strings.TrimSpace(format)
			if col == "" || strings.ContainsAny(col, "{") {
				return nil, fmt.Errorf("invalidate: template %q: empty or bad placeholder {%s}", src, body)
			}
			if !formats[format] {
				return nil, fmt.Errorf("invalidate: template %q: unknown format %q (use lower, upper, unix, unixms, rfc3339 or date)", src, format)
			}
			flush()
			t.parts = append(t.parts, part{column: col, format: format})
			i += end + 1
		case c == '}':
			return nil, fmt.Errorf("invalidate: template %q: unmatched '}' at %d (write '}}' for a literal brace)", src, i)
		default:
			lit.WriteByte(c)
		}
	}
	flush()
	if len(t.columns()) == 0 {
		return nil, fmt.Errorf("invalidate: template %q names no column", src)
	}
	return t, nil
}

// columns returns the columns the template names, in order.
func (t *template) columns() []string {
	var cols []string
	for _, p := range t.parts {
		if p.column != "" {
			cols = append(cols, p.column)
		}
	}
	return cols
}

// namespace returns the cache namespace of every key the template builds:
// the text before the first ':' when that text is literal, else "".
func (t *template) namespace() string {
	if len(t.parts) == 0 || t.parts[0].column != "" {
		return ""
	}
	ns, _, ok := strings.Cut(t.parts[0].literal, ":")
	if !ok {
		return ""
	}
	return ns
}

// expand builds the key for one row image. ok is false when the image holds
// NULL in a named column: no key can refer to such a row. A column missing
// from the image (a session logging partial row images) is an error, so the
// caller invalidates more rather than a key less.
func (t *template) expand(image map[string]any) (key string, ok bool, err error) {
	var b strings.Builder
	for _, p := range t.parts {
		if p.column == "" {
			b.WriteString(p.literal)
			continue
		}
		v, present := image[p.column]
		if !present {
			return "", false, fmt.Errorf("invalidate: template %q: the row image has no column %s (partial row image?)", t.src, p.column)
		}
		if v == nil {
			return "", false, nil
		}
		s, err := formatValue(v, p.format)
		if err != nil {
			return "", false, fmt.Errorf("invalidate: template %q, column %s: %w", t.src, p.column, err)
		}
		b.WriteString(s)
	}
	return b.String(), true, nil
}

// formatValue renders a column value, as package binlog delivers it (int64,
// uint64, float, string, []byte, time.Time), the way repository code usually
// prints it: integers in decimal (unsigned stay unsigned), decimals as the server
// prints them, text as is, times in UTC. binlog's package documentation has
// the table of what each column type prints, next to what go-sql-driver
// returns for it. A binlog.Raw is refused with errInexact.
func formatValue(v any, format string) (string, error) {
	var s string
	switch x := v.(type) {
	case string:
		s = x
	case []byte:
		s = string(x)
	case int64:
		s = strconv.FormatInt(x, 10)
	case uint64:
		s = strconv.FormatUint(x, 10)
	case float64:
		s = strconv.FormatFloat(x, 'f', -1, 64)
	case float32:
		s = strconv.FormatFloat(float64(x), 'f', -1, 32)
	case bool:
		s = strconv.FormatBool(x)
	case time.Time:
		return formatTime(x.UTC(), format)
	case binlog.Raw:
		return "", fmt.Errorf("%w: %s", errInexact, x.Type)
	case fmt.Stringer:
		s = x.String()
	default:
		// Other integer and string kinds (int32, uint8, a named type such
		// as `type UserID int64`), as a repository passes them to Key.Build:
		// printed as the binlog's int64, uint64 and string are.
		switch rv := reflect.ValueOf(v); rv.Kind() {
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			s = strconv.FormatInt(rv.Int(), 10)
		case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
			s = strconv.FormatUint(rv.Uint(), 10)
		case reflect.String:
			s = rv.String()
		default:
			return "", fmt.Errorf("cannot format a %T in a key", v)
		}
	}
	switch format {
	case "":
		return s, nil
	case "lower":
		return strings.ToLower(s), nil
	case "upper":
		return strings.ToUpper(s), nil
	default:
		return "", fmt.Errorf("format %q applies to times, not %T", format, v)
	}
}

func formatTime(t time.Time, format string) (string, error) {
	switch format {
	case "unix":
		return strconv.FormatInt(t.Unix(), 10), nil
	case "unixms":
		return strconv.FormatInt(t.UnixMilli(), 10), nil
	case "date":
		return t.Format(time.DateOnly), nil
	case "", "rfc3339":
		return t.Format(time.RFC3339Nano), nil
	default:
		return "", fmt.Errorf("format %q applies to text, not times", format)
	}
}
