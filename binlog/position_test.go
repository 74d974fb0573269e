package binlog

import (
	"testing"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPositionString(t *testing.T) {
	tests := []struct {
		p    Position
		text string
	}{
		{Position{}, ""},
		{Position{File: "mysql-bin.000003", Offset: 1234}, "mysql-bin.000003:1234"},
		{Position{File: "mysql-bin.000003", Offset: 1234, GTIDSet: "0-1-55,1-2-3"}, "mysql-bin.000003:1234 gtid=0-1-55,1-2-3"},
		{Position{GTIDSet: "0-1-55"}, "gtid=0-1-55"},
		{Position{File: "odd:name", Offset: 4}, "odd:name:4"},
		{Position{File: "b", Offset: 4, GTIDSet: "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7"},
			"b:4 gtid=3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7"},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.text, tt.p.String())
		p, err := ParsePosition(tt.text)
		require.NoError(t, err, tt.text)
		assert.Equal(t, tt.p, p)
		assert.Equal(t, tt.text == "", p.IsZero())
	}
	p, err := ParsePosition("  b:4 gtid=uuid:1-5,\n uuid2:1-3 ")
	require.NoError(t, err)
	assert.Equal(t, Position{File: "b", Offset: 4, GTIDSet: "uuid:1-5,uuid2:1-3"}, p, "whitespace in a GTID set is dropped")
	for _, bad := range []string{"nofile", "b:x", ":4", "b:99999999999", "gtid=", "b:4 gtid= "} {
		_, err := ParsePosition(bad)
		assert.Error(t, err, bad)
	}
}

func FuzzParsePosition(f *testing.F) {
	for _, s := range []string{"", "f:1", "f:1 gtid=0-1-2", "gtid=a:1-2", "a:b:3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePosition(s)
		if err != nil {
			return
		}
		q, err := ParsePosition(p.String())
		if err != nil || q != p {
			t.Fatalf("%q -> %+v -> %q -> %+v, %v", s, p, p.String(), q, err)
		}
	})
}

func TestGTIDState(t *testing.T) {
	g, err := newGTIDState(FlavorMariaDB, "0-1-5,2-7-9")
	require.NoError(t, err)
	g.pendingMaria = &mariaGTID{domain: 0, server: 2, seq: 6}
	assert.Equal(t, "0-2-6,2-7-9", g.commit())
	g.pendingMaria = &mariaGTID{domain: 1, server: 1, seq: 1}
	assert.Equal(t, "0-2-6,1-1-1,2-7-9", g.commit())
	assert.Equal(t, "0-2-6,1-1-1,2-7-9", g.commit(), "no pending GTID: unchanged")

	unknown, err := newGTIDState(FlavorMariaDB, "")
	require.NoError(t, err)
	unknown.pendingMaria = &mariaGTID{domain: 0, server: 1, seq: 9}
	assert.Equal(t, "", unknown.commit(), "a set that did not start known stays unknown")

	my, err := newGTIDState(FlavorMySQL, "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5")
	require.NoError(t, err)
	sid := []byte{0x3e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42, 0x95, 0x62}
	my.pendingMy = sidGTID(sid, mysql.Tag{}, 6)
	assert.Equal(t, "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-6", my.commit())
	assert.Nil(t, sidGTID(make([]byte, 16), mysql.Tag{}, 7), "an anonymous GTID")

	_, err = newGTIDState(FlavorMariaDB, "0-x-1")
	assert.Error(t, err)
}
