package binlog

import (
	"context"
	"testing"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// newTestAssembler returns an assembler that records what it delivers.
func newTestAssembler(t *testing.T) (*assembler, *[]*Tx) {
	gtid, err := newGTIDState(FlavorMariaDB, "0-1-10")
	require.NoError(t, err)
	var got []*Tx
	all := func(string, string) bool { return true }
	a := &assembler{
		dec: newDecoder(nil, all), maxRows: 10, include: all, file: "f.000001", gtid: gtid,
		last: Position{File: "f.000001", Offset: 100, GTIDSet: "0-1-10"},
		deliver: func(_ context.Context, tx *Tx) error {
			got = append(got, tx)
			return nil
		},
	}
	return a, &got
}

func ev(pos uint32, e replication.Event) *replication.BinlogEvent {
	return &replication.BinlogEvent{Header: &replication.EventHeader{LogPos: pos, Timestamp: 1700000000}, Event: e}
}

func gtidEv(pos uint32, seq uint64, standalone bool) *replication.BinlogEvent {
	e := &replication.MariadbGTIDEvent{GTID: mysql.MariadbGTID{DomainID: 0, ServerID: 1, SequenceNumber: seq}}
	if standalone {
		e.Flags = replication.BINLOG_MARIADB_FL_STANDALONE
	}
	return ev(pos, e)
}

func query(pos uint32, q string) *replication.BinlogEvent {
	return ev(pos, &replication.QueryEvent{Schema: []byte("db"), Query: []byte(q)})
}

func feed(t *testing.T, a *assembler, evs ...*replication.BinlogEvent) {
	t.Helper()
	for _, e := range evs {
		require.NoError(t, a.handle(context.Background(), e))
	}
}

func TestAssemblerGroups(t *testing.T) {
	a, got := newTestAssembler(t)
	feed(t, a,
		gtidEv(150, 11, true), query(200, "ALTER TABLE t ADD c INT"), // standalone DDL
		gtidEv(250, 12, false), query(300, "INSERT INTO t VALUES (1)"), ev(350, &replication.XIDEvent{}), // statement DML
		gtidEv(400, 13, true), query(450, "GRANT SELECT ON *.* TO u"), // nothing to report, the position moves
	)
	require.Len(t, *got, 3)
	assert.Equal(t, []TableChange{{Schema: "db", Table: "t", Kind: Alter, Query: "ALTER TABLE t ADD c INT"}}, (*got)[0].Changes)
	assert.Equal(t, Position{File: "f.000001", Offset: 200, GTIDSet: "0-1-11"}, (*got)[0].Pos)
	assert.Equal(t, "t", (*got)[1].Changes[0].Table)
	assert.Equal(t, Position{File: "f.000001", Offset: 350, GTIDSet: "0-1-12"}, (*got)[1].Pos)
	assert.Empty(t, (*got)[2].Changes)
	assert.Equal(t, Position{File: "f.000001", Offset: 450, GTIDSet: "0-1-13"}, (*got)[2].Pos)
	assert.Equal(t, int64(1700000000), (*got)[2].CommitTime.Unix())

	// A rotate moves to the next file.
	feed(t, a, ev(0, &replication.RotateEvent{Position: 4, NextLogName: []byte("f.000002")}),
		gtidEv(500, 14, true), query(520, "DROP TABLE t"))
	assert.Equal(t, Position{File: "f.000002", Offset: 520, GTIDSet: "0-1-14"}, (*got)[3].Pos)
}

func TestAssemblerRollbackAndXA(t *testing.T) {
	a, got := newTestAssembler(t)
	// A group logged with ROLLBACK (it changed a non-transactional table):
	// no rows, a table-wide change for every table it touched.
	feed(t, a, query(120, "BEGIN"))
	a.rows = []Row{{Schema: "db", Table: "m", Op: Insert}}
	a.touched = map[[2]string]bool{{"db", "m"}: true}
	feed(t, a, query(200, "ROLLBACK"))
	require.Len(t, *got, 1)
	assert.Empty(t, (*got)[0].Rows)
	assert.Equal(t, []TableChange{{Schema: "db", Table: "m", Kind: Unknown, Query: "ROLLBACK"}}, (*got)[0].Changes)
	assert.Equal(t, uint32(200), (*got)[0].Pos.Offset)

	// XA: the rows come at XA PREPARE.
	prepare := &replication.BinlogEvent{Header: &replication.EventHeader{LogPos: 400, EventType: replication.XA_PREPARE_LOG_EVENT},
		Event: &replication.GenericEvent{}}
	feed(t, a, gtidEv(300, 11, false), query(350, "XA END X'31',X'',1"), prepare)
	require.Len(t, *got, 2)
	assert.Equal(t, Position{File: "f.000001", Offset: 400, GTIDSet: "0-1-11"}, (*got)[1].Pos)

	// An incident: anything may have changed.
	incident := &replication.BinlogEvent{Header: &replication.EventHeader{LogPos: 500, EventType: replication.INCIDENT_EVENT},
		Event: &replication.GenericEvent{}}
	feed(t, a, incident)
	assert.Equal(t, []TableChange{{Kind: Unknown, Query: "incident"}}, (*got)[2].Changes)
}

func TestAssemblerDropsUnfinishedGroup(t *testing.T) {
	a, got := newTestAssembler(t)
	feed(t, a, gtidEv(150, 11, false), query(200, "INSERT INTO a VALUES (1)"))
	// The group never ended; a new one starts. Its changes must not leak.
	feed(t, a, gtidEv(250, 12, false), query(300, "INSERT INTO b VALUES (1)"), ev(350, &replication.XIDEvent{}))
	require.Len(t, *got, 1)
	assert.Equal(t, "b", (*got)[0].Changes[0].Table)
	assert.Equal(t, "0-1-12", (*got)[0].Pos.GTIDSet)
}

// A statement-logged LOAD DATA comes as an Execute_load_query event, not a
// query event: it is reported as a change to the whole server.
func TestAssemblerLoadData(t *testing.T) {
	a, got := newTestAssembler(t)
	feed(t, a, gtidEv(150, 11, false), ev(200, &replication.ExecuteLoadQueryEvent{}), ev(250, &replication.XIDEvent{}))
	require.Len(t, *got, 1)
	assert.Equal(t, []TableChange{{Kind: Unknown, Query: "LOAD DATA"}}, (*got)[0].Changes)
	assert.Equal(t, Position{File: "f.000001", Offset: 250, GTIDSet: "0-1-11"}, (*got)[0].Pos)

	feed(t, a, gtidEv(300, 12, true), ev(350, &replication.ExecuteLoadQueryEvent{}))
	require.Len(t, *got, 2, "a standalone LOAD DATA is its own transaction")
	assert.Equal(t, uint32(350), (*got)[1].Pos.Offset)
}

// MySQL 8.0.21+ logs CREATE TABLE ... SELECT as one GTID: a DDL ending in
// START TRANSACTION, then rows, then an XID. It must arrive as one
// transaction, with the position after the XID.
func TestAssemblerCreateSelectAtomic(t *testing.T) {
	a, got := newTestAssembler(t)
	feed(t, a, gtidEv(150, 11, true), query(200, "CREATE TABLE g (id INT) START TRANSACTION"))
	assert.Empty(t, *got, "the DDL does not end the transaction")
	feed(t, a, ev(300, &replication.XIDEvent{}))
	require.Len(t, *got, 1)
	assert.Equal(t, "g", (*got)[0].Changes[0].Table)
	assert.Equal(t, uint32(300), (*got)[0].Pos.Offset)
}
