package testenv_test

import (
	"context"
	"database/sql"
	"testing"

	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/internal/testenv"
)

func TestRedisUser(t *testing.T) {
	ctx := context.Background()
	t.Setenv(testenv.EnvRedisKinds, "single,cluster,sentinel,tls")
	env.ForEachRedis(t, func(t *testing.T, kind testenv.RedisKind, _ redis.UniversalClient) {
		p := env.Prefix(t)
		u := testenv.ACLUser{
			Name: "app" + p[1:len(p)-1], Password: "secret",
			Keys:     []string{p + "*"},
			Commands: append(testenv.ClientCommands(), "+get", "+set", "+evalsha", "+eval"),
		}
		c := env.RedisUserClient(t, kind, u)
		require.NoError(t, c.Set(ctx, p+"a", "1", 0).Err(), "a permitted command on a permitted key")
		assert.Equal(t, "1", c.Get(ctx, p+"a").Val())
		n, err := c.Eval(ctx, "return redis.call('GET', KEYS[1])", []string{p + "a"}).Text()
		require.NoError(t, err, "a script on a permitted key")
		assert.Equal(t, "1", n)

		err = c.Get(ctx, "other:"+p).Err()
		require.Error(t, err)
		assert.Contains(t, err.Error(), "NOPERM", "a key outside the patterns is refused")
		err = c.Del(ctx, p+"a").Err()
		require.Error(t, err)
		assert.Contains(t, err.Error(), "NOPERM")
		assert.Contains(t, err.Error(), "'del'", "the refusal names the command")
		err = c.Eval(ctx, "return redis.call('GET', KEYS[1])", []string{"other:" + p}).Err()
		require.Error(t, err)
		assert.Contains(t, err.Error(), "NOPERM", "scripts are held to the key patterns")
	})
}

func TestRedisUserSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	_, srv := env.Faults(t)
	p := env.Prefix(t)
	u := testenv.ACLUser{Name: "restart" + p[1:len(p)-1], Password: "pw", Keys: []string{p + "*"}, Commands: append(testenv.ClientCommands(), "+set")}
	c := env.RedisUserClient(t, testenv.KindSingle, u)
	require.NoError(t, c.Set(ctx, p+"a", "1", 0).Err())
	require.NoError(t, srv.Stop())
	require.NoError(t, srv.Start())
	require.NoError(t, c.Set(ctx, p+"b", "1", 0).Err(), "the user is set again after a restart")
}

func TestRedisTLS(t *testing.T) {
	t.Parallel() // its own servers
	ctx := context.Background()
	r, err := testenv.StartRedisTLS()
	require.NoError(t, err)
	t.Cleanup(func() { r.Close() })
	require.NotEmpty(t, r.TLSAddr())

	c := redis.NewClient(&redis.Options{Addr: r.TLSAddr(), TLSConfig: r.TLS.ClientConfig()})
	defer c.Close()
	require.NoError(t, c.Set(ctx, "k", "v", 0).Err())
	assert.Equal(t, "v", c.Get(ctx, "k").Val())

	plain := redis.NewClient(&redis.Options{Addr: r.TLSAddr(), MaxRetries: -1})
	defer plain.Close()
	assert.Error(t, plain.Ping(ctx).Err(), "the TLS port refuses plain text")
	untrusted := redis.NewClient(&redis.Options{Addr: r.TLSAddr(), MaxRetries: -1, TLSConfig: (&testenv.Certificate{}).ClientConfig()})
	defer untrusted.Close()
	err = untrusted.Ping(ctx).Err()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "certificate", "a client that does not trust the certificate refuses the server")
}

func TestMySQLTLS(t *testing.T) {
	t.Parallel() // its own servers
	cert, err := testenv.NewCertificate(t.TempDir())
	require.NoError(t, err)
	m, err := testenv.StartMySQL(&testenv.MySQLOptions{Args: cert.MariaDBArgs()})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	admin, err := sql.Open("mysql", m.Config("").FormatDSN())
	require.NoError(t, err)
	defer admin.Close()
	for _, q := range []string{"CREATE USER app@'%' IDENTIFIED BY 'pw' REQUIRE SSL", "GRANT SELECT ON *.* TO app@'%'"} {
		_, err := admin.Exec(q)
		require.NoError(t, err, q)
	}

	cfg := m.Config("")
	cfg.User, cfg.Passwd = "app", "pw"
	require.NoError(t, mysql.RegisterTLSConfig("testenv-mysql-tls", cert.ClientConfig()))
	t.Cleanup(func() { mysql.DeregisterTLSConfig("testenv-mysql-tls") })
	cfg.TLSConfig = "testenv-mysql-tls"
	db, err := sql.Open("mysql", cfg.FormatDSN())
	require.NoError(t, err)
	defer db.Close()
	var name, cipher string
	require.NoError(t, db.QueryRow("SHOW SESSION STATUS LIKE 'Ssl_cipher'").Scan(&name, &cipher))
	assert.NotEmpty(t, cipher, "the connection is encrypted")

	cfg.TLSConfig = ""
	plain, err := sql.Open("mysql", cfg.FormatDSN())
	require.NoError(t, err)
	defer plain.Close()
	assert.Error(t, plain.Ping(), "a REQUIRE SSL user cannot log in without TLS")
}
