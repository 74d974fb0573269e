package invalidate

import (
	"testing"

	"github.com/cacheaside/cacheaside/binlog"
)

func TestReached(t *testing.T) {
	file := func(f string, off uint32) binlog.Position { return binlog.Position{File: f, Offset: off} }
	gtid := func(s string) binlog.Position { return binlog.Position{GTIDSet: s} }
	for _, c := range []struct {
		pos, target binlog.Position
		want, err   bool
	}{
		{binlog.Position{}, file("b.000001", 4), false, false},
		{file("b.000001", 500), file("b.000001", 500), true, false},
		{file("b.000001", 499), file("b.000001", 500), false, false},
		{file("b.000002", 4), file("b.000001", 500), true, false},
		{file("b.000001", 900), file("b.000002", 4), false, false},
		{gtid("0-1-42,1-2-7"), gtid("0-1-42"), true, false},
		{gtid("0-1-41,1-2-7"), gtid("0-1-42"), false, false},
		{gtid("0-1-42"), gtid("0-1-42,1-2-1"), false, false},
		{gtid("3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5"), gtid("0-1-1"), false, true},
		{file("b.000001", 4), gtid("0-1-1"), false, true},
	} {
		got, err := reached(c.pos, c.target)
		if got != c.want || (err != nil) != c.err {
			t.Errorf("reached(%v, %v) = %v, %v; want %v, error %v", c.pos, c.target, got, err, c.want, c.err)
		}
	}
}
