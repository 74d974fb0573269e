package binlog

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"syscall"
	"time"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
	mysqldrv "github.com/go-sql-driver/mysql"
)

// retry runs fn until it succeeds, fails for good or ctx ends.
func (s *Stream) retry(ctx context.Context, what string, fn func() error) error {
	bo := backoff{min: s.opts.MinBackoff, max: s.opts.MaxBackoff}
	for {
		err := fn()
		if err == nil || !transient(err) || ctx.Err() != nil {
			return err
		}
		d := bo.next()
		s.opts.Logger.Warn("binlog: "+what+" failed; retrying", slog.Any("error", s.redact(err)), slog.Duration("after", d))
		if !sleep(ctx, d) {
			return ctx.Err()
		}
	}
}

// redact keeps the password out of an error's text. The result still
// matches the sentinels of the original (errors.Is), but does not unwrap
// to it, which would show the text again.
func (s *Stream) redact(err error) error {
	p := s.cfg.Password
	if err == nil || len(p) < 3 || !strings.Contains(err.Error(), p) {
		return err
	}
	return &redactedError{msg: strings.ReplaceAll(err.Error(), p, "[redacted]"), err: err}
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string        { return e.msg }
func (e *redactedError) Is(target error) bool { return errors.Is(e.err, target) }

// streamError classifies an error of the replication connection.
func streamError(err error) error {
	var me *gomysql.MyError
	if !errors.As(err, &me) || me.Code != gomysql.ER_MASTER_FATAL_ERROR_READING_BINLOG {
		return err
	}
	msg := strings.ToLower(me.Message)
	for _, lost := range []string{"could not find first log file", "could not find gtid state", "purged",
		"impossible position", "not in the master's binlog", "position > file size", "not found in binlog"} {
		if strings.Contains(msg, lost) {
			return fmt.Errorf("%w: %s", ErrPositionLost, me.Message)
		}
	}
	return fmt.Errorf("binlog: the server stopped the replication stream: %s", me.Message)
}

func replicationErrorCode(err error) uint16 {
	var me *gomysql.MyError
	if errors.As(err, &me) {
		return me.Code
	}
	return 0
}

// transientCodes are server errors that a later attempt may not see.
var transientCodes = map[uint16]bool{
	1040: true, // too many connections
	1053: true, // server shutdown in progress
	1152: true, // aborted connection
	1158: true, // network read error
	1159: true, // network read timeout
	1160: true, // network write error
	1161: true, // network write timeout
	1205: true, // lock wait timeout
	1213: true, // deadlock
	1317: true, // query interrupted
	1927: true, // connection killed (MariaDB)
	2002: true, // client: cannot connect (socket)
	2003: true, // client: cannot connect (TCP)
	2006: true, // client: server has gone away
	2013: true, // client: lost connection during query
}

// transient reports whether err may go away on a new connection: network
// errors and the server errors above. Everything else (access denied, a
// lost position, an event that does not decode, a bad setting) is final.
func transient(err error) bool {
	if err == nil {
		return false
	}
	if code := errorCode(err); code != 0 {
		return transientCodes[code]
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, gomysql.ErrBadConn) || errors.Is(err, driver.ErrBadConn) ||
		errors.Is(err, mysqldrv.ErrInvalidConn) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, replication.ErrSyncClosed) || errors.Is(err, replication.ErrNeedSyncAgain)
}

// backoff is a doubling delay with jitter: each wait is uniform in [d/2, d].
type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	half := b.cur / 2
	return half + rand.N(half+1)
}

func (b *backoff) reset() { b.cur = 0 }

// sleep waits d; false when ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
