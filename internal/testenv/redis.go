package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is a throwaway redis-server on a loopback port with its data in a
// temporary directory. It keeps an append-only file, so data survives Stop,
// Kill and Start; Wipe deletes it to act out a failover that lost writes.
type Redis struct {
	// Dir holds the append-only file and the server log.
	Dir string
	// Port is the loopback TCP port; it stays the same across restarts.
	Port int

	bin string

	mu   sync.Mutex
	proc *process
}

// StartRedis starts redis-server on a free loopback port.
func StartRedis() (*Redis, error) {
	bin, err := lookBinary("redis-server")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "cacheaside-redis-")
	if err != nil {
		return nil, fmt.Errorf("testenv: %w", err)
	}
	r := &Redis{Dir: dir, bin: bin}
	for attempt := 0; ; attempt++ {
		if r.Port, err = freePort(); err != nil {
			break
		}
		if err = r.Start(); err == nil {
			return r, nil
		}
		if attempt == 2 || !strings.Contains(logTail(r.logPath(), 20), "in use") {
			break
		}
	}
	os.RemoveAll(dir)
	return nil, err
}

func (r *Redis) logPath() string { return filepath.Join(r.Dir, "redis.log") }

// Addr returns host:port of the server.
func (r *Redis) Addr() string { return "127.0.0.1:" + strconv.Itoa(r.Port) }

// Start starts the server (again) on its port and waits until it answers PING.
func (r *Redis) Start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc != nil && !r.proc.exited() {
		return errors.New("testenv: redis-server is already running")
	}
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
	}
	p, err := startProcess(r.bin, args, r.logPath())
	if err != nil {
		return err
	}
	r.proc = p
	c := redis.NewClient(&redis.Options{Addr: r.Addr(), MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	err = waitReady(p, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return c.Ping(ctx).Err()
	})
	if err != nil {
		_ = p.signal(syscall.SIGKILL, 10*time.Second)
		return fmt.Errorf("testenv: redis-server on port %d: %w\n%s", r.Port, err, logTail(r.logPath(), 20))
	}
	return nil
}

// Stop shuts the server down cleanly (SIGTERM flushes the append-only file).
func (r *Redis) Stop() error { return r.stop(syscall.SIGTERM, 30*time.Second) }

// Kill ends the server with SIGKILL and waits for it to exit.
func (r *Redis) Kill() error { return r.stop(syscall.SIGKILL, 10*time.Second) }

// Restart stops the server cleanly and starts it again with its data.
func (r *Redis) Restart() error {
	if err := r.Stop(); err != nil {
		return err
	}
	return r.Start()
}

func (r *Redis) stop(sig syscall.Signal, timeout time.Duration) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc == nil {
		return nil
	}
	return r.proc.signal(sig, timeout)
}

// Wipe deletes the stopped server's data, so the next Start comes up empty,
// as a replica promoted without the primary's latest writes would.
func (r *Redis) Wipe() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc != nil && !r.proc.exited() {
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
