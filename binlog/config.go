package binlog

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"
)

// The server flavors.
const (
	FlavorMariaDB = "mariadb"
	FlavorMySQL   = "mysql"
)

// Config says how to reach the server. Its String, GoString and LogValue
// methods leave out the password, so printing or logging a Config is safe.
type Config struct {
	// Addr is host:port.
	Addr string
	// User and Password are the replication user's credentials. The user
	// needs REPLICATION SLAVE and REPLICATION CLIENT on *.*, and SELECT
	// when the server logs minimal row metadata or tables have BINARY(16)
	// or BINARY(4) columns (which may be MariaDB's INET6, UUID or INET4):
	//
	//	CREATE USER 'cacheaside'@'%' IDENTIFIED BY '...';
	//	GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO 'cacheaside'@'%';
	User, Password string
	// TLS, when set, encrypts both the replication connection and the
	// connection used for checks and schema lookups.
	TLS *tls.Config
	// ServerID identifies this stream to the server as a replica. It must be
	// non-zero and differ from every server's and replica's id; two streams
	// with the same id push each other off.
	ServerID uint32
	// Flavor is FlavorMariaDB or FlavorMySQL; "" detects it from the server.
	Flavor string
}

// String describes c without the password.
func (c Config) String() string {
	return fmt.Sprintf("binlog.Config{Addr: %q, User: %q, Password: %s, TLS: %t, ServerID: %d, Flavor: %q}",
		c.Addr, c.User, redactedPassword(c.Password), c.TLS != nil, c.ServerID, c.Flavor)
}

// GoString is String, so that %#v leaves out the password too.
func (c Config) GoString() string { return c.String() }

// LogValue leaves out the password in structured logs.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(slog.String("addr", c.Addr), slog.String("user", c.User),
		slog.Bool("tls", c.TLS != nil), slog.Uint64("server_id", uint64(c.ServerID)), slog.String("flavor", c.Flavor))
}

func redactedPassword(p string) string {
	if p == "" {
		return `""`
	}
	return "[redacted]"
}

// ConfigFromDSN reads Addr, User, Password and TLS from a go-sql-driver
// DSN such as "user:pass@tcp(db:3306)/?tls=true". ServerID must still be set.
func ConfigFromDSN(dsn string) (Config, error) {
	c, err := mysqldrv.ParseDSN(dsn)
	if err != nil {
		return Config{}, errors.New("binlog: the DSN does not parse (check its user:password@tcp(host:port)/ form)")
	}
	return Config{Addr: c.Addr, User: c.User, Password: c.Passwd, TLS: c.TLS}, nil
}

// Options tunes a Stream. The zero value and nil mean the defaults.
type Options struct {
	// Logger receives reconnects, warnings and preflight notes. Default: discard.
	Logger *slog.Logger
	// MaxTxRows bounds the rows held in memory for one transaction; a larger
	// one is delivered in parts (Tx.More). Default: 10000.
	MaxTxRows int
	// HeartbeatPeriod asks the server for a heartbeat when the log is idle.
	// Default: 1s.
	HeartbeatPeriod time.Duration
	// ReadTimeout is how long a connection may stay silent before it is
	// treated as dead and replaced. Default: 3 × HeartbeatPeriod.
	ReadTimeout time.Duration
	// MinBackoff and MaxBackoff bound the jittered, doubling wait between
	// reconnects. Default: 100ms and 5s.
	MinBackoff, MaxBackoff time.Duration
	// Include reports whether rows and changes of a table are delivered;
	// table is "" for a change to a whole schema. Changes to the whole
	// server are always delivered. Default: every table.
	Include func(schema, table string) bool
}
