package testenv_test

import (
	"context"
	"database/sql"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/internal/testenv"
)

func gtidPos(t *testing.T, db *sql.DB) string {
	t.Helper()
	var pos string
	require.NoError(t, db.QueryRow("SELECT @@GLOBAL.gtid_binlog_pos").Scan(&pos))
	return pos
}

func TestMySQLReplicaPromote(t *testing.T) {
	t.Parallel() // its own servers
	ctx := context.Background()
	primary, err := testenv.StartMySQL(nil)
	require.NoError(t, err)
	t.Cleanup(func() { primary.Close() })
	pdb, err := sql.Open("mysql", primary.Config("").FormatDSN())
	require.NoError(t, err)
	t.Cleanup(func() { pdb.Close() })
	for _, q := range []string{
		"CREATE DATABASE app",
		"CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(20))",
		"INSERT INTO app.t VALUES (1, 'before')",
	} {
		_, err := pdb.Exec(q)
		require.NoError(t, err, q)
	}

	replica, err := testenv.StartMySQLReplica(primary, nil)
	require.NoError(t, err)
	t.Cleanup(func() { replica.Close() })
	rdb, err := sql.Open("mysql", replica.Config("").FormatDSN())
	require.NoError(t, err)
	t.Cleanup(func() { rdb.Close() })
	var v string
	require.NoError(t, rdb.QueryRow("SELECT v FROM app.t WHERE id = 1").Scan(&v))
	assert.Equal(t, "before", v, "the replica copied what was there")

	_, err = pdb.Exec("INSERT INTO app.t VALUES (2, 'replicated')")
	require.NoError(t, err)
	require.NoError(t, replica.WaitReplicated(ctx, primary))
	require.NoError(t, rdb.QueryRow("SELECT v FROM app.t WHERE id = 2").Scan(&v))
	assert.Equal(t, "replicated", v)
	last := gtidPos(t, pdb)
	assert.Equal(t, last, gtidPos(t, rdb), "the replica logs the primary's transactions with their GTIDs")

	require.NoError(t, primary.Kill())
	require.NoError(t, replica.Promote(ctx))
	_, err = rdb.Exec("INSERT INTO app.t VALUES (3, 'promoted')")
	require.NoError(t, err, "the promoted replica takes writes")
	next := gtidPos(t, rdb)
	assert.NotEqual(t, last, next)
	// One domain: the sequence goes on from the primary's last, under the
	// replica's server id.
	lf, nf := strings.Split(last, "-"), strings.Split(next, "-")
	require.Len(t, lf, 3, last)
	require.Len(t, nf, 3, next)
	assert.Equal(t, lf[0], nf[0], "same domain")
	assert.NotEqual(t, lf[1], nf[1], "written by another server")
	ls, _ := strconv.Atoi(lf[2])
	ns, _ := strconv.Atoi(nf[2])
	assert.Equal(t, ls+1, ns, "the sequence goes on from the primary's")
	assert.Equal(t, "ON", variable(t, rdb, "log_bin"))
	assert.Equal(t, "FULL", variable(t, rdb, "binlog_row_metadata"))
}
