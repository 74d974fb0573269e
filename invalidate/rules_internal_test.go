package invalidate

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/binlog"
	"github.com/cacheaside/cacheaside/cache"
)

func TestVersionedKeys(t *testing.T) {
	rules, err := NewRules(
		Rule{Table: "users", Keys: []string{"user:{id}"}, Version: "version"},
		Rule{Table: "users", Keys: []string{"users:all:{id}"}},
	)
	require.NoError(t, err)
	tests := []struct {
		name      string
		row       binlog.Row
		plain     []string
		versioned []cache.KeyVersion
		err       string
	}{
		{"insert: the new version", binlog.Row{Table: "users", Op: binlog.Insert, After: map[string]any{"id": int64(1), "version": int64(1)}},
			[]string{"users:all:1"}, []cache.KeyVersion{{Key: "user:1", Version: 1}}, ""},
		{"update: the after image's version for both images' keys", binlog.Row{Table: "users", Op: binlog.Update,
			Before: map[string]any{"id": int64(1), "version": int64(4)}, After: map[string]any{"id": int64(1), "version": uint64(5)}},
			[]string{"users:all:1"}, []cache.KeyVersion{{Key: "user:1", Version: 5}, {Key: "user:1", Version: 5}}, ""},
		{"delete: one above the deleted version", binlog.Row{Table: "users", Op: binlog.Delete, Before: map[string]any{"id": int64(1), "version": int64(7)}},
			[]string{"users:all:1"}, []cache.KeyVersion{{Key: "user:1", Version: 8}}, ""},
		{"NULL version: plain", binlog.Row{Table: "users", Op: binlog.Insert, After: map[string]any{"id": int64(2), "version": nil}},
			[]string{"user:2", "users:all:2"}, nil, ""},
		{"text version: an error", binlog.Row{Table: "users", Op: binlog.Insert, After: map[string]any{"id": int64(2), "version": "x"}},
			nil, nil, "not an integer"},
		{"no version column: an error", binlog.Row{Table: "users", Op: binlog.Insert, After: map[string]any{"id": int64(2)}},
			nil, nil, "no version column"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			plain, versioned, err := rules.keys(tc.row)
			if tc.err != "" {
				assert.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.plain, plain)
			assert.Equal(t, tc.versioned, versioned)
		})
	}
}
