package invalidate

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/binlog"
)

func TestTemplateExpand(t *testing.T) {
	when := time.Date(2026, 3, 4, 5, 6, 7, 800_000_000, time.FixedZone("X", 3600))
	row := map[string]any{
		"id": int64(-42), "uid": uint64(18446744073709551615), "email": "Ada@Example.COM",
		"price": "12.50", "at": when, "blob": []byte("b"), "ok": true, "none": nil, "f": 1.5,
	}
	tests := []struct {
		tmpl, want string
		ok         bool
	}{
		{"user:{id}", "user:-42", true},
		{"user:{uid}", "user:18446744073709551615", true},
		{"user:email:{email}", "user:email:Ada@Example.COM", true},
		{"user:email:{email|lower}", "user:email:ada@example.com", true},
		{"user:email:{ email | upper }", "user:email:ADA@EXAMPLE.COM", true},
		{"price:{price}", "price:12.50", true},
		{"t:{at}", "t:2026-03-04T04:06:07.8Z", true},
		{"t:{at|unix}", "t:1772597167", true},
		{"t:{at|unixms}", "t:1772597167800", true},
		{"t:{at|date}", "t:2026-03-04", true},
		{"b:{blob}:{ok}:{f}", "b:b:true:1.5", true},
		{"{{lit}}:{id}", "{lit}:-42", true},
		{"n:{none}", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.tmpl, func(t *testing.T) {
			tm, err := parseTemplate(tc.tmpl)
			require.NoError(t, err)
			got, ok, err := tm.expand(row)
			require.NoError(t, err)
			assert.Equal(t, tc.ok, ok)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestTemplateErrors(t *testing.T) {
	for _, src := range []string{"user:{", "user:{}", "user:}", "user:{id|nope}", "user:plain", "a:{b{c}"} {
		_, err := parseTemplate(src)
		assert.Error(t, err, src)
	}
	tm, err := parseTemplate("u:{email|unix}")
	require.NoError(t, err)
	_, _, err = tm.expand(map[string]any{"email": "x"})
	assert.ErrorContains(t, err, "applies to times")
	tm, err = parseTemplate("u:{id}")
	require.NoError(t, err)
	_, _, err = tm.expand(map[string]any{"id": struct{}{}})
	assert.Error(t, err)
	_, _, err = tm.expand(map[string]any{"id": binlog.Raw{Type: "text in character set ujis", Data: []byte{0xa4}}})
	assert.ErrorIs(t, err, errInexact, "a value the binlog could not convert builds no key")
	_, _, err = tm.expand(map[string]any{"other": 1})
	assert.ErrorContains(t, err, "no column id", "a partial row image is an error, not a row without a key")
}

func TestTemplateNamespace(t *testing.T) {
	for src, want := range map[string]string{
		"user:{id}": "user", "user:email:{email}": "user", "{id}:user": "", "user{id}": "", "order:{a}:{b}": "order",
	} {
		tm, err := parseTemplate(src)
		require.NoError(t, err)
		assert.Equal(t, want, tm.namespace(), src)
	}
}

func FuzzTemplate(f *testing.F) {
	for _, s := range []string{"user:{id}", "{{x}}:{a|lower}", "a:{b|unix}", "}", "{"} {
		f.Add(s, "v")
	}
	f.Fuzz(func(t *testing.T, src, val string) {
		tm, err := parseTemplate(src)
		if err != nil {
			return
		}
		img := map[string]any{}
		for _, c := range tm.columns() {
			img[c] = val
		}
		key, ok, err := tm.expand(img)
		if err == nil && !ok {
			t.Fatalf("template %q: every column present but no key", src)
		}
		_ = key
	})
}
