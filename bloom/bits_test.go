package bloom_test

import (
	"context"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/bits-and-blooms/bitset"
	bloomv3 "github.com/bits-and-blooms/bloom/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/bloom"
)

func TestRedisBytesLayout(t *testing.T) {
	for _, tc := range []struct {
		bit  uint
		byte int
		mask byte
	}{
		{0, 0, 0x80}, {1, 0, 0x40}, {7, 0, 0x01}, {8, 1, 0x80}, {9, 1, 0x40},
		{63, 7, 0x01}, {64, 8, 0x80}, {100, 12, 0x08}, {129, 16, 0x40},
	} {
		b := bitset.New(130)
		b.Set(tc.bit)
		got := bloom.RedisBytes(b.Words(), 17)
		want := make([]byte, 17)
		want[tc.byte] = tc.mask
		assert.Equal(t, want, got, "bit %d", tc.bit)
		assert.Equal(t, b.Words(), bloom.BitsetWords(got, 130), "bit %d back", tc.bit)
	}
}

func TestBitsetWordsPadsAndMasks(t *testing.T) {
	// A short string reads as zeros; bits at m and beyond are dropped.
	assert.Equal(t, []uint64{1, 0}, bloom.BitsetWords([]byte{0x80}, 100))
	all := []byte{0xff, 0xff}
	assert.Equal(t, []uint64{0x3ff}, bloom.BitsetWords(all, 10))
}

// TestBitOrderAgainstRedis checks the conversion both ways against Redis
// itself: bits set in a bitset read back with GETBIT after SET, and bits set
// with SETBIT read back from the bitset after GET.
func TestBitOrderAgainstRedis(t *testing.T) {
	ctx := context.Background()
	rdb := env.RedisClient(t)
	p := env.Prefix(t)
	const m = 10_007
	rng := rand.New(rand.NewPCG(1, 2))

	b := bitset.New(m)
	set := map[uint]bool{}
	for range 500 {
		i := uint(rng.IntN(m))
		b.Set(i)
		set[i] = true
	}
	require.NoError(t, rdb.Set(ctx, p+"out", bloom.RedisBytes(b.Words(), (m+7)/8), 0).Err())
	pipe := rdb.Pipeline()
	cmds := make([]interface{ Val() int64 }, m)
	for i := range m {
		cmds[i] = pipe.GetBit(ctx, p+"out", int64(i))
	}
	_, err := pipe.Exec(ctx)
	require.NoError(t, err)
	for i := range m {
		assert.Equal(t, set[uint(i)], cmds[i].Val() == 1, "GETBIT %d", i)
	}

	pipe = rdb.Pipeline()
	want := bitset.New(m)
	for range 500 {
		i := rng.IntN(m)
		want.Set(uint(i))
		pipe.SetBit(ctx, p+"in", int64(i), 1)
	}
	pipe.SetBit(ctx, p+"in", m-1, 0) // full length
	_, err = pipe.Exec(ctx)
	require.NoError(t, err)
	raw, err := rdb.Get(ctx, p+"in").Bytes()
	require.NoError(t, err)
	got := bitset.From(bloom.BitsetWords(raw, m))
	for i := uint(0); i < m; i++ {
		assert.Equal(t, want.Test(i), got.Test(i), "SETBIT %d", i)
	}
}

// TestSameBitsAsBloomV3 checks that keys added through Redis set exactly the
// bits bloom/v3 sets for the same keys and parameters.
func TestSameBitsAsBloomV3(t *testing.T) {
	ctx := context.Background()
	key := env.Prefix(t) + "bloom"
	f, rdb := newFilter(t, key, fastOpts(10_000))
	require.NoError(t, f.Warm(ctx, bloom.FromSeq(func(yield func(string) bool) {
		for i := range 3000 {
			if !yield("warm:" + strconv.Itoa(i)) {
				return
			}
		}
	})))
	var added []string
	for i := range 2000 {
		added = append(added, "add:"+strconv.Itoa(i))
	}
	require.NoError(t, f.Add(ctx, added...))

	p := f.Params()
	ref := bloomv3.New(uint(p.M), uint(p.K))
	for i := range 3000 {
		ref.AddString("warm:" + strconv.Itoa(i))
	}
	for _, k := range added {
		ref.AddString(k)
	}
	raw, err := rdb.Get(ctx, f.BitmapKey(f.Stats().Version)).Bytes()
	require.NoError(t, err)
	assert.Len(t, raw, int((p.M+7)/8))
	got := bitset.FromWithLength(uint(p.M), bloom.BitsetWords(raw, p.M))
	assert.True(t, ref.BitSet().Equal(got), "Redis bitmap differs from bloom/v3's: %d vs %d bits set", got.Count(), ref.BitSet().Count())
}

// TestHashVersionGolden pins the bit locations HashVersion 1 stands for: if
// bloom/v3 ever hashed differently, stored filters would read wrong and
// HashVersion would need a new number.
func TestHashVersionGolden(t *testing.T) {
	m, k := bloomv3.EstimateParameters(1_000_000, 0.01)
	assert.Equal(t, uint(9585059), m)
	assert.Equal(t, uint(7), k)
	var got []uint64
	for _, l := range bloomv3.Locations([]byte("user:42"), k) {
		got = append(got, l%uint64(m))
	}
	assert.Equal(t, goldenUser42, got)
}

var goldenUser42 = []uint64{0x4a47f3, 0x4778d4, 0x54b9a4, 0x2c027b, 0x8820fa, 0x5c5c36, 0x579ad7}
