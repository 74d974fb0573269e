// Package binlog reads committed row changes from a MySQL or MariaDB
// server's binary log, as a replica does, and hands them over one whole
// transaction at a time.
//
// # Guarantee
//
// Stream.Run calls the Handler once for every transaction the server
// commits after the start position, in commit order, and waits for it to
// return before reading on. Each Tx carries its row changes (schema, table,
// insert/update/delete, before and after images by column name, the
// primary key columns), its table-wide changes (TRUNCATE, DROP, RENAME,
// ALTER, CREATE and statements the log holds only as text) and the
// position just after it. Work that was rolled back never arrives as rows.
// A Tx.Pos saved after the handler's effects are durable (CheckpointStore)
// is a safe place to start again: nothing after it is skipped and nothing
// before it is delivered again.
//
// Run reconnects by itself, with jittered backoff, from the last
// transaction the handler accepted; the server sends a heartbeat every
// Options.HeartbeatPeriod, so a dead connection is noticed within
// Options.ReadTimeout. A transaction larger than Options.MaxTxRows rows
// comes in parts (Tx.More), so memory stays bounded.
//
// # Model
//
// The stream is built on go-mysql's replication.BinlogSyncer, not on its
// canal package: canal names the columns of a row event from the live
// schema, which races with DDL (an ALTER applied after the event was
// written renames the event's columns). With binlog_row_metadata=FULL the
// events carry their own column names and primary key, and that is what
// this package reads. On a server that logs MINIMAL metadata it reads
// information_schema instead and checks the answer against every event's
// column count and types; a table it cannot confirm is reported as a
// table-wide change (Kind Unknown), never delivered with wrong names and
// never skipped.
//
// Positions carry the file and offset always, and the GTID position
// (MariaDB "domain-server-seq", MySQL executed GTID set) when the server
// has GTIDs; Run resumes from the GTID when there is one.
//
// Run checks the server before it streams: log_bin=ON, binlog_format=ROW,
// binlog_row_image=FULL, a non-zero server_id, and the REPLICATION SLAVE
// and REPLICATION CLIENT privileges. Each wrong setting is a
// *PreflightError that names the setting and the fix (errors.Is(err,
// ErrPreflight)). A position the server no longer has is ErrPositionLost:
// the caller takes Stream.CurrentPosition, flushes what it derived from the
// log, and runs again from that position, so nothing falls in between.
//
// Credentials: the password goes to the server and nowhere else. Config
// prints without it, and errors and logs never contain it.
//
// # What it does not promise
//
//   - Changes that never reach the binary log as rows: a session that sets
//     binlog_format=STATEMENT writes text, which arrives as an Unknown
//     change for the table it names plus one for the whole server (Schema
//     and Table empty), since triggers the log does not show may have
//     changed any table; a statement it cannot read, a SELECT or DO that
//     the log kept because a function changed data, and a statement-logged
//     LOAD DATA arrive as a change to the whole server. Changes made by
//     foreign-key cascades are not logged at all: the consumer must derive
//     them from the parent's rows (package invalidate does).
//   - A transaction the log records with ROLLBACK (it changed a
//     non-transactional table, whose changes stay) arrives as Unknown
//     changes for the tables it touched, without rows.
//   - XA transactions arrive at XA PREPARE; a later XA ROLLBACK is not
//     undone.
//   - After a reconnect, a transaction that was delivered in parts starts
//     again from its first part.
//   - On a MINIMAL-metadata server, a DDL that keeps the column count and
//     types but renames or reorders columns, applied while the stream lags
//     behind it, is not detected.
package binlog
