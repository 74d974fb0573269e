package binlog

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/go-mysql-org/go-mysql/replication"
)

// Tx is one committed transaction, or one part of a large one.
//
// Run allocates a new Tx for every call of the handler and never touches it
// afterwards, so a handler may keep it. The PrimaryKey slices of rows are
// shared between rows of the same table and must not be modified.
type Tx struct {
	// Rows are the row changes in binary log order.
	Rows []Row
	// Changes are the table-wide changes: DDL (TRUNCATE, DROP, RENAME,
	// ALTER, CREATE), statements logged as text, tables whose rows could not
	// be mapped to column names, and tables touched by a transaction the
	// binary log records as rolled back. Each one means "any row of this
	// table may have changed".
	Changes []TableChange
	// Pos is the position just after this transaction; Run started from it
	// delivers the next transaction first. When More is true, Pos is the
	// position after the previous whole transaction, so a checkpoint of it
	// replays this transaction from its first part.
	Pos Position
	// CommitTime is the commit's timestamp in the binary log (whole
	// seconds, UTC). For a part with More set it is the time of its last event.
	CommitTime time.Time
	// More reports that the transaction has more rows than Options.MaxTxRows
	// and continues in the next Tx. After a reconnect a transaction that was
	// cut short is delivered again from its first part.
	More bool
}

// Row is one changed row. Before is nil for an insert and After is nil for
// a delete. Values are int64 or uint64 (unsigned columns and BIT) for
// integers, float64 for FLOAT and DOUBLE, string for text (converted to
// UTF-8 from the column's character set), DECIMAL, TIME, ENUM, SET, JSON,
// INET6, INET4 and UUID, []byte for binary columns (BINARY, VARBINARY,
// BLOB, GEOMETRY), time.Time in UTC for DATETIME, TIMESTAMP and DATE that
// hold a date of the calendar (a date that is not one, such as the zero
// date or '2024-02-30', stays the string SELECT returns), Raw for a value
// that cannot be converted exactly, and nil for NULL. The package
// documentation has the table, next to what database/sql returns.
type Row struct {
	Schema, Table string
	Op            Op
	Before, After map[string]any
	// PrimaryKey names the primary key columns in key order; nil when the
	// table has none.
	PrimaryKey []string
}

// Raw is a column value this package cannot convert to the value an
// application reads with SELECT: text in a character set it does not
// convert (see the package documentation), or a BINARY(16) column whose
// event no longer matches the live schema, so that it cannot tell it from
// an INET6 or UUID. A key built from such a value could differ from the
// application's key by a byte; package invalidate refuses to build one and
// invalidates the whole table instead. Raw has no String method on
// purpose.
type Raw struct {
	// Type says what the value is and why it is not converted.
	Type string
	// Data is the value as the binary log holds it.
	Data []byte
}

// Op is the kind of a row change.
type Op int

// The row operations.
const (
	Insert Op = iota + 1
	Update
	Delete
)

// String returns "insert", "update" or "delete".
func (o Op) String() string {
	switch o {
	case Insert:
		return "insert"
	case Update:
		return "update"
	case Delete:
		return "delete"
	}
	return fmt.Sprintf("Op(%d)", int(o))
}

// TableChange is a change to a whole table. Table is empty when the change
// covers every table of Schema (DROP DATABASE, or a statement whose tables
// could not be read), and Schema is empty too when it may cover the whole
// server.
type TableChange struct {
	Schema, Table string
	Kind          ChangeKind
	// Query is the statement text when the change came from one.
	Query string
}

// ChangeKind is the kind of a table-wide change.
type ChangeKind int

// The kinds of table-wide change. Unknown covers statements logged as text
// (from sessions with binlog_format=STATEMENT), rows that could not be
// mapped to column names, and everything this package does not classify.
const (
	Unknown ChangeKind = iota
	Truncate
	Drop
	Rename
	Alter
	Create
)

// String returns the kind in lower case: "truncate", "drop", "rename",
// "alter", "create" or "unknown".
func (k ChangeKind) String() string {
	switch k {
	case Unknown:
		return "unknown"
	case Truncate:
		return "truncate"
	case Drop:
		return "drop"
	case Rename:
		return "rename"
	case Alter:
		return "alter"
	case Create:
		return "create"
	}
	return fmt.Sprintf("ChangeKind(%d)", int(k))
}

// Handler receives committed transactions from Run.
type Handler interface {
	// HandleTx is called for each committed transaction in commit order;
	// Run waits for it to return before reading on. A non-nil error stops
	// Run, which returns it.
	HandleTx(ctx context.Context, tx *Tx) error
}

// HandlerFunc adapts a function to a Handler.
type HandlerFunc func(ctx context.Context, tx *Tx) error

// HandleTx calls f(ctx, tx).
func (f HandlerFunc) HandleTx(ctx context.Context, tx *Tx) error { return f(ctx, tx) }

// assembler turns the events of one connection into transactions. It
// starts at the position after the last delivered transaction and is
// thrown away on a reconnect, so a transaction cut short is read again.
type assembler struct {
	dec     *decoder
	maxRows int
	include func(schema, table string) bool
	deliver func(ctx context.Context, tx *Tx) error
	// lowerNames reports names of statements in lower case, as the server
	// stores them under lower_case_table_names=1.
	lowerNames bool

	file  string
	gtid  *gtidState
	last  Position // after the last delivered whole transaction
	inTx  bool     // between BEGIN (or a MariaDB GTID that opens a group) and its end
	alone bool     // MariaDB standalone GTID: the next query is the whole transaction

	rows    []Row
	changes []TableChange
	touched map[[2]string]bool // tables with rows in this transaction
}

func (a *assembler) handle(ctx context.Context, ev *replication.BinlogEvent) error {
	switch e := ev.Event.(type) {
	case *replication.RotateEvent:
		a.file = string(e.NextLogName)
	case *replication.MariadbGTIDEvent:
		a.abandon()
		g := e.GTID
		a.gtid.pendingMaria = &mariaGTID{g.DomainID, g.ServerID, g.SequenceNumber}
		a.alone = e.IsStandalone()
		a.inTx = !a.alone
	case *replication.GTIDEvent:
		a.abandon()
		a.gtid.pendingMy = sidGTID(e.SID, e.Tag, e.GNO)
	case *replication.GtidTaggedLogEvent:
		a.abandon()
		a.gtid.pendingMy = sidGTID(e.SID, e.Tag, e.GNO)
	case *replication.QueryEvent:
		return a.query(ctx, ev.Header, e)
	case *replication.XIDEvent:
		return a.commit(ctx, ev.Header)
	case *replication.ExecuteLoadQueryEvent:
		// A statement-logged LOAD DATA: its table is in a query text that
		// this event does not carry decoded, so the whole server may differ.
		a.changes = append(a.changes, TableChange{Kind: Unknown, Query: "LOAD DATA"})
		return a.endStatement(ctx, ev.Header)
	case *replication.RowsEvent:
		return a.rowsEvent(ctx, ev.Header, e)
	case *replication.TransactionPayloadEvent:
		for _, inner := range e.Events {
			if err := a.handle(ctx, inner); err != nil {
				return err
			}
		}
	case *replication.GenericEvent:
		switch ev.Header.EventType {
		case replication.XA_PREPARE_LOG_EVENT:
			// The rows of an XA transaction are logged at XA PREPARE; a
			// later XA ROLLBACK would make them an extra, harmless change.
			return a.commit(ctx, ev.Header)
		case replication.INCIDENT_EVENT:
			// The server could not log some changes: anything may differ.
			a.changes = append(a.changes, TableChange{Kind: Unknown, Query: "incident"})
			return a.commit(ctx, ev.Header)
		}
	}
	return nil
}

// abandon drops a transaction that never ended; servers do not write one,
// but a new group must not inherit its rows.
func (a *assembler) abandon() {
	a.inTx, a.alone = false, false
	a.rows, a.changes, a.touched = nil, nil, nil
}

func (a *assembler) query(ctx context.Context, h *replication.EventHeader, e *replication.QueryEvent) error {
	class, changes := classify(string(e.Schema), string(e.Query))
	if a.lowerNames {
		// "TRUNCATE TABLE Users" changes the table that row events call
		// "users"; a consumer matching names exactly must see that name.
		for i := range changes {
			changes[i].Schema = strings.ToLower(changes[i].Schema)
			changes[i].Table = strings.ToLower(changes[i].Table)
		}
	}
	switch class {
	case stmtBegin:
		a.inTx = true
		return nil
	case stmtCommit:
		return a.commit(ctx, h)
	case stmtRollback:
		return a.rollback(ctx, h)
	case stmtChange, stmtChangeBegin:
		a.dec.forget(changes)
		for _, c := range changes {
			if c.Schema == "" || a.include(c.Schema, c.Table) {
				a.changes = append(a.changes, c)
			}
		}
		if class == stmtChangeBegin {
			a.inTx = true // its rows and XID follow under the same GTID
		}
	}
	return a.endStatement(ctx, h)
}

// endStatement follows a statement: outside BEGIN it is its own
// transaction, inside one the transaction goes on.
func (a *assembler) endStatement(ctx context.Context, h *replication.EventHeader) error {
	if a.inTx {
		return nil
	}
	return a.commit(ctx, h)
}

func (a *assembler) rowsEvent(ctx context.Context, h *replication.EventHeader, e *replication.RowsEvent) error {
	a.inTx = true
	rows, change, err := a.dec.rows(ctx, e)
	if err != nil {
		return err
	}
	if change != nil {
		a.changes = append(a.changes, *change)
	}
	if len(rows) > 0 {
		if a.touched == nil {
			a.touched = make(map[[2]string]bool)
		}
		a.touched[[2]string{rows[0].Schema, rows[0].Table}] = true
		a.rows = append(a.rows, rows...)
	}
	// Deliver parts so that a huge transaction never sits in memory whole.
	for len(a.rows) >= a.maxRows {
		part := a.rows[:a.maxRows:a.maxRows]
		a.rows = append([]Row(nil), a.rows[a.maxRows:]...)
		tx := &Tx{Rows: part, Changes: a.changes, Pos: a.last, CommitTime: eventTime(h), More: true}
		a.changes = nil
		if err := a.deliver(ctx, tx); err != nil {
			return err
		}
	}
	return nil
}

// rollback ends a group that the binary log records as rolled back. Servers
// write one only when the transaction changed a non-transactional table,
// whose changes stay: the rows are dropped, and every table they touched
// is reported as an Unknown change.
func (a *assembler) rollback(ctx context.Context, h *replication.EventHeader) error {
	a.rows = nil
	for k := range a.touched {
		a.changes = append(a.changes, TableChange{Schema: k[0], Table: k[1], Kind: Unknown, Query: "ROLLBACK"})
	}
	return a.commit(ctx, h)
}

func (a *assembler) commit(ctx context.Context, h *replication.EventHeader) error {
	pos := Position{File: a.file, Offset: h.LogPos, GTIDSet: a.gtid.commit()}
	if h.LogPos == 0 {
		pos.Offset = a.last.Offset // an artificial event; the offset is not known
	}
	tx := &Tx{Rows: a.rows, Changes: a.changes, Pos: pos, CommitTime: eventTime(h)}
	a.abandon()
	if err := a.deliver(ctx, tx); err != nil {
		return err
	}
	a.last = pos
	return nil
}

func eventTime(h *replication.EventHeader) time.Time {
	return time.Unix(int64(h.Timestamp), 0).UTC()
}
