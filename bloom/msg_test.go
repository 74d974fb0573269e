package bloom

import (
	"testing"

	bloomv3 "github.com/bits-and-blooms/bloom/v3"
)

func TestAddMsgRoundTrip(t *testing.T) {
	v1 := newVersion(7, Params{M: 1000, K: 3, Hash: HashVersion})
	v2 := newVersion(1<<50, Params{M: 9585059, K: 7, Hash: HashVersion})
	keys := []string{"user:1", "user:2"}
	msg := appendAddMsg(appendAddMsg(nil, v1, keys), v2, keys)
	got := map[uint64][]uint64{}
	if err := decodeAddMsg(msg, func(id uint64, offs []uint64) { got[id] = offs }); err != nil {
		t.Fatal(err)
	}
	for _, v := range []*version{v1, v2} {
		var want []uint64
		for _, k := range keys {
			for _, l := range bloomv3.Locations([]byte(k), uint(v.k)) {
				want = append(want, l%v.m)
			}
		}
		if len(got[v.id]) != len(want) {
			t.Fatalf("version %d: %d offsets, want %d", v.id, len(got[v.id]), len(want))
		}
		for i := range want {
			if got[v.id][i] != want[i] {
				t.Fatalf("version %d offset %d: %d, want %d", v.id, i, got[v.id][i], want[i])
			}
		}
	}
	for _, bad := range []string{"", "r", "a\x80", "a\x01\x05\x01"} {
		if decodeAddMsg([]byte(bad), func(uint64, []uint64) {}) == nil {
			t.Errorf("%q decoded without error", bad)
		}
	}
}

// FuzzDecodeAddMsg: any payload on the channel decodes or fails, never
// panics, and a decoded message re-encodes to the same bytes.
func FuzzDecodeAddMsg(f *testing.F) {
	v := newVersion(3, Params{M: 100, K: 2, Hash: HashVersion})
	f.Add(appendAddMsg(nil, v, []string{"a", "b"}))
	f.Add([]byte("r"))
	f.Add([]byte("a\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var out []byte
		err := decodeAddMsg(b, func(id uint64, offs []uint64) {
			if out == nil {
				out = []byte{'a'}
			}
			out = appendUvarints(out, id, uint64(len(offs)))
			out = appendUvarints(out, offs...)
		})
		if err != nil {
			return
		}
		if len(b) == 1 {
			return // "a" alone: no versions
		}
		// Uvarint accepts non-minimal encodings, so compare the decodings.
		var again []byte
		if err := decodeAddMsg(out, func(id uint64, offs []uint64) {
			if again == nil {
				again = []byte{'a'}
			}
			again = appendUvarints(again, id, uint64(len(offs)))
			again = appendUvarints(again, offs...)
		}); err != nil || string(again) != string(out) {
			t.Fatalf("re-encoded message does not decode the same: %v", err)
		}
	})
}
