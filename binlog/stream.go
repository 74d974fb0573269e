package binlog

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
	mysqldrv "github.com/go-sql-driver/mysql"
)

var (
	// ErrPositionLost means the server no longer has the binary log at the
	// requested position: it was purged, or the position (or GTID) is not
	// one the server knows. Changes since then cannot be read: take
	// Stream.CurrentPosition, flush what was derived from the log (a cache
	// generation bump), then Run from that position.
	ErrPositionLost = errors.New("binlog: position lost: the server's binary log no longer has it (purged or unknown)")
	// ErrStaleEpoch is returned by CheckpointStore.Save when a newer epoch
	// has already saved a checkpoint: the caller is no longer the leader.
	ErrStaleEpoch = errors.New("binlog: checkpoint refused: a newer epoch has saved")
	// ErrPreflight matches every *PreflightError: the server or the user is
	// not set up for streaming.
	ErrPreflight = errors.New("binlog: server not set up for row-based streaming")
)

// Stream reads committed transactions from a server's binary log. It holds
// only configuration: each Run opens its own connections and closes them
// before it returns. Run it once at a time: two Runs would share one
// server id and push each other off the server.
type Stream struct {
	cfg  Config
	opts Options
	host string
	port uint16
}

// New checks cfg and returns a Stream. It does no I/O.
func New(cfg Config, opts *Options) (*Stream, error) {
	s := &Stream{cfg: cfg}
	if opts != nil {
		s.opts = *opts
	}
	if cfg.ServerID == 0 {
		return nil, errors.New("binlog: Config.ServerID is 0; set an id that no server or replica uses")
	}
	if cfg.Flavor != "" && cfg.Flavor != FlavorMariaDB && cfg.Flavor != FlavorMySQL {
		return nil, fmt.Errorf("binlog: Config.Flavor %q: use %q, %q or \"\"", cfg.Flavor, FlavorMariaDB, FlavorMySQL)
	}
	host, port, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		host, port = cfg.Addr, "3306"
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || host == "" {
		return nil, fmt.Errorf("binlog: Config.Addr %q: want host:port", cfg.Addr)
	}
	s.host, s.port = host, uint16(p)
	o := &s.opts
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxTxRows <= 0 {
		o.MaxTxRows = 10000
	}
	if o.HeartbeatPeriod <= 0 {
		o.HeartbeatPeriod = time.Second
	}
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = 3 * o.HeartbeatPeriod
	}
	if o.ReadTimeout <= o.HeartbeatPeriod {
		return nil, fmt.Errorf("binlog: Options.ReadTimeout %v must exceed HeartbeatPeriod %v, or an idle log looks dead",
			o.ReadTimeout, o.HeartbeatPeriod)
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 100 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 5 * time.Second
	}
	o.MaxBackoff = max(o.MaxBackoff, o.MinBackoff)
	if o.Include == nil {
		o.Include = func(string, string) bool { return true }
	}
	return s, nil
}

// handlerError carries the handler's own error through the stream.
type handlerError struct{ err error }

func (e handlerError) Error() string { return e.err.Error() }

// Run streams committed transactions from from (the server's current
// position when from.IsZero()) to h until ctx ends, reconnecting by itself
// from the last transaction h accepted. It returns nil after ctx is
// cancelled, h's error if h fails, ErrPositionLost (wrapped) when the
// server no longer has the log at the position, joined *PreflightError
// values when the server is not set up for streaming, and other errors
// that a reconnect cannot fix. No goroutine outlives Run.
func (s *Stream) Run(ctx context.Context, from Position, h Handler) error {
	err := s.run(ctx, from, h)
	if ctx.Err() != nil {
		return nil
	}
	var he handlerError
	if errors.As(err, &he) {
		return he.err
	}
	return s.redact(err)
}

// CurrentPosition returns the end of the server's binary log now. To miss
// nothing between some action and the start of Run (flushing a cache after
// ErrPositionLost, say), read the position first, act, then Run from it.
func (s *Stream) CurrentPosition(ctx context.Context) (Position, error) {
	db := sql.OpenDB(s.connector())
	defer db.Close()
	flavor := s.cfg.Flavor
	if flavor == "" {
		var version string
		if err := db.QueryRowContext(ctx, "SELECT VERSION()").Scan(&version); err != nil {
			return Position{}, s.redact(fmt.Errorf("binlog: current position: %w", err))
		}
		flavor = flavorOf(version)
	}
	p, err := currentPosition(ctx, db, flavor)
	if err != nil {
		return Position{}, s.redact(fmt.Errorf("binlog: current position: %w", err))
	}
	return p, nil
}

func (s *Stream) run(ctx context.Context, from Position, h Handler) error {
	log := s.opts.Logger
	db := sql.OpenDB(s.connector())
	defer db.Close()
	var info serverInfo
	err := s.retry(ctx, "preflight", func() (err error) {
		info, err = preflight(ctx, db, &s.cfg, log)
		return err
	})
	if err != nil {
		return err
	}
	pos := from
	err = s.retry(ctx, "read the current position", func() (err error) {
		switch {
		case pos.IsZero():
			pos, err = currentPosition(ctx, db, info.flavor)
		case pos.GTIDSet == "" && pos.File != "" && info.flavor == FlavorMariaDB:
			// Learn the GTID position too, so that later positions carry it.
			if g, gerr := mariaGTIDAt(ctx, db, pos); gerr == nil {
				pos.GTIDSet = g
			}
		}
		return err
	})
	if err != nil {
		return err
	}
	log.Info("binlog: streaming", slog.String("flavor", info.flavor), slog.String("from", pos.String()),
		slog.Bool("full_metadata", info.fullMetadata))
	schema := newSchemaCache(db)
	bo := backoff{min: s.opts.MinBackoff, max: s.opts.MaxBackoff}
	for {
		began := time.Now()
		progressed, err := s.session(ctx, info, &pos, h, schema)
		if ctx.Err() != nil {
			return nil
		}
		if !transient(err) {
			return err
		}
		if progressed || time.Since(began) > s.opts.MaxBackoff {
			bo.reset()
		}
		d := bo.next()
		log.Warn("binlog: stream interrupted; reconnecting", slog.Any("error", s.redact(err)),
			slog.String("position", pos.String()), slog.Duration("after", d))
		if !sleep(ctx, d) {
			return nil
		}
	}
}

// session streams over one replication connection until it fails. pos is
// advanced past every transaction h accepts.
func (s *Stream) session(ctx context.Context, info serverInfo, pos *Position, h Handler, schema *schemaCache) (progressed bool, err error) {
	gtid, err := newGTIDState(info.flavor, pos.GTIDSet)
	if err != nil {
		return false, err
	}
	var closing atomic.Bool
	syncer := replication.NewBinlogSyncer(s.syncerConfig(ctx, &closing, info.flavor))
	defer func() {
		// Close kills the dump thread over a new connection, so that the
		// server forgets this replica at once; that dial must not be
		// cancelled with ctx.
		closing.Store(true)
		syncer.Close()
	}()
	var streamer *replication.BinlogStreamer
	if pos.GTIDSet != "" {
		var set gomysql.GTIDSet
		if set, err = gomysql.ParseGTIDSet(info.flavor, pos.GTIDSet); err != nil {
			return false, fmt.Errorf("binlog: position %s: %w", pos, err)
		}
		streamer, err = syncer.StartSyncGTID(set)
	} else {
		streamer, err = syncer.StartSync(gomysql.Position{Name: pos.File, Pos: pos.Offset})
	}
	if err != nil {
		return false, fmt.Errorf("binlog: start streaming at %s: %w", pos, streamError(err))
	}
	s.opts.Logger.Debug("binlog: connected", slog.String("position", pos.String()))
	a := &assembler{
		// The schema cache is asked only for tables whose table maps lack
		// names, signedness or charsets, or have a BINARY(16) or BINARY(4)
		// column (MariaDB's INET6, UUID and INET4 look the same in the
		// log); its character set tables are read once per Run.
		dec:        newDecoder(schema, s.opts.Include),
		maxRows:    s.opts.MaxTxRows,
		include:    s.opts.Include,
		lowerNames: info.lowerNames,
		file:       pos.File,
		gtid:       gtid,
		last:       *pos,
		deliver: func(ctx context.Context, tx *Tx) error {
			if err := h.HandleTx(ctx, tx); err != nil {
				return handlerError{err}
			}
			progressed = true
			if !tx.More {
				*pos = tx.Pos
			}
			return nil
		},
	}
	for {
		ev, err := streamer.GetEvent(ctx)
		if err != nil {
			return progressed, fmt.Errorf("binlog: read the stream after %s: %w", pos, streamError(err))
		}
		if err := a.handle(ctx, ev); err != nil {
			return progressed, err
		}
	}
}

func (s *Stream) syncerConfig(ctx context.Context, closing *atomic.Bool, flavor string) replication.BinlogSyncerConfig {
	dialTimeout := max(s.opts.ReadTimeout, 3*time.Second)
	return replication.BinlogSyncerConfig{
		ServerID:                s.cfg.ServerID,
		Flavor:                  flavor,
		Host:                    s.host,
		Port:                    s.port,
		User:                    s.cfg.User,
		Password:                s.cfg.Password,
		TLSConfig:               s.cfg.TLS,
		ParseTime:               false, // dates arrive as text: see parseTime
		TimestampStringLocation: time.UTC,
		HeartbeatPeriod:         s.opts.HeartbeatPeriod,
		ReadTimeout:             s.opts.ReadTimeout,
		DisableRetrySync:        true, // Run reconnects from the last delivered transaction
		EventCacheCount:         128,  // bounds the events read ahead of the handler
		Logger:                  slog.New(slog.DiscardHandler),
		Dialer: func(dctx context.Context, network, addr string) (net.Conn, error) {
			// Dial under ctx as well, so that cancelling Run ends a dial at once.
			dctx, cancel := context.WithTimeout(dctx, dialTimeout)
			defer cancel()
			if !closing.Load() {
				stop := context.AfterFunc(ctx, cancel)
				defer stop()
			}
			var d net.Dialer
			return d.DialContext(dctx, network, addr)
		},
	}
}

func (s *Stream) connector() driver.Connector {
	c := mysqldrv.NewConfig()
	c.Net, c.Addr, c.User, c.Passwd, c.TLS = "tcp", net.JoinHostPort(s.host, strconv.Itoa(int(s.port))), s.cfg.User, s.cfg.Password, s.cfg.TLS
	c.Timeout = max(s.opts.ReadTimeout, 3*time.Second)
	c.ReadTimeout, c.WriteTimeout = 30*time.Second, 30*time.Second
	c.Logger = &mysqldrv.NopLogger{}
	conn, _ := mysqldrv.NewConnector(c) // fails only for settings not used here
	return conn
}
