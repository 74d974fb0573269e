package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is a throwaway redis-server on a loopback port with its data in a
// temporary directory. It keeps an append-only file, so data survives Stop,
// Kill and Start; Wipe deletes it to act out a failover that lost writes.
// The nodes of a Cluster and of a Sentinel setup are Redis servers too.
type Redis struct {
	// Dir holds the append-only file and the server log.
	Dir string
	// Port is the loopback TCP port; it stays the same across restarts.
	Port int

	// TLSPort is the port of the TLS listener, 0 without one (StartRedisTLS).
	TLSPort int
	// TLS is the certificate the TLS listener serves, nil without one.
	TLS *Certificate

	server
	extra []string  // flags after the defaults: cluster mode, replica of, TLS
	users []ACLUser // set again after every start (AddUser)
}

// StartRedis starts redis-server on a free loopback port.
func StartRedis() (*Redis, error) {
	return startRedis("", nil)
}

// startRedis starts redis-server on a free port in a new directory under
// parent ("" for the system's), with the flags extra returns for that port
// added after the defaults. It tries up to three ports.
func startRedis(parent string, extra func(dir string, port int) ([]string, error)) (*Redis, error) {
	bin, err := lookBinary("redis-server")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(parent, "cacheaside-redis-")
	if err != nil {
		return nil, fmt.Errorf("testenv: %w", err)
	}
	r := &Redis{Dir: dir}
	r.server = server{name: "redis-server", bin: bin, logPath: filepath.Join(dir, "redis.log"), stopTimeout: 30 * time.Second, start: r.Start}
	for attempt := 0; ; attempt++ {
		if r.Port, err = freePort(); err != nil {
			break
		}
		if extra != nil {
			if r.extra, err = extra(dir, r.Port); err != nil {
				break
			}
		}
		if err = r.Start(); err == nil {
			return r, nil
		}
		if attempt == 2 || !strings.Contains(logTail(r.server.logPath, 20), "in use") {
			break
		}
	}
	os.RemoveAll(dir)
	return nil, err
}

// Addr returns host:port of the server.
func (r *Redis) Addr() string { return "127.0.0.1:" + strconv.Itoa(r.Port) }

// Start starts the server (again) on its port and waits until it answers PING.
func (r *Redis) Start() error {
	args := []string{
		"--port", strconv.Itoa(r.Port),
		"--bind", "127.0.0.1",
		"--dir", r.Dir,
		"--save", "",
		"--appendonly", "yes",
		"--appendfsync", "everysec",
		"--daemonize", "no",
		"--protected-mode", "no",
		"--maxclients", "4000",
		// Replicas sync at once: the default waits 5s for more replicas.
		"--repl-diskless-sync-delay", "0",
	}
	args = append(args, r.extra...)
	c := redis.NewClient(&redis.Options{Addr: r.Addr(), MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	err := r.launch(args, r.Port, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return c.Ping(ctx).Err()
	})
	if err != nil {
		return err
	}
	return r.applyUsers()
}

// Wipe deletes the stopped server's data, so the next Start comes up empty,
// as a replica promoted without the primary's latest writes would.
func (r *Redis) Wipe() error {
	if r.running() {
		return errors.New("testenv: stop redis-server before Wipe")
	}
	for _, name := range []string{"appendonlydir", "dump.rdb"} {
		if err := os.RemoveAll(filepath.Join(r.Dir, name)); err != nil {
			return fmt.Errorf("testenv: %w", err)
		}
	}
	return nil
}

// Close kills the server and removes its directory.
func (r *Redis) Close() error {
	err := r.Kill()
	if rmErr := os.RemoveAll(r.Dir); err == nil {
		err = rmErr
	}
	return err
}
