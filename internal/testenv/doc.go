// Package testenv starts the throwaway servers that the tests, benchmarks and
// examples of cacheaside run against: a MariaDB with its binary log on
// (binlog_format=ROW, binlog_row_metadata=FULL, server id 1) and a Redis,
// each on a free loopback port with its data in a temporary directory.
//
// A test binary starts one pair in TestMain and shares it among its tests:
//
//	var env *testenv.Env
//
//	func TestMain(m *testing.M) { testenv.Main(m, &env, nil) }
//
// Tests take their own database (Env.NewDatabase) and key prefix
// (Env.Prefix), so they never see each other's data, and separate test
// binaries run side by side on their own servers. The fault controls on
// Env.MySQL and Env.Redis stop, kill, restart and purge the real servers,
// always on the same port with the same data. Env.Child re-runs the test
// binary as a child process against the same servers, for tests that need
// several processes or one to kill.
//
// With CACHEASIDE_MYSQL_DSN and CACHEASIDE_REDIS_ADDR set, the harness uses
// those servers instead and offers no fault controls. A missing mariadbd or
// redis-server is an error that says how to install it. Main silences the
// drivers' own logs of failed dials, which the fault tests cause on
// purpose; CACHEASIDE_DRIVER_LOGS=1 shows them.
package testenv
