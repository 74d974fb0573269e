package testenv

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"time"
)

// StartMySQLReplica starts a MariaDB that replicates primary with GTIDs
// (MASTER_USE_GTID=slave_pos) and logs what it applies in its own binary
// log (log_slave_updates), with the primary's GTIDs, so that after Promote a
// binlog reader can go on from a GTID position it had read on the primary.
// opts.Args are added as for StartMySQL. The replica copies the primary's
// binary log from its first transaction, so the primary must not have
// purged any (start a primary for the test rather than using Env.MySQL,
// which other tests purge and which a failover test would kill). It
// returns once the replica has caught up.
func StartMySQLReplica(primary *MySQL, opts *MySQLOptions) (*MySQL, error) {
	o := MySQLOptions{}
	if opts != nil {
		o = *opts
	}
	serverID := 2 + primary.Port%1000 // distinct from the primary's 1
	o.Args = append([]string{
		"--server-id=" + strconv.Itoa(serverID),
		"--log-slave-updates=ON",
		"--gtid-strict-mode=ON",
	}, o.Args...)
	r, err := StartMySQL(&o)
	if err != nil {
		return nil, err
	}
	db, err := sql.Open("mysql", r.Config("").FormatDSN())
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("testenv: %w", err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stmt := fmt.Sprintf("CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%d, MASTER_USER='root', MASTER_PASSWORD='', "+
		"MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1", primary.Port)
	for _, q := range []string{stmt, "START SLAVE"} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			r.Close()
			return nil, fmt.Errorf("testenv: replica: %s: %w", q, err)
		}
	}
	if err := r.WaitReplicated(ctx, primary); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// WaitReplicated waits until this replica has applied every transaction
// primary had committed when it was called (MASTER_GTID_WAIT). A stopped
// replication thread is an error that carries its last error.
func (m *MySQL) WaitReplicated(ctx context.Context, primary *MySQL) error {
	pdb, err := sql.Open("mysql", primary.Config("").FormatDSN())
	if err != nil {
		return fmt.Errorf("testenv: %w", err)
	}
	defer pdb.Close()
	var pos string
	if err := pdb.QueryRowContext(ctx, "SELECT @@GLOBAL.gtid_binlog_pos").Scan(&pos); err != nil {
		return fmt.Errorf("testenv: primary's gtid_binlog_pos: %w", err)
	}
	db, err := sql.Open("mysql", m.Config("").FormatDSN())
	if err != nil {
		return fmt.Errorf("testenv: %w", err)
	}
	defer db.Close()
	return poll(ctx, time.Minute, func(ctx context.Context) error {
		var res int
		if err := db.QueryRowContext(ctx, "SELECT MASTER_GTID_WAIT(?, 1)", pos).Scan(&res); err != nil {
			return err
		}
		if res == 0 {
			return nil
		}
		if err := replicationError(ctx, db); err != nil {
			return err
		}
		return fmt.Errorf("replica on port %d has not reached %s", m.Port, pos)
	})
}

// replicationError returns the replication threads' last error, if any.
func replicationError(ctx context.Context, db *sql.DB) error {
	var ioErr, sqlErr string
	rows, err := db.QueryContext(ctx, "SHOW SLAVE STATUS")
	if err != nil {
		return err
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	if !rows.Next() {
		return fmt.Errorf("testenv: this server replicates nothing")
	}
	vals := make([]sql.NullString, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := rows.Scan(ptrs...); err != nil {
		return err
	}
	for i, c := range cols {
		switch c {
		case "Last_IO_Error":
			ioErr = vals[i].String
		case "Last_SQL_Error":
			sqlErr = vals[i].String
		}
	}
	if ioErr != "" || sqlErr != "" {
		return fmt.Errorf("testenv: replication stopped: io: %q, sql: %q", ioErr, sqlErr)
	}
	return nil
}

// Promote makes this replica a primary, as after its primary died: it
// stops replication, forgets the primary and accepts writes. Its GTID
// position goes on from the primary's.
func (m *MySQL) Promote(ctx context.Context) error {
	db, err := sql.Open("mysql", m.Config("").FormatDSN())
	if err != nil {
		return fmt.Errorf("testenv: %w", err)
	}
	defer db.Close()
	for _, q := range []string{"STOP SLAVE", "RESET SLAVE ALL", "SET GLOBAL read_only = 0"} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("testenv: promote: %s: %w", q, err)
		}
	}
	return nil
}
