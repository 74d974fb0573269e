package bloom

// Internals for the tests of package bloom_test.
var (
	RedisBytes  = redisBytes
	BitsetWords = bitsetWords
)

// BitmapKey returns the Redis key of version id's bitmap.
func (f *Filter) BitmapKey(id uint64) string { return f.bitmapKey(id) }

// Channel returns the channel the filter's adds are published on.
func (f *Filter) Channel() string { return f.channel() }

// SetBeforeReceive makes Run call fn before each read from its
// subscription. Call it before Run.
func (f *Filter) SetBeforeReceive(fn func()) { f.beforeReceive = fn }
