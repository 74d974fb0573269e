package bloom

// Internals for the tests of package bloom_test.
var (
	RedisBytes  = redisBytes
	BitsetWords = bitsetWords
)

// BitmapKey returns the Redis key of version id's bitmap.
func (f *Filter) BitmapKey(id uint64) string { return f.bitmapKey(id) }
