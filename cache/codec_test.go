package cache

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestHeaderRoundTrip(t *testing.T) {
	token := bytes.Repeat([]byte{7}, tokenLen)
	for _, tc := range []struct {
		name    string
		h       header
		payload []byte
	}{
		{"value", header{kind: kindValue, nsGen: 3, allGen: 1, filled: 1_700_000_000_123, ttl: 600_000, loadDur: 12}, []byte(`{"id":1}`)},
		{"empty value", header{kind: kindValue}, nil},
		{"not found", header{kind: kindNotFound, nsGen: 1 << 40, filled: 1, ttl: 30_000}, nil},
		{"lease", header{kind: kindLease, nsGen: 9, allGen: 8, filled: 7}, token},
		{"tombstone", header{kind: kindTombstone, filled: 5, ttl: 2000}, nil},
		{"refresh", header{kind: kindRefresh, nsGen: 2, ttl: 1}, append(append([]byte{}, token...), `"old"`...)},
		{"versioned tombstone", header{kind: kindTombstone, versioned: true, rowVer: 2, filled: 5, ttl: 60_000}, nil},
		{"versioned tombstone at 0", header{kind: kindTombstone, versioned: true, filled: 5, ttl: 60_000}, nil},
		{"versioned lease", header{kind: kindLease, versioned: true, rowVer: 1 << 62, nsGen: 4, filled: 7, ttl: 9}, token},
		{"versioned value", header{kind: kindValue, versioned: true, rowVer: ^uint64(0), nsGen: 1, filled: 2, ttl: 3, loadDur: 4}, []byte(`{"v":3}`)},
		{"max varints", header{kind: kindValue, nsGen: ^uint64(0), allGen: ^uint64(0), filled: 1 << 62, ttl: 1 << 62, loadDur: ^uint64(0)}, []byte("x")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := encodeEntry(tc.h, tc.payload)
			h, p, err := decodeHeader(b)
			require.NoError(t, err)
			assert.Equal(t, tc.h, h)
			assert.Equal(t, string(tc.payload), string(p))
		})
	}
}

func TestHeaderRejects(t *testing.T) {
	valid := encodeEntry(header{kind: kindValue, nsGen: 1, filled: 2, ttl: 3, loadDur: 4}, []byte("{}"))
	overlong := append([]byte{magic, formatVersion, byte(kindValue), 0x80, 0x00}, 0, 0, 0, 0)
	overflow := appendHeader(nil, header{kind: kindValue, filled: ^uint64(0) - 1})
	overflow[len(overflow)-2] = 0x05 // ttl 5: filled+ttl wraps
	tooLong := append([]byte{magic, formatVersion, byte(kindValue)}, bytes.Repeat([]byte{0xff}, 11)...)
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"json", []byte(`{"id":1}`)},
		{"wrong magic", append([]byte{0}, valid[1:]...)},
		{"future version", append([]byte{magic, formatVersion + 1}, valid[2:]...)},
		{"kind zero", append([]byte{magic, formatVersion, 0}, valid[3:]...)},
		{"unknown kind", append([]byte{magic, formatVersion, 9}, valid[3:]...)},
		{"truncated", valid[:5]},
		{"non-minimal varint", overlong},
		{"varint over 64 bits", tooLong},
		{"expiry overflows", overflow},
		{"lease without token", encodeEntry(header{kind: kindLease}, []byte("short"))},
		{"lease with extra bytes", encodeEntry(header{kind: kindLease}, make([]byte, tokenLen+1))},
		{"refresh without token", encodeEntry(header{kind: kindRefresh}, []byte("x"))},
		{"not-found with payload", encodeEntry(header{kind: kindNotFound}, []byte("x"))},
		{"tombstone with payload", encodeEntry(header{kind: kindTombstone}, []byte("x"))},
		{"version cut short", []byte{magic, formatVersion, byte(kindTombstone) | versionFlag, 0, 0, 0, 2}},
		{"version without header", []byte{magic, formatVersion, byte(kindTombstone) | versionFlag, 0, 0, 0, 0, 0, 0, 0, 2}},
		{"unknown versioned kind", append([]byte{magic, formatVersion, 9 | versionFlag}, make([]byte, 13)...)},
		{"versioned tombstone with payload", encodeEntry(header{kind: kindTombstone, versioned: true, rowVer: 1}, []byte("x"))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := decodeHeader(tc.b)
			assert.ErrorIs(t, err, errCorrupt)
		})
	}
}

func TestDecodeHeaderDoesNotAllocate(t *testing.T) {
	b := encodeEntry(header{kind: kindValue, nsGen: 300, allGen: 1 << 41, filled: 1_700_000_000_000, ttl: 600_000, loadDur: 5}, []byte(`{"id":1}`))
	allocs := testing.AllocsPerRun(100, func() {
		if _, _, err := decodeHeader(b); err != nil {
			t.Fatal(err)
		}
	})
	assert.Zero(t, allocs)
}

func FuzzDecodeHeader(f *testing.F) {
	f.Add(encodeEntry(header{kind: kindValue, nsGen: 1, allGen: 2, filled: 1_700_000_000_000, ttl: 60_000, loadDur: 3}, []byte(`{"a":1}`)))
	f.Add(encodeEntry(header{kind: kindLease, filled: 1}, make([]byte, tokenLen)))
	f.Add(encodeEntry(header{kind: kindRefresh}, make([]byte, tokenLen+2)))
	f.Add(encodeEntry(header{kind: kindTombstone, ttl: 1000}))
	f.Add(encodeEntry(header{kind: kindNotFound}))
	f.Add(encodeEntry(header{kind: kindTombstone, versioned: true, rowVer: 3, filled: 1, ttl: 60_000}))
	f.Add(encodeEntry(header{kind: kindLease, versioned: true, rowVer: 2, ttl: 5}, make([]byte, tokenLen)))
	f.Add(encodeEntry(header{kind: kindValue, versioned: true, rowVer: 9}, []byte("1")))
	f.Add([]byte{magic, formatVersion, byte(kindValue), 0x80})
	f.Add([]byte("plain text"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, p, err := decodeHeader(b)
		if err != nil {
			return
		}
		// A decoded entry encodes back to the same bytes.
		again := encodeEntry(h, p)
		if !bytes.Equal(again, b) {
			t.Fatalf("round trip: %x -> %+v -> %x", b, h, again)
		}
		if h.expires() < h.filled {
			t.Fatalf("expiry before fill: %+v", h)
		}
		// And an encoded header decodes to itself, whatever the payload.
		h2, p2, err := decodeHeader(encodeEntry(h, p, []byte("tail")))
		if h.kind == kindValue && (err != nil || h2 != h || !bytes.Equal(p2, append(p, "tail"...))) {
			t.Fatalf("re-decode: %+v %v", h2, err)
		}
	})
}

func TestVersionedHeaderLayout(t *testing.T) {
	// versioned_tombstone.lua reads the kind at byte 3 and the version at
	// bytes 4 to 11 (1-based).
	b := encodeEntry(header{kind: kindTombstone, versioned: true, rowVer: 0x0102030405060708, filled: 1, ttl: 2})
	assert.Equal(t, byte(0x84), b[2])
	assert.Equal(t, []byte{1, 2, 3, 4, 5, 6, 7, 8}, b[3:11])
	// Entries without a version keep the layout of before.
	plain := encodeEntry(header{kind: kindTombstone, filled: 1, ttl: 2})
	assert.Equal(t, []byte{magic, formatVersion, byte(kindTombstone), 0, 0, 1, 2, 0}, plain)
}
