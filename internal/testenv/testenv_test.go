package testenv_test

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	testenv.Main(m, &env, testenv.Children{"own-servers": ownServers, "cluster-child": clusterChild})
}

// ownServers starts a private pair of servers, as a separate test binary
// would, claims names that would collide with another binary's, and prints its ports.
func ownServers(ctx context.Context, _ *testenv.Env) error {
	os.Unsetenv(testenv.EnvMySQLDSN)
	os.Unsetenv(testenv.EnvRedisAddr)
	e, err := testenv.Start(nil)
	if err != nil {
		return err
	}
	defer e.Close()
	if _, err := e.Admin().ExecContext(ctx, "CREATE DATABASE collide"); err != nil {
		return fmt.Errorf("create database: %w", err)
	}
	c := e.NewRedis(nil)
	defer c.Close()
	ok, err := c.SetNX(ctx, "collide", "1", 0).Result()
	if err != nil || !ok {
		return fmt.Errorf("set collide: ok=%v err=%v", ok, err)
	}
	fmt.Printf("ports %d %d\n", e.MySQL.Port, e.Redis.Port)
	return nil
}

func variable(t *testing.T, db *sql.DB, name string) string {
	t.Helper()
	var n, v string
	require.NoError(t, db.QueryRow("SHOW GLOBAL VARIABLES LIKE '"+name+"'").Scan(&n, &v))
	return v
}

func TestServersAnswerWithBinlog(t *testing.T) {
	require.NoError(t, env.Admin().Ping())
	require.NoError(t, env.RedisClient(t).Ping(context.Background()).Err())

	assert.Equal(t, "ON", variable(t, env.Admin(), "log_bin"))
	assert.Equal(t, "ROW", variable(t, env.Admin(), "binlog_format"))
	assert.Equal(t, "FULL", variable(t, env.Admin(), "binlog_row_metadata"))
	assert.Equal(t, "FULL", variable(t, env.Admin(), "binlog_row_image"))
	assert.NotEqual(t, "0", variable(t, env.Admin(), "server_id"))
}

func TestDatabasesAndPrefixesAreIsolated(t *testing.T) {
	db1, name1 := env.NewDatabase(t)
	db2, name2 := env.NewDatabase(t)
	require.NotEqual(t, name1, name2)
	_, err := db1.Exec("CREATE TABLE t (id INT PRIMARY KEY)")
	require.NoError(t, err)
	_, err = db2.Exec("SELECT 1 FROM t")
	assert.Error(t, err, "a table of one test's database must not be visible in another's")

	p1, p2 := env.Prefix(t), env.Prefix(t)
	assert.NotEqual(t, p1, p2)
	assert.False(t, strings.HasPrefix(p1, p2) || strings.HasPrefix(p2, p1))
}

func TestMySQLSurvivesStopAndKill(t *testing.T) {
	mysqlSrv, _ := env.Faults(t)
	db, _ := env.NewDatabase(t)
	_, err := db.Exec("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))")
	require.NoError(t, err)
	_, err = db.Exec("INSERT INTO t VALUES (1, 'before-stop')")
	require.NoError(t, err)
	port := mysqlSrv.Port

	require.NoError(t, mysqlSrv.Stop())
	assert.Error(t, db.Ping(), "a stopped server must not answer")
	require.NoError(t, mysqlSrv.Start())
	assert.Equal(t, port, mysqlSrv.Port)
	var v string
	require.NoError(t, db.QueryRow("SELECT v FROM t WHERE id = 1").Scan(&v))
	assert.Equal(t, "before-stop", v)

	_, err = db.Exec("INSERT INTO t VALUES (2, 'before-kill')")
	require.NoError(t, err)
	require.NoError(t, mysqlSrv.Kill())
	require.NoError(t, mysqlSrv.Start())
	require.NoError(t, db.QueryRow("SELECT v FROM t WHERE id = 2").Scan(&v))
	assert.Equal(t, "before-kill", v)
	assert.Equal(t, "ON", variable(t, env.Admin(), "log_bin"))
}

func TestRedisSurvivesStopAndKill(t *testing.T) {
	_, redisSrv := env.Faults(t)
	ctx := context.Background()
	c := env.RedisClient(t)
	p := env.Prefix(t)

	require.NoError(t, c.Set(ctx, p+"a", "1", 0).Err())
	require.NoError(t, redisSrv.Stop())
	assert.Error(t, c.Ping(ctx).Err())
	require.NoError(t, redisSrv.Start())
	assert.Equal(t, "1", c.Get(ctx, p+"a").Val())

	require.NoError(t, c.Set(ctx, p+"b", "2", 0).Err())
	require.NoError(t, redisSrv.Kill())
	require.NoError(t, redisSrv.Start())
	assert.Equal(t, "2", c.Get(ctx, p+"b").Val())

	require.NoError(t, redisSrv.Stop())
	require.NoError(t, redisSrv.Wipe())
	require.NoError(t, redisSrv.Start())
	assert.Equal(t, int64(0), c.Exists(ctx, p+"a", p+"b").Val(), "Wipe must drop the data")
}

func TestPurgeBinaryLogs(t *testing.T) {
	mysqlSrv, _ := env.Faults(t)
	ctx := context.Background()
	_, err := env.Admin().Exec("FLUSH BINARY LOGS")
	require.NoError(t, err)
	require.NoError(t, mysqlSrv.PurgeBinaryLogs(ctx))
	rows, err := env.Admin().Query("SHOW BINARY LOGS")
	require.NoError(t, err)
	defer rows.Close()
	n := 0
	for rows.Next() {
		n++
	}
	assert.Equal(t, 1, n, "only the current binary log is left")
}

func TestTwoBinariesDoNotCollide(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	ports := make([]string, 2)
	errs := make([]error, 2)
	for i := range 2 {
		wg.Go(func() {
			cmd := env.Child(ctx, "own-servers")
			out, err := cmd.StdoutPipe()
			if err != nil {
				errs[i] = err
				return
			}
			if err := cmd.Start(); err != nil {
				errs[i] = err
				return
			}
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if strings.HasPrefix(sc.Text(), "ports ") {
					ports[i] = sc.Text()
				}
			}
			errs[i] = cmd.Wait()
		})
	}
	wg.Wait()
	for i := range 2 {
		require.NoError(t, errs[i], "child %d", i)
		require.NotEmpty(t, ports[i], "child %d printed no ports", i)
	}
	assert.NotEqual(t, ports[0], ports[1])
}
