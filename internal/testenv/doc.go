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
// Beyond the single Redis, Env.Cluster starts a Redis Cluster of three
// masters with one replica each (redis-server --cluster-enabled, joined by
// redis-cli --cluster create, about 2.5s) and Env.Sentinel a master, a
// replica and three sentinels (redis-server --sentinel, under 1s), each on
// first use and shared by the binary's tests until Main closes them. Their
// fault controls act on the real processes: KillMaster kills a master, waits
// for its replica's promotion and brings the old master back as a replica;
// LoseWrites cuts a master's replication, lets a write be acknowledged,
// pauses the master (SIGSTOP) and fails over, so that the acknowledged
// write is lost, as in an asynchronous failover. Every Redis (Pause,
// Resume) can be frozen the same way. Env.ForEachRedis runs a test on the
// single server, the cluster and the sentinels alike (CACHEASIDE_REDIS_KINDS
// picks a subset). The cluster's nodes fail a master over after 1s without
// an answer (cluster-node-timeout), so a node frozen that long by a loaded
// machine is failed over: the tests expect roles to move and ask the
// harness for the current ones.
//
// LoseWrites does not race a write against replication: it pauses the
// replica, has the master drop the replication link, and only then lets
// the write through, so the write is acknowledged (WAIT reports 0 replicas)
// and certainly missing on the replica that takes over, in every run. The
// sentinels are told about each other and about the replica in their
// configuration files rather than through their hello messages, which
// would add two seconds to every start. A child started by Env.Child gets
// CACHEASIDE_REDIS_CLUSTER and CACHEASIDE_REDIS_SENTINEL, so Env.NewRedisOf
// in the child reaches its parent's cluster and sentinels.
//
// StartMySQLReplica starts a MariaDB that replicates another with GTIDs and
// logs the primary's transactions under their own GTIDs; after the primary
// is killed, Promote makes it the primary, and a binlog reader goes on from
// the GTID position it had reached.
//
// For least privilege and transport security as production runs them:
// AddUser (on a Redis, a Cluster or a Sentinel setup) creates an ACL user
// limited to key patterns and commands, set again after every restart, and
// Env.RedisUserClient returns a client of any kind logged in as one; a
// refused command or key is Redis's NOPERM error, which names it.
// StartRedisTLS serves TLS on a second port (CACHEASIDE_REDIS_KINDS=...,tls
// adds it to ForEachRedis), and NewCertificate makes a certificate for
// 127.0.0.1 in Go whose MariaDBArgs serve TLS from mariadbd.
//
// With CACHEASIDE_MYSQL_DSN and CACHEASIDE_REDIS_ADDR set, the harness uses
// those servers instead and offers no fault controls. A missing mariadbd or
// redis-server is an error that says how to install it. Main silences the
// drivers' own logs of failed dials, which the fault tests cause on
// purpose; CACHEASIDE_DRIVER_LOGS=1 shows them.
package testenv
