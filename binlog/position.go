package binlog

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/google/uuid"
)

// Position is a place in the server's binary log: the file and byte offset,
// and the GTID set of every transaction up to it when the server has GTIDs.
// A Position from Tx.Pos points just after that transaction, so a Run that
// starts from it delivers the next transaction first.
//
// GTIDSet is MariaDB's GTID position ("domain-server-seq" per domain, comma
// separated, e.g. "0-1-42,1-2-7") or MySQL's executed GTID set
// ("uuid:1-42,uuid2:1-7"). Run resumes from GTIDSet when it is set and
// from File and Offset otherwise.
type Position struct {
	File    string
	Offset  uint32
	GTIDSet string
}

// IsZero reports whether p is the zero Position, which tells Run to start
// at the server's current position.
func (p Position) IsZero() bool { return p == Position{} }

// String formats p as "file:offset", followed by " gtid=<set>" when the
// GTID set is known ("gtid=<set>" alone when the file is not). The zero
// Position formats as "". ParsePosition reads the result back.
func (p Position) String() string {
	var b strings.Builder
	if p.File != "" || p.Offset != 0 {
		b.WriteString(p.File)
		b.WriteByte(':')
		b.WriteString(strconv.FormatUint(uint64(p.Offset), 10))
	}
	if p.GTIDSet != "" {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString("gtid=")
		b.WriteString(p.GTIDSet)
	}
	return b.String()
}

// ParsePosition parses the output of Position.String. The empty string is
// the zero Position.
func ParsePosition(s string) (Position, error) {
	var p Position
	s = strings.TrimSpace(s)
	if s == "" {
		return p, nil
	}
	filePart, gtid, hasGTID := s, "", false
	if strings.HasPrefix(s, "gtid=") {
		filePart, gtid, hasGTID = "", s[len("gtid="):], true
	} else if i := strings.Index(s, " gtid="); i >= 0 {
		filePart, gtid, hasGTID = s[:i], s[i+len(" gtid="):], true
	}
	if hasGTID {
		gtid = strings.Join(strings.Fields(gtid), "")
		if gtid == "" {
			return Position{}, fmt.Errorf("binlog: parse position %q: empty gtid", s)
		}
		p.GTIDSet = gtid
	}
	if filePart != "" {
		i := strings.LastIndexByte(filePart, ':')
		if i < 0 {
			return Position{}, fmt.Errorf("binlog: parse position %q: want file:offset", s)
		}
		off, err := strconv.ParseUint(filePart[i+1:], 10, 32)
		if err != nil {
			return Position{}, fmt.Errorf("binlog: parse position %q: bad offset: %w", s, err)
		}
		p.File, p.Offset = filePart[:i], uint32(off)
		if p.File == "" {
			return Position{}, fmt.Errorf("binlog: parse position %q: empty file name", s)
		}
	}
	return p, nil
}

// gtidState follows the GTID position through the stream. It is valid only
// when it started from a known set (known): a set built from the GTIDs seen
// since some arbitrary point would make a resume re-read or skip history.
type gtidState struct {
	mariadb bool
	known   bool
	maria   map[uint32]mariaGTID // domain -> last GTID
	my      *mysql.MysqlGTIDSet
	// pending is the GTID of the transaction being read, applied at commit.
	pendingMaria *mariaGTID
	pendingMy    *myGTID
}

type mariaGTID struct {
	domain, server uint32
	seq            uint64
}

type myGTID struct {
	sid uuid.UUID
	tag mysql.Tag
	gno int64
}

// newGTIDState starts from set; an empty set means the GTIDs are unknown.
func newGTIDState(flavor, set string) (*gtidState, error) {
	g := &gtidState{mariadb: flavor == FlavorMariaDB}
	if set == "" {
		return g, nil
	}
	g.known = true
	if g.mariadb {
		g.maria = make(map[uint32]mariaGTID)
		for _, part := range strings.Split(set, ",") {
			gt, err := mysql.ParseMariadbGTID(strings.TrimSpace(part))
			if err != nil {
				return nil, fmt.Errorf("binlog: gtid %q: %w", set, err)
			}
			g.maria[gt.DomainID] = mariaGTID{gt.DomainID, gt.ServerID, gt.SequenceNumber}
		}
		return g, nil
	}
	s, err := mysql.ParseMysqlGTIDSet(set)
	if err != nil {
		return nil, fmt.Errorf("binlog: gtid %q: %w", set, err)
	}
	g.my = s.(*mysql.MysqlGTIDSet)
	return g, nil
}

// commit applies the pending GTID and returns the set's text.
func (g *gtidState) commit() string {
	if g.pendingMaria != nil && g.known {
		g.maria[g.pendingMaria.domain] = *g.pendingMaria
	}
	if g.pendingMy != nil && g.known {
		g.my.AddGTIDWithTag(g.pendingMy.sid, g.pendingMy.tag, g.pendingMy.gno)
	}
	g.pendingMaria, g.pendingMy = nil, nil
	return g.String()
}

// String returns the current set, "" when it is unknown.
func (g *gtidState) String() string {
	if !g.known {
		return ""
	}
	if !g.mariadb {
		return g.my.String()
	}
	domains := make([]uint32, 0, len(g.maria))
	for d := range g.maria {
		domains = append(domains, d)
	}
	slices.Sort(domains)
	var b strings.Builder
	for i, d := range domains {
		if i > 0 {
			b.WriteByte(',')
		}
		m := g.maria[d]
		b.WriteString(strconv.FormatUint(uint64(m.domain), 10))
		b.WriteByte('-')
		b.WriteString(strconv.FormatUint(uint64(m.server), 10))
		b.WriteByte('-')
		b.WriteString(strconv.FormatUint(m.seq, 10))
	}
	return b.String()
}

// sidGTID returns the GTID of a MySQL GTID event, nil for an anonymous one.
func sidGTID(sid []byte, tag mysql.Tag, gno int64) *myGTID {
	u, err := uuid.FromBytes(sid)
	if err != nil || u == uuid.Nil || gno <= 0 {
		return nil
	}
	return &myGTID{sid: u, tag: tag, gno: gno}
}
