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
// # Values
//
// A cache key is built twice: by the application from the row it read
// with SELECT, and by a consumer (package invalidate's key templates) from
// the row image in the log. A key that differs by one byte is an
// invalidation nobody reads, so Row values are the values the application
// reads, not the bytes the log holds. The table lists, for each column
// type, the Go value in Row.Before and Row.After, the text a template
// placeholder {col} prints for it, and what database/sql with
// go-sql-driver returns for the same column when the row is scanned into
// an any over a utf8mb4 connection (the driver's default) with the text
// protocol (a query without arguments, or interpolateParams=true):
//
//	column type               Row value              template prints         parseTime=false     parseTime=true
//	------------------------  ---------------------  ----------------------  ------------------  ------------------
//	TINYINT..BIGINT           int64                  -128                    int64               int64
//	TINYINT..INT UNSIGNED     uint64                 4294967295              int64               int64
//	BIGINT UNSIGNED           uint64                 18446744073709551615    uint64 (1)          uint64 (1)
//	YEAR                      int64                  2024                    int64               int64
//	BIT(n)                    uint64                 513 (2)                 []byte big-endian   []byte big-endian
//	DECIMAL(p,s)              string                 -1.50                   []byte "-1.50"      []byte "-1.50"
//	DOUBLE                    float64                0.1                     float64             float64
//	FLOAT                     float64 (3)            0.1                     float32 (3)         float32 (3)
//	DATE                      time.Time UTC (4)      2024-02-29T00:00:00Z    []byte text         time.Time (5)
//	DATETIME(n)               time.Time UTC (4)      RFC 3339, nanoseconds   []byte text         time.Time (5)
//	TIMESTAMP(n)              time.Time UTC (4)      RFC 3339, nanoseconds   []byte text         time.Time (5,6)
//	TIME(n)                   string                 -838:59:59.000          []byte same text    []byte same text
//	CHAR, VARCHAR, TEXT       string, UTF-8 (7)      café                    []byte UTF-8        []byte UTF-8
//	ENUM, SET                 string, UTF-8 (7)      a,c                     []byte              []byte
//	JSON (MariaDB: LONGTEXT)  string                 the text                []byte              []byte
//	BINARY(n)                 []byte, zero-padded    the bytes               []byte              []byte
//	VARBINARY, BLOB           []byte                 the bytes               []byte              []byte
//	INET6, INET4, UUID        string                 ::ffff:1.2.3.4          []byte same text    []byte same text
//	GEOMETRY, POINT, ...      []byte (SRID + WKB)    the bytes               []byte same bytes   []byte same bytes
//	any NULL                  nil                    (no key)                nil                 nil
//	value not converted (8)   Raw                    (refused: table-wide)   -                   -
//
// An application whose key prints the scanned value the way the template
// does (bytes as text, integers in decimal, floats with
// strconv.FormatFloat(x, 'f', -1, bits), times in UTC with RFC 3339 and
// nanoseconds) builds the same key; the tests in values_test.go check
// every row above, with extreme values, against a real server. Where the
// two cannot agree, the key should be built differently:
//
//  1. With prepared statements (a query with arguments and
//     interpolateParams=false) go-sql-driver returns BIGINT UNSIGNED as
//     decimal []byte: the same text.
//  2. BIT: database/sql returns the bytes; the application must print
//     them as a big-endian unsigned number.
//  3. FLOAT: the server sends FLOAT as text rounded to 6 significant
//     digits (3.40282e38), so over the text protocol the application's
//     float32 differs from the stored one whenever the value has more
//     digits; the stream has the stored value exactly. Prepared
//     statements return the exact float32, which agrees. Do not key on
//     FLOAT: use DOUBLE, DECIMAL or an integer.
//  4. Only a date of the calendar becomes a time.Time. A date that is
//     not one stays the text SELECT returns: the zero date
//     ("0000-00-00", "0000-00-00 00:00:00.000" with the column's
//     precision), a zero month or day ("2024-00-10"), and a day past the
//     month's end ("2024-02-30", stored under ALLOW_INVALID_DATES). This
//     keeps 0001-01-01 (a time.Time, the zero time.Time) apart from the
//     zero date (text). Why text and not a rolled-over time: time.Date
//     turns 2024-02-30 into 2024-03-01, a date the row does not hold, and
//     a key from it would name another day's entry.
//  5. With parseTime=true go-sql-driver rolls invalid dates over
//     (2024-02-30 becomes 2024-03-01, 2024-00-10 becomes 2023-12-10) and
//     returns the zero time.Time for the zero date, so for such values it
//     cannot agree with anything the log holds. An application whose
//     date columns may hold them builds those keys from text
//     (parseTime=false, or DATE_FORMAT in the SELECT), which the
//     template prints as it is. A template format that needs a time
//     ({d|unix}, {d|date}, ...) refuses the text, and the consumer
//     invalidates the table instead.
//  6. TIMESTAMP is an instant: the stream delivers it in UTC, and the
//     application gets the same instant when the driver's loc is the
//     session's time_zone (time_zone='+00:00' and loc=UTC, the driver's
//     default). DATETIME has no zone: the stream reads it as UTC, which
//     agrees with loc=UTC.
//  7. Text is converted from its column's character set to UTF-8
//     exactly as the server converts it for a utf8mb4 connection, with
//     conversion tables the stream asks the server for (one query per
//     character set and Run) rather than Go's encoding packages: MariaDB's
//     latin1 is cp1252 plus five C1 controls, its cp1251 turns 0x98 into
//     '?', its gbk differs from WHATWG GBK in places; a Go table would be
//     right for most bytes and silently wrong for some. The character set
//     comes from the table map (binlog_row_metadata=FULL) or from
//     information_schema, read again after a DDL of the table. Every
//     single-byte character set, and gbk, gb2312, euckr, sjis and cp932,
//     are converted (each checked character by character against the
//     server by the tests); binary stays bytes.
//  8. Raw carries a value that cannot be converted exactly: text in a
//     character set with characters of three or more bytes (ujis,
//     eucjpms, ucs2, utf16, utf32, gb18030, ...) or in big5, and a
//     BINARY(16) or BINARY(4) column of an event that no longer matches
//     the live schema (MariaDB logs INET6, UUID and INET4 as BINARY(16)
//     and BINARY(4); only information_schema tells them apart). Raw has no String method:
//     package invalidate refuses to build a key from it and invalidates
//     the whole table instead, never a key that may be wrong.
//
// Under lower_case_table_names=1 (read at start) the server stores and
// logs names in lower case; Row and TableChange names are in lower case
// too, whatever the statement's spelling, so "TRUNCATE TABLE Users"
// changes table "users", the name its row events carry.
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
//     types but renames or reorders columns, or changes a column's
//     character set to one of the same byte length (latin1 to cp1251),
//     applied while the stream lags behind it, is not detected.
//   - A BINARY(16) column changed to INET6 or UUID (or back) by a DDL the
//     stream lags behind is read with the live schema's type.
//   - Under lower_case_table_names=1 names are lowered with Go's
//     strings.ToLower, which agrees with the server for every ASCII name;
//     lower_case_table_names=2 is not handled (names keep their spelling).
package binlog
