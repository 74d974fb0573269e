package invalidate_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/bloom"
	"github.com/cacheaside/cacheaside/invalidate"
)

// TestFilterErrorDoesNotBlockInvalidation: the filter in Redis was stored
// by a version of bloom with a hash this one cannot compute, so every Add
// fails with a *bloom.MismatchError. Retrying cannot cure that; the
// invalidator must delete the filter (which then answers "may contain")
// and go on invalidating, not retry the batch for ever.
func TestFilterErrorDoesNotBlockInvalidation(t *testing.T) {
	ctx := context.Background()
	rdb := env.RedisClient(t)
	key := env.Prefix(t) + "bloom"
	filter := bloom.New(rdb, key, &bloom.Options{ExpectedItems: 1000})
	require.NoError(t, filter.Warm(ctx, bloom.FromSeq(func(yield func(string) bool) {})))
	p := filter.Params()
	spec := strconv.FormatUint(filter.Stats().Version, 10) + ":" + strconv.FormatUint(p.M, 10) + ":" + strconv.FormatUint(p.K, 10) + ":99"
	require.NoError(t, rdb.HSet(ctx, key, "cur", spec).Err())
	require.ErrorIs(t, filter.Add(ctx, "probe"), bloom.ErrMismatch)

	s := newStack(t, stackOptions{inv: &invalidate.Options{Filter: filter, RetryMax: 20 * time.Millisecond}})
	_, err := s.db.Exec("INSERT INTO users (id, email, name) VALUES (1, 'ann@example.com', 'Ann')")
	require.NoError(t, err)
	assert.Eventually(t, func() bool { return s.applied.count(userKey(s.prefix, 1)) > 0 }, 10*time.Second, time.Millisecond,
		"the insert's invalidation never happened: the filter's error holds it back")
	assert.Equal(t, uint64(1), s.inv.Stats().FilterResets)
	assert.ErrorIs(t, filter.Check(ctx), bloom.ErrNotWarm, "the filter must be deleted, to fail open")
	assert.True(t, filter.MayContain(ctx, userKey(s.prefix, 1)))
}
