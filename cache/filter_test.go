package cache_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/bloom"
	"github.com/cacheaside/cacheaside/cache"
)

var _ cache.Adder = (*bloom.Filter)(nil)

// A row inserted through Write or WriteStrong passes the filter at once:
// the Fetch right after the write finds it, without waiting for the
// binlog invalidator to add the key.
func TestWriteAddsKeysToFilter(t *testing.T) {
	for _, strong := range []bool{false, true} {
		f := newFixture(t)
		ctx := context.Background()
		filter := bloom.New(f.rdb, f.base+"bloom", &bloom.Options{ExpectedItems: 1000})
		require.NoError(t, filter.Warm(ctx, bloom.Scan(ctx, f.db, f.base+"user:", "SELECT id FROM users")))
		c := f.cache(&cache.Options{Filter: filter, Strong: strong})
		key := f.key("user", 3)
		_, err := cache.Fetch(ctx, c, key, f.loader(3))
		require.ErrorIs(t, err, cache.ErrNotFound, "not in the table, not in the filter")

		require.NoError(t, c.Write(ctx, []string{key}, func(ctx context.Context) error {
			_, err := f.db.ExecContext(ctx, "INSERT INTO users VALUES (3, 'cid')")
			return err
		}))
		u, err := cache.Fetch(ctx, c, key, f.loader(3))
		require.NoError(t, err, "strong %v: the inserted row is found right after the write", strong)
		assert.Equal(t, "cid", u.Name)
	}
}
