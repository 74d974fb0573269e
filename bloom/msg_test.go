package bloom

import (
	"testing"

	bloomv3 "github.com/bits-and-blooms/bloom/v3"
)

func TestParseAddMsg(t *testing.T) {
	id, seq, offsets, err := parseAddMsg("a 7 42 1 2 30 ")
	if err != nil || id != 7 || seq != 42 || offsets != "1 2 30 " {
		t.Fatalf("got %d %d %q %v", id, seq, offsets, err)
	}
	for _, bad := range []string{"", "r", "g", "a", "a 7", "a 7 42", "a x 42 1 ", "a 7 -1 1 ", "b 7 42 1 "} {
		if _, _, _, err := parseAddMsg(bad); err == nil {
			t.Errorf("%q parsed without error", bad)
		}
	}
	lc := &localCopy{v: newVersion(1, Params{M: 64, K: 1, Hash: HashVersion}), f: bloomv3.New(64, 1)}
	if err := lc.set("1 x "); err == nil {
		t.Error("offset x set without error")
	}
}

func TestParseCheck(t *testing.T) {
	n, id, seq, ok := parseCheck("chk:3:17:9")
	if !ok || n != 3 || id != 17 || seq != 9 {
		t.Fatalf("got %d %d %d %v", n, id, seq, ok)
	}
	for _, bad := range []string{"", "PONG", "chk:1:2", "chk:1:2:x", "chk:1:2:3:4"} {
		if _, _, _, ok := parseCheck(bad); ok {
			t.Errorf("%q parsed", bad)
		}
	}
}
