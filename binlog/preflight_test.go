package binlog_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/binlog"
)

func TestPreflightStatementFormatAndRowImage(t *testing.T) {
	t.Parallel()
	m, _ := startMySQL(t, "--binlog-format=STATEMENT", "--binlog-row-image=MINIMAL")
	err := runErr(t, serverConfig(m), binlog.Position{}, 30*time.Second)
	require.ErrorIs(t, err, binlog.ErrPreflight)
	var pe *binlog.PreflightError
	require.ErrorAs(t, err, &pe)
	t.Log(err)
	assert.Equal(t, "binlog_format", pe.Setting)
	assert.Equal(t, "STATEMENT", pe.Value)
	assert.Contains(t, err.Error(), "SET GLOBAL binlog_format='ROW'", "the error says how to fix it")
	assert.Contains(t, err.Error(), "binlog_row_image is MINIMAL, need FULL", "every wrong setting is reported")
}

func TestPreflightNoBinaryLog(t *testing.T) {
	t.Parallel()
	m, _ := startMySQL(t, "--skip-log-bin")
	err := runErr(t, serverConfig(m), binlog.Position{}, 30*time.Second)
	require.ErrorIs(t, err, binlog.ErrPreflight)
	var pe *binlog.PreflightError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, "log_bin", pe.Setting)
	assert.Equal(t, "OFF", pe.Value)
	assert.Contains(t, pe.Fix, "log-bin")
}

func TestPreflightServerIDs(t *testing.T) {
	_, err := binlog.New(binlog.Config{Addr: "127.0.0.1:3306"}, nil)
	assert.ErrorContains(t, err, "ServerID", "an explicit server id is required")

	cfg := rootConfig(t)
	cfg.ServerID = 1 // the harness server's own id
	err = runErr(t, cfg, binlog.Position{}, 30*time.Second)
	var pe *binlog.PreflightError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, "Config.ServerID", pe.Setting)
}

// user creates a user with a random password and the given global grants.
func user(t *testing.T, grants string) binlog.Config {
	t.Helper()
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	name := "bl_" + hex.EncodeToString(b[:4])
	pass := "Pw-" + hex.EncodeToString(b)
	exec(t, env.Admin(), fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY '%s'", name, pass),
		fmt.Sprintf("GRANT %s ON *.* TO '%s'@'%%'", grants, name))
	t.Cleanup(func() { _, _ = env.Admin().Exec(fmt.Sprintf("DROP USER '%s'@'%%'", name)) })
	cfg := rootConfig(t)
	cfg.User, cfg.Password = name, pass
	return cfg
}

func TestLeastPrivilegeUser(t *testing.T) {
	db, schema := env.NewDatabase(t)
	exec(t, db, "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))")
	cfg := user(t, "REPLICATION SLAVE, REPLICATION CLIENT, SELECT")

	// From the current position (SHOW MASTER STATUS, BINLOG_GTID_POS) ...
	c := stream(t, cfg, nil, schema, binlog.Position{})
	for id := 1; ; id++ {
		require.Less(t, id, 200, "no row arrived")
		exec(t, db, fmt.Sprintf("INSERT INTO t VALUES (%d, 'x')", id))
		select {
		case tx := <-c.ch:
			assert.Equal(t, "x", tx.Rows[0].After["v"])
		case <-time.After(100 * time.Millisecond):
			continue
		}
		break
	}
	// ... and from a file and offset, learning the GTID position.
	from := masterPos(t, env.Admin())
	from.GTIDSet = ""
	c = stream(t, cfg, nil, schema, from)
	exec(t, db, "INSERT INTO t VALUES (1000, 'y')")
	tx := c.next()
	assert.Equal(t, "y", tx.Rows[0].After["v"])
	assert.NotEmpty(t, tx.Pos.GTIDSet)
}

func TestMissingReplicationSlave(t *testing.T) {
	cfg := user(t, "REPLICATION CLIENT, SELECT")
	var logs bytes.Buffer
	s, err := binlog.New(cfg, &binlog.Options{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = s.Run(ctx, binlog.Position{}, binlog.HandlerFunc(func(context.Context, *binlog.Tx) error { return nil }))
	require.NoError(t, ctx.Err(), "the error comes at once, not after a hang")
	var pe *binlog.PreflightError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, "REPLICATION SLAVE", pe.Setting)
	assert.Contains(t, pe.Fix, "GRANT REPLICATION SLAVE")
	assert.NotContains(t, err.Error(), cfg.Password)
	assert.NotContains(t, logs.String(), cfg.Password)
}

func TestCredentialsNeverShown(t *testing.T) {
	cfg := user(t, "REPLICATION SLAVE, REPLICATION CLIENT, SELECT")
	for _, f := range []string{"%v", "%+v", "%#v", "%s"} {
		assert.NotContains(t, fmt.Sprintf(f, cfg), cfg.Password, f)
		assert.NotContains(t, fmt.Sprintf(f, &cfg), cfg.Password, f)
	}
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	logger.Info("config", "cfg", cfg)
	assert.Contains(t, logs.String(), cfg.User)

	run := func(cfg binlog.Config, timeout time.Duration) error {
		s, err := binlog.New(cfg, &binlog.Options{Logger: logger, MaxBackoff: 100 * time.Millisecond})
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		return s.Run(ctx, binlog.Position{}, binlog.HandlerFunc(func(context.Context, *binlog.Tx) error { return nil }))
	}
	// A wrong password is final, and the error does not repeat it.
	wrong := cfg
	wrong.Password = cfg.Password + "-wrong"
	err := run(wrong, 30*time.Second)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "Access denied")
	assert.NotContains(t, err.Error(), cfg.Password)
	// An unreachable server is retried, and the retries are logged.
	gone := cfg
	gone.Addr = "127.0.0.1:1"
	assert.NoError(t, run(gone, time.Second), "Run returns nil after cancellation")
	assert.Contains(t, logs.String(), "retrying")
	assert.NotContains(t, logs.String(), cfg.Password)

	dsnCfg, err := binlog.ConfigFromDSN(cfg.User + ":" + cfg.Password + "@tcp(" + cfg.Addr + ")/?tls=skip-verify")
	require.NoError(t, err)
	assert.Equal(t, cfg.Password, dsnCfg.Password)
	assert.Equal(t, cfg.Addr, dsnCfg.Addr)
	assert.NotNil(t, dsnCfg.TLS, "the DSN's TLS setting is passed through")
	_, err = binlog.ConfigFromDSN("user:" + cfg.Password + "@bad(")
	require.Error(t, err)
	assert.NotContains(t, err.Error(), cfg.Password)
}
