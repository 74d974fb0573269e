package binlog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	mysqldrv "github.com/go-sql-driver/mysql"
)

// PreflightError is a server setting or privilege that stops Run before it
// streams. It names the setting and the fix; errors.Is(err, ErrPreflight)
// holds for it. Run joins all the problems it finds into one error, and
// errors.As finds the first.
type PreflightError struct {
	// Setting is the server variable ("log_bin", "binlog_format",
	// "binlog_row_image", "server_id"), the privilege ("REPLICATION SLAVE",
	// "REPLICATION CLIENT") or "Config.ServerID".
	Setting string
	// Value is what the server has.
	Value string
	// Want is what this package needs.
	Want string
	// Fix says how to put it right.
	Fix string
}

// Error returns a one-line description with the fix.
func (e *PreflightError) Error() string {
	return fmt.Sprintf("binlog: %s is %s, need %s: %s", e.Setting, e.Value, e.Want, e.Fix)
}

// Is reports whether target is ErrPreflight.
func (e *PreflightError) Is(target error) bool { return target == ErrPreflight }

// serverInfo is what preflight learned about the server.
type serverInfo struct {
	flavor       string
	fullMetadata bool // binlog_row_metadata=FULL: column names are in the log
	// lowerNames: lower_case_table_names=1, so the server stores and logs
	// table and database names in lower case (row events name them so),
	// while a statement keeps the spelling its author typed.
	lowerNames bool
}

// preflight checks the server's binary log settings and the user's
// privileges. Connection errors come back as they are (Run retries them);
// wrong settings come back as joined *PreflightError values.
func preflight(ctx context.Context, db *sql.DB, cfg *Config, log *slog.Logger) (serverInfo, error) {
	var info serverInfo
	var version string
	if err := db.QueryRowContext(ctx, "SELECT VERSION()").Scan(&version); err != nil {
		return info, err
	}
	info.flavor = cfg.Flavor
	if info.flavor == "" {
		info.flavor = flavorOf(version)
	} else if info.flavor != flavorOf(version) {
		log.Warn("binlog: Config.Flavor does not match the server; GTIDs and positions may be misread",
			slog.String("flavor", info.flavor), slog.String("version", version))
	}
	vars, err := globalVariables(ctx, db)
	if err != nil {
		return info, err
	}
	problems := checkSettings(vars, cfg)
	info.fullMetadata = strings.EqualFold(vars["binlog_row_metadata"], "FULL")
	info.lowerNames = vars["lower_case_table_names"] == "1"
	grants, err := showGrants(ctx, db)
	if err != nil {
		return info, err
	}
	problems = append(problems, checkGrants(grants, cfg, log)...)
	if !info.fullMetadata {
		log.Warn("binlog: binlog_row_metadata is not FULL; column names come from information_schema, checked against each event (set binlog_row_metadata=FULL to read them from the log)",
			slog.String("binlog_row_metadata", orUnset(vars["binlog_row_metadata"])))
		if !grants.has("SELECT") && !grants.roles {
			log.Warn("binlog: without SELECT the user may not see the columns in information_schema; their rows become table-wide changes",
				slog.String("user", cfg.User))
		}
	}
	return info, errors.Join(problems...)
}

// checkSettings returns a *PreflightError for each server variable that
// stops streaming.
func checkSettings(vars map[string]string, cfg *Config) []error {
	var problems []error
	add := func(setting, value, want, fix string) {
		problems = append(problems, &PreflightError{Setting: setting, Value: value, Want: want, Fix: fix})
	}
	if v := vars["log_bin"]; v != "ON" && v != "1" {
		add("log_bin", orUnset(v), "ON", "start the server with log_bin enabled (log-bin=mysql-bin under [mysqld], or --log-bin) and restart it")
	}
	if v := vars["binlog_format"]; !strings.EqualFold(v, "ROW") {
		add("binlog_format", orUnset(v), "ROW", "run SET GLOBAL binlog_format='ROW' and set binlog_format=ROW under [mysqld] so it survives a restart")
	}
	if v := vars["binlog_row_image"]; v != "" && !strings.EqualFold(v, "FULL") {
		add("binlog_row_image", v, "FULL", "run SET GLOBAL binlog_row_image='FULL' and set binlog_row_image=FULL under [mysqld]")
	}
	serverID, _ := strconv.ParseUint(vars["server_id"], 10, 32)
	switch {
	case serverID == 0:
		add("server_id", orUnset(vars["server_id"]), "a non-zero id", "set server_id to an id unique among your servers under [mysqld] and restart")
	case uint32(serverID) == cfg.ServerID:
		add("Config.ServerID", strconv.FormatUint(uint64(cfg.ServerID), 10), "an id other than the server's own server_id",
			"give the stream a server id that no server or replica uses")
	}
	return problems
}

// checkGrants returns a *PreflightError for each missing privilege. With
// roles, whose privileges SHOW GRANTS does not list, it only warns; the
// server still refuses a stream that lacks them.
func checkGrants(grants grantSet, cfg *Config, log *slog.Logger) []error {
	var problems []error
	grant := "GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO '" + cfg.User + "'@'<host>'"
	for _, need := range []struct {
		name  string
		alias []string
	}{
		{"REPLICATION SLAVE", []string{"REPLICATION SLAVE", "REPLICATION REPLICA"}},
		{"REPLICATION CLIENT", []string{"REPLICATION CLIENT", "BINLOG MONITOR", "SUPER"}},
	} {
		switch {
		case grants.has(need.alias...):
		case grants.roles:
			log.Warn("binlog: "+need.name+" is not granted directly; relying on a role", slog.String("user", cfg.User))
		default:
			problems = append(problems, &PreflightError{Setting: need.name, Value: "not granted", Want: "granted on *.*", Fix: "run " + grant})
		}
	}
	return problems
}

func flavorOf(version string) string {
	if strings.Contains(strings.ToLower(version), "mariadb") {
		return FlavorMariaDB
	}
	return FlavorMySQL
}

func orUnset(v string) string {
	if v == "" {
		return "unset"
	}
	return v
}

func globalVariables(ctx context.Context, db *sql.DB) (map[string]string, error) {
	rows, err := db.QueryContext(ctx, `SHOW GLOBAL VARIABLES WHERE Variable_name IN
		('log_bin', 'binlog_format', 'binlog_row_image', 'binlog_row_metadata', 'server_id', 'lower_case_table_names')`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	vars := make(map[string]string)
	for rows.Next() {
		var name, value string
		if err := rows.Scan(&name, &value); err != nil {
			return nil, err
		}
		vars[strings.ToLower(name)] = value
	}
	return vars, rows.Err()
}

// grantSet is the global privileges of the current user.
type grantSet struct {
	privs map[string]bool
	roles bool // the user has roles, whose privileges SHOW GRANTS does not list
}

func (g grantSet) has(names ...string) bool {
	if g.privs["ALL PRIVILEGES"] || g.privs["ALL"] {
		return true
	}
	for _, n := range names {
		if g.privs[n] {
			return true
		}
	}
	return false
}

// showGrants reads the current user's global privileges. The lines of
// SHOW GRANTS can hold a password hash: they are parsed, never logged.
func showGrants(ctx context.Context, db *sql.DB) (grantSet, error) {
	g := grantSet{privs: make(map[string]bool)}
	rows, err := db.QueryContext(ctx, "SHOW GRANTS")
	if err != nil {
		return g, err
	}
	defer rows.Close()
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return g, err
		}
		parseGrant(line, &g)
	}
	return g, rows.Err()
}

func parseGrant(line string, g *grantSet) {
	up := strings.ToUpper(line)
	if !strings.HasPrefix(up, "GRANT ") {
		return
	}
	on := strings.Index(up, " ON ")
	if on < 0 {
		g.roles = true // GRANT role TO user
		return
	}
	rest := strings.TrimSpace(up[on+4:])
	if !strings.HasPrefix(rest, "*.*") {
		return // privileges on one database or table
	}
	for _, p := range strings.Split(up[len("GRANT "):on], ",") {
		g.privs[strings.Join(strings.Fields(p), " ")] = true
	}
}

// currentPosition returns where the server's binary log ends now.
func currentPosition(ctx context.Context, db *sql.DB, flavor string) (Position, error) {
	var p Position
	conn, err := db.Conn(ctx)
	if err != nil {
		return p, err
	}
	defer conn.Close()
	rows, err := conn.QueryContext(ctx, "SHOW MASTER STATUS")
	if err != nil && errorCode(err) == 1064 { // MySQL 8.4 dropped the old name
		rows, err = conn.QueryContext(ctx, "SHOW BINARY LOG STATUS")
	}
	if err != nil {
		return p, err
	}
	cols, err := rows.Columns()
	if err != nil {
		rows.Close()
		return p, err
	}
	vals := make([]sql.NullString, len(cols))
	dest := make([]any, len(cols))
	for i := range vals {
		dest[i] = &vals[i]
	}
	found := rows.Next()
	if found {
		err = rows.Scan(dest...)
	}
	rows.Close()
	if err != nil {
		return p, err
	}
	if !found {
		return p, &PreflightError{Setting: "log_bin", Value: "OFF", Want: "ON",
			Fix: "start the server with log_bin enabled (log-bin=mysql-bin under [mysqld]) and restart it"}
	}
	for i, c := range cols {
		switch strings.ToLower(c) {
		case "file":
			p.File = vals[i].String
		case "position":
			off, _ := strconv.ParseUint(vals[i].String, 10, 32)
			p.Offset = uint32(off)
		case "executed_gtid_set":
			p.GTIDSet = strings.Join(strings.Fields(vals[i].String), "")
		}
	}
	if flavor == FlavorMariaDB {
		p.GTIDSet, err = mariaGTIDAt(ctx, conn, p)
	}
	return p, err
}

// mariaGTIDAt returns MariaDB's GTID position at p, "" when the server
// cannot tell (the file is gone, or p is not at an event boundary).
func mariaGTIDAt(ctx context.Context, q interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}, p Position) (string, error) {
	var g sql.NullString
	err := q.QueryRowContext(ctx, "SELECT BINLOG_GTID_POS(?, ?)", p.File, p.Offset).Scan(&g)
	if err != nil {
		return "", err
	}
	return g.String, nil
}

// errorCode returns the server error number in err, 0 if there is none.
func errorCode(err error) uint16 {
	var me *mysqldrv.MySQLError
	if errors.As(err, &me) {
		return me.Number
	}
	return replicationErrorCode(err)
}
