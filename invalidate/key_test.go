package invalidate_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/cache"
	"github.com/cacheaside/cacheaside/invalidate"
)

// Named types, as repositories declare ids and emails.
type (
	userID int64
	email  string
)

func TestKeyBuild(t *testing.T) {
	at := time.Date(2024, 2, 29, 13, 4, 5, 600_000_000, time.FixedZone("CET", 3600))
	for _, tc := range []struct {
		src    string
		values []any
		want   string
	}{
		{"user:{id}", []any{7}, "user:7"},
		{"user:{id}", []any{int32(-7)}, "user:-7"},
		{"user:{id}", []any{uint64(math.MaxUint64)}, "user:18446744073709551615"},
		{"user:{id}", []any{uint8(255)}, "user:255"},
		{"user:{id}", []any{userID(42)}, "user:42"},
		{"user:email:{email|lower}", []any{email("Ann@X.org")}, "user:email:ann@x.org"},
		{"user:email:{email|lower}", []any{"Ann@Example.COM"}, "user:email:ann@example.com"},
		{"user:email:{email|upper}", []any{[]byte("ann")}, "user:email:ANN"},
		{"order:{shop}:{id}", []any{"eu", int64(9)}, "order:eu:9"},
		{"x:{id}:{id}", []any{3}, "x:3:3"},
		{"ev:{at}", []any{at}, "ev:2024-02-29T12:04:05.6Z"},
		{"ev:{at|date}", []any{at}, "ev:2024-02-29"},
		{"ev:{at|unixms}", []any{at}, "ev:1709208245600"},
		{"{{literal}}:{id}", []any{1}, "{literal}:1"},
	} {
		k := invalidate.MustKey(tc.src)
		assert.Equal(t, tc.src, k.String())
		assert.Equal(t, tc.want, k.Build(tc.values...), tc.src)
	}
	k := invalidate.MustKey("order:{shop}:{id}:{shop}")
	assert.Equal(t, []string{"shop", "id"}, k.Columns())
	assert.PanicsWithError(t, `invalidate: key "order:{shop}:{id}:{shop}" takes 2 value(s) (shop, id), got 1`, func() { k.Build("eu") })
	assert.Panics(t, func() { k.Build(struct{}{}, 1) }, "a struct is no key part")
	assert.Panics(t, func() { k.Build(nil, 1) }, "NULL makes no key")
	_, err := invalidate.NewKey("user:{id|bogus}")
	assert.ErrorContains(t, err, "unknown format")
	assert.Panics(t, func() { invalidate.MustKey("user:{") })
}

// A key the repository builds with a Key is the key the invalidator deletes
// when a plain-SQL update changes the row. A key written by hand beside the
// rule (it forgot the rule's |lower) is never invalidated: the mistake Key
// exists to rule out.
func TestKeySharedByRepositoryAndRule(t *testing.T) {
	ctx := context.Background()
	var byID, byEmail invalidate.Key
	s := newStack(t, stackOptions{rules: func(db, prefix string) []invalidate.Rule {
		byID = invalidate.MustKey(prefix + "user:{id}")
		byEmail = invalidate.MustKey(prefix + "user:email:{email|lower}")
		return []invalidate.Rule{
			{Schema: db, Table: "users", Keys: []string{byID.String(), byEmail.String()}},
			{Schema: db, Table: "fence", Keys: []string{prefix + "fence:{id}"}},
		}
	}})
	_, err := s.db.Exec("INSERT INTO users (id, email, name) VALUES (7, 'Ann@Example.COM', 'ann')")
	require.NoError(t, err)
	s.fence(t) // the insert's own invalidation is done

	// The repository reads the row as the application does and caches it
	// under the keys it builds.
	var id uint64
	var email string
	require.NoError(t, s.db.QueryRow("SELECT id, email FROM users WHERE id = 7").Scan(&id, &email))
	handWritten := s.prefix + "user:email:" + email
	for _, key := range []string{byID.Build(id), byEmail.Build(email), handWritten} {
		_, err := cache.Fetch(ctx, s.cache, key, func(context.Context) (string, error) { return "ann", nil })
		require.NoError(t, err)
		require.EqualValues(t, 1, s.rdb.Exists(ctx, key).Val())
	}

	_, err = s.db.Exec("UPDATE users SET name = 'ann v2' WHERE id = 7")
	require.NoError(t, err)
	s.fence(t)
	assert.EqualValues(t, 0, s.rdb.Exists(ctx, byID.Build(id)).Val(), "invalidated")
	assert.EqualValues(t, 0, s.rdb.Exists(ctx, byEmail.Build(email)).Val(), "invalidated")
	assert.EqualValues(t, 1, s.rdb.Exists(ctx, handWritten).Val(), "a hand-written key that differs by case is never invalidated")
}
