package testenv

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
)

// MySQLOptions configures a throwaway MariaDB server.
type MySQLOptions struct {
	// Args are extra mariadbd flags, placed after the defaults so that they
	// override them (for example "--binlog-format=STATEMENT" or "--skip-log-bin").
	// Default: none.
	Args []string
}

// MySQL is a throwaway MariaDB server with its binary log on, listening on a
// loopback port with its data in a temporary directory. Its fault controls
// (Stop, Kill, Start, PurgeBinaryLogs) keep the port and the data directory.
type MySQL struct {
	// Dir holds the data directory, the socket and the server log.
	Dir string
	// Port is the loopback TCP port; it stays the same across restarts.
	Port int

	server
	args []string
}

// StartMySQL creates a data directory and starts mariadbd on a free port with
// ROW binary logging and full row metadata.
func StartMySQL(opts *MySQLOptions) (*MySQL, error) {
	if opts == nil {
		opts = &MySQLOptions{}
	}
	bin, err := lookBinary("mariadbd")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "cacheaside-mysql-")
	if err != nil {
		return nil, fmt.Errorf("testenv: %w", err)
	}
	if err := installDataDir(bin, filepath.Join(dir, "data")); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	m := &MySQL{Dir: dir}
	m.server = server{name: "mariadbd", bin: bin, logPath: filepath.Join(dir, "mariadbd.log"), stopTimeout: 60 * time.Second, start: m.Start}
	for attempt := 0; ; attempt++ {
		if m.Port, err = freePort(); err != nil {
			break
		}
		m.args = append(m.defaultArgs(), opts.Args...)
		if err = m.Start(); err == nil {
			return m, nil
		}
		if attempt == 2 || !strings.Contains(logTail(m.server.logPath, 20), "in use") {
			break
		}
	}
	os.RemoveAll(dir)
	return nil, err
}

func (m *MySQL) defaultArgs() []string {
	return []string{
		"--no-defaults",
		"--datadir=" + filepath.Join(m.Dir, "data"),
		"--socket=" + filepath.Join(m.Dir, "sock"),
		"--pid-file=" + filepath.Join(m.Dir, "mariadbd.pid"),
		"--tmpdir=" + m.Dir,
		"--port=" + strconv.Itoa(m.Port),
		"--bind-address=127.0.0.1",
		"--user=root",
		"--log-bin=mysql-bin",
		"--binlog-format=ROW",
		"--binlog-row-image=FULL",
		"--binlog-row-metadata=FULL",
		"--server-id=1",
		"--skip-name-resolve",
		"--character-set-server=utf8mb4",
		"--collation-server=utf8mb4_general_ci",
		"--performance-schema=OFF",
		"--max-connections=1000",
		"--innodb-buffer-pool-size=64M",
		"--innodb-log-file-size=48M",
		// A killed process loses nothing at these settings: the OS still holds
		// the writes. Only an OS crash could, and the tests do not crash the OS.
		"--innodb-flush-log-at-trx-commit=2",
		"--sync-binlog=0",
		"--innodb-doublewrite=0",
	}
}

// installDataDir copies a cached, freshly installed data directory, creating
// the cache on first use. mariadb-install-db takes seconds; a copy takes
// milliseconds, and every test binary starts its own server.
func installDataDir(bin, dst string) error {
	st, err := os.Stat(bin)
	if err != nil {
		return fmt.Errorf("testenv: %w", err)
	}
	sum := sha256.Sum256([]byte(fmt.Sprintf("%s|%d|%d", bin, st.Size(), st.ModTime().UnixNano())))
	tmpl := filepath.Join(os.TempDir(), "cacheaside-mariadb-template-"+hex.EncodeToString(sum[:6]))
	if _, err := os.Stat(filepath.Join(tmpl, "mysql")); err != nil {
		if err := buildTemplate(tmpl); err != nil {
			return err
		}
	}
	if out, err := exec.Command("cp", "-a", tmpl, dst).CombinedOutput(); err != nil {
		return fmt.Errorf("testenv: copy data directory template: %v: %s", err, out)
	}
	return nil
}

// buildTemplate runs mariadb-install-db into a private directory and renames
// it into place, so concurrent test binaries never see a half-built template.
func buildTemplate(tmpl string) error {
	installer, err := lookBinary("mariadb-install-db")
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp(filepath.Dir(tmpl), filepath.Base(tmpl)+".build-")
	if err != nil {
		return fmt.Errorf("testenv: %w", err)
	}
	data := filepath.Join(work, "data")
	cmd := exec.Command(installer, "--no-defaults", "--datadir="+data, "--user=root",
		"--auth-root-authentication-method=normal", "--skip-test-db")
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(work)
		return fmt.Errorf("testenv: mariadb-install-db: %v\n%s", err, out)
	}
	if err := os.Rename(data, tmpl); err != nil && !errors.Is(err, os.ErrExist) {
		// Another binary won the race when the target exists and is not empty.
		if _, statErr := os.Stat(filepath.Join(tmpl, "mysql")); statErr != nil {
			os.RemoveAll(work)
			return fmt.Errorf("testenv: install template: %w", err)
		}
	}
	os.RemoveAll(work)
	return nil
}

// Addr returns host:port of the server.
func (m *MySQL) Addr() string { return "127.0.0.1:" + strconv.Itoa(m.Port) }

// Config returns a driver configuration for root on database db ("" for none).
func (m *MySQL) Config(db string) *mysql.Config {
	cfg := mysql.NewConfig()
	cfg.User = "root"
	cfg.Net = "tcp"
	cfg.Addr = m.Addr()
	cfg.DBName = db
	cfg.ParseTime = true
	cfg.InterpolateParams = true
	return cfg
}

// Start starts the server (again) on its port with its data directory and
// waits until it answers queries.
func (m *MySQL) Start() error {
	db, err := sql.Open("mysql", m.Config("").FormatDSN())
	if err != nil {
		return fmt.Errorf("testenv: %w", err)
	}
	defer db.Close()
	return m.launch(m.args, m.Port, 60*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return db.PingContext(ctx)
	})
}

// PurgeBinaryLogs rotates to a new binary log file and deletes every older
// one, so positions in them can no longer be read.
func (m *MySQL) PurgeBinaryLogs(ctx context.Context) error {
	db, err := sql.Open("mysql", m.Config("").FormatDSN())
	if err != nil {
		return err
	}
	defer db.Close()
	return PurgeBinaryLogs(ctx, db)
}

// PurgeBinaryLogs rotates db's server to a new binary log and purges all the
// older ones.
func PurgeBinaryLogs(ctx context.Context, db *sql.DB) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "FLUSH BINARY LOGS"); err != nil {
		return fmt.Errorf("testenv: flush binary logs: %w", err)
	}
	var file, pos string
	var rest []any
	rows, err := conn.QueryContext(ctx, "SHOW MASTER STATUS")
	if err != nil {
		return fmt.Errorf("testenv: show master status: %w", err)
	}
	cols, _ := rows.Columns()
	if rows.Next() {
		dest := []any{&file, &pos}
		for range cols[2:] {
			var s sql.RawBytes
			rest = append(rest, &s)
		}
		err = rows.Scan(append(dest, rest...)...)
	}
	rows.Close()
	if err != nil || file == "" {
		return fmt.Errorf("testenv: show master status: %v (is log_bin on?)", err)
	}
	// MariaDB keeps a file until InnoDB has made its transactions durable, a
	// moment after the rotation, and then silently purges less: repeat until
	// only the current file is left.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := conn.ExecContext(ctx, "PURGE BINARY LOGS TO '"+file+"'"); err != nil {
			return fmt.Errorf("testenv: purge binary logs: %w", err)
		}
		var n int
		rows, err := conn.QueryContext(ctx, "SHOW BINARY LOGS")
		if err != nil {
			return fmt.Errorf("testenv: show binary logs: %w", err)
		}
		for rows.Next() {
			n++
		}
		rows.Close()
		if n <= 1 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("testenv: %d binary logs left after purging to %s", n, file)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Close kills the server and removes its directory.
func (m *MySQL) Close() error {
	err := m.Kill()
	if rmErr := os.RemoveAll(m.Dir); err == nil {
		err = rmErr
	}
	return err
}
