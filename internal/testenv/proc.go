package testenv

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// installHint is the one command that installs both servers on Debian and Ubuntu.
const installHint = "apt-get update && apt-get install -y mariadb-server redis-server"

// lookBinary finds a server binary in PATH or in the sbin directories that
// Debian installs them to but that are not always on a user's PATH.
func lookBinary(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("testenv: %s not found in PATH or /usr/sbin; install it with: %s", name, installHint)
}

// freePort asks the kernel for a free loopback TCP port. Another process may
// take it before the server binds it; callers retry with a new port when the
// server fails to start.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("testenv: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// process is one running server: the command and a channel closed when it exits.
type process struct {
	cmd    *exec.Cmd
	done   chan struct{}
	mu     sync.Mutex
	err    error // exit status, valid after done is closed
	logOut string
}

// startProcess runs bin with args, appending its output to logPath. The child
// gets SIGKILL if this process dies, so a crashed test binary leaves no server behind.
func startProcess(bin string, args []string, logPath string) (*process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("testenv: open log: %w", err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("testenv: start %s: %w", filepath.Base(bin), err)
	}
	p := &process{cmd: cmd, done: make(chan struct{}), logOut: logPath}
	go func() {
		err := cmd.Wait()
		logf.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal sends sig and waits up to timeout for the process to exit; on a
// timeout it escalates to SIGKILL.
func (p *process) signal(sig syscall.Signal, timeout time.Duration) error {
	if p.exited() {
		return nil
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("testenv: signal %v: %w", sig, err)
	}
	// A paused process (see server.Pause) acts on SIGTERM only once continued.
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	return fmt.Errorf("testenv: process %d ignored %v for %v and was killed", p.cmd.Process.Pid, sig, timeout)
}

// logTail returns the last lines of the server log, for error messages.
func logTail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// waitReady polls ready every 50ms until it returns nil, the process exits or
// the timeout passes.
func waitReady(p *process, timeout time.Duration, ready func() error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if p.exited() {
			return fmt.Errorf("exited during start-up: %v", p.err)
		}
		if last = ready(); last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %v: %w", timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// server is the process side of a throwaway server, shared by MySQL and
// Redis: one process at a time, started again on the same port and data.
type server struct {
	name        string // "mariadbd" or "redis-server", for messages
	bin         string
	logPath     string
	stopTimeout time.Duration
	start       func() error // the owner's Start, for Restart

	mu   sync.Mutex
	proc *process
}

// launch starts the process with args and waits until ready succeeds; on
// failure it kills the process and reports the end of its log.
func (s *server) launch(args []string, port int, timeout time.Duration, ready func() error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil && !s.proc.exited() {
		return fmt.Errorf("testenv: %s is already running", s.name)
	}
	p, err := startProcess(s.bin, args, s.logPath)
	if err != nil {
		return err
	}
	s.proc = p
	if err := waitReady(p, timeout, ready); err != nil {
		_ = p.signal(syscall.SIGKILL, 10*time.Second)
		return fmt.Errorf("testenv: %s on port %d: %w\n%s", s.name, port, err, logTail(s.logPath, 20))
	}
	return nil
}

// Stop shuts the server down cleanly (SIGTERM) and waits for it to exit.
func (s *server) Stop() error { return s.signal(syscall.SIGTERM, s.stopTimeout) }

// Kill ends the server with SIGKILL, as a crash would, and waits for it to exit.
func (s *server) Kill() error { return s.signal(syscall.SIGKILL, 10*time.Second) }

// Restart stops the server cleanly and starts it again with its data.
func (s *server) Restart() error {
	if err := s.Stop(); err != nil {
		return err
	}
	return s.start()
}

func (s *server) signal(sig syscall.Signal, timeout time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return nil
	}
	return s.proc.signal(sig, timeout)
}

// Pause stops the server with SIGSTOP, as a long GC pause, a swapped-out VM
// or a network partition would look to its clients and peers: connections
// stay open and nothing answers. Resume continues it.
func (s *server) Pause() error { return s.send(syscall.SIGSTOP) }

// Resume continues a server stopped by Pause.
func (s *server) Resume() error { return s.send(syscall.SIGCONT) }

func (s *server) send(sig syscall.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil || s.proc.exited() {
		return fmt.Errorf("testenv: %s is not running", s.name)
	}
	if err := s.proc.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("testenv: %s: signal %v: %w", s.name, sig, err)
	}
	return nil
}

// running reports whether the process is up.
func (s *server) running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc != nil && !s.proc.exited()
}
