package cache

// Test hooks: set before the Cache is used.

// SetHookBeforeFill makes a flight call f after its load, before its fill.
func SetHookBeforeFill(c *Cache, f func(key string)) { c.hookBeforeFill = f }

// SetHookAfterLoad makes a lease holder call f right after its loader returns.
func SetHookAfterLoad(c *Cache, f func(key string)) { c.hookAfterLoad = f }

// SetHookLeaseWaited makes a flight call f after each pause on another's lease.
func SetHookLeaseWaited(c *Cache, f func(key string)) { c.hookLeaseWaited = f }

// SetHookJoined makes every Fetch that runs or joins a flight call f with
// the flight's key once it is registered with the flight.
func SetHookJoined(c *Cache, f func(flightKey string)) { c.hookJoined = f }

// SetHookAfterGet makes Fetch call f after each GET it sends for a key
// (alone or for the callers that share it), before the answer is used.
func SetHookAfterGet(c *Cache, f func(key string)) { c.hookAfterGet = f }

// KindOf names the kind of a stored entry: value, not-found, lease,
// tombstone, refresh, or corrupt.
func KindOf(b []byte) string {
	h, _, err := decodeHeader(b)
	if err != nil {
		return "corrupt"
	}
	return [...]string{"", "value", "not-found", "lease", "tombstone", "refresh"}[h.kind]
}

// GenerationsOf returns the namespace and global generations in an entry.
func GenerationsOf(b []byte) (ns, all uint64) {
	h, _, _ := decodeHeader(b)
	return h.nsGen, h.allGen
}

// TTLOf returns the logical time to live recorded in an entry, in ms.
func TTLOf(b []byte) uint64 {
	h, _, _ := decodeHeader(b)
	return h.ttl
}

// Namespace is namespace.
var Namespace = namespace

// VersionOf returns the row version an entry records, if any.
func VersionOf(b []byte) (uint64, bool) {
	h, _, err := decodeHeader(b)
	return h.rowVer, err == nil && h.versioned
}

// VersionedLease returns a lease entry carrying floor ver, filled at filled
// (Unix ms) with the floor lapsing ttl ms later.
func VersionedLease(ver, filled, ttl uint64) []byte {
	return encodeEntry(header{kind: kindLease, versioned: true, rowVer: ver, filled: filled, ttl: ttl}, newToken())
}

// VersionedHold returns a versioned tombstone at floor ver whose hold ends
// at filled (Unix ms, the writer's clock), the floor living ttl ms after.
func VersionedHold(ver, filled, ttl uint64) []byte {
	return encodeEntry(header{kind: kindTombstone, versioned: true, rowVer: ver, filled: filled, ttl: ttl})
}
