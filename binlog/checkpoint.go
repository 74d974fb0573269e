package binlog

import (
	"context"
	"database/sql"
	_ "embed"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// CheckpointStore keeps the position a stream has processed up to, so that
// a restarted stream (in this process or another) continues from it.
// Save only positions at transaction boundaries (Tx.Pos of a Tx with More
// false) and only after every earlier transaction's effects are durable.
type CheckpointStore interface {
	// Load returns the stored position; the zero Position and a nil error
	// when none is stored.
	Load(ctx context.Context) (Position, error)
	// Save stores p for epoch. It returns ErrStaleEpoch when a greater
	// epoch has saved, so that a deposed leader cannot move the checkpoint.
	Save(ctx context.Context, epoch uint64, p Position) error
}

// ClaimStore keeps the checkpoint of a stream consumed by one leader at a
// time (package invalidate). A leadership first claims the record, which
// counts the leadership in the record's own epoch and makes it the
// record's owner; then it advances the position, each time only if the
// record is exactly as this leadership last left it.
//
// Why one record: an epoch counter kept apart from the checkpoint can be
// lost or reset on its own (a Redis that lost data, another shard, another
// store), and then a new leadership holds an epoch that the checkpoint
// refuses, or an old one holds the same epoch as a new one. Inside the
// record, a record that is lost takes its epoch and owner with it, and the
// compare-and-set catches every other change: another leadership's claim,
// a rollback to an older state, a Redis restart.
type ClaimStore interface {
	// Claim starts a leadership on the checkpoint for the holder of the
	// lock lockKey with token, and returns the stored position (zero when
	// there is none: a first start or a lost record). It returns
	// ErrNotLeader when the lock does not hold token.
	Claim(ctx context.Context, lockKey, token string) (*Claim, error)
	// Advance stores pos (with server, the identity of the server it
	// belongs to) if the record is exactly as c left it, and updates c. It
	// returns an error matching ErrCheckpointMoved otherwise; c is then
	// spent: claim again.
	Advance(ctx context.Context, c *Claim, pos Position, server string) error
}

var (
	// ErrNotLeader is returned by ClaimStore.Claim when the leader lock is
	// not held by the claimant's token.
	ErrNotLeader = errors.New("binlog: checkpoint claim refused: the leader lock is not held")
	// ErrCheckpointMoved is returned by ClaimStore.Advance when the record
	// is no longer as the claim last left it: Redis lost it or went back in
	// time, or another leadership claimed it. Whatever was invalidated
	// since the stored position may be lost: claim again and replay.
	ErrCheckpointMoved = errors.New("binlog: checkpoint moved since it was claimed")
)

// Claim is one leadership's hold on a checkpoint record.
type Claim struct {
	// Pos is the position stored when the claim was made, or last advanced
	// to; zero when the record had none.
	Pos Position
	// Server is the identity of the server Pos belongs to, "" when unknown.
	Server string
	// Epoch counts the leaderships of the record. It restarts at 1 when
	// the record is lost; fencing rests on the owner token, not on it.
	Epoch uint64

	owner string
	seq   string
	run   string // Redis run_id at the claim
}

var (
	//go:embed checkpoint_save.lua
	saveLua string
	//go:embed checkpoint_claim.lua
	claimLua string
	//go:embed checkpoint_advance.lua
	advanceLua string

	saveScript    = redis.NewScript(saveLua)
	claimScript   = redis.NewScript(claimLua)
	advanceScript = redis.NewScript(advanceLua)
)

// RedisCheckpoints is a CheckpointStore and a ClaimStore in one Redis hash.
// Keeping it in the Redis that holds the cache means a Redis that loses
// writes loses the checkpoint with them, and the stream replays the lost
// invalidations. It works with a single Redis, Sentinel and Cluster; on a
// Cluster, Claim needs the lock key in the checkpoint's slot (a shared hash
// tag, as package invalidate's default key names have).
//
// Advance also refuses when Redis's run_id differs from the one seen at the
// claim: a Redis that restarted (an append-only file loses up to its last
// second) or failed over to a replica may have lost invalidations sent
// after the last save while keeping the record as it was, which no
// compare-and-set on the record alone can see.
type RedisCheckpoints struct {
	rdb redis.UniversalClient
	key string
}

// NewRedisCheckpoints returns a store under key. It does no I/O.
func NewRedisCheckpoints(rdb redis.UniversalClient, key string) *RedisCheckpoints {
	return &RedisCheckpoints{rdb: rdb, key: key}
}

// Load returns the stored position, or the zero Position when there is none.
func (c *RedisCheckpoints) Load(ctx context.Context) (Position, error) {
	p, _, err := c.LoadEpoch(ctx)
	return p, err
}

// LoadEpoch returns the stored position and the epoch that saved it; zero
// values when there is none.
func (c *RedisCheckpoints) LoadEpoch(ctx context.Context) (Position, uint64, error) {
	vals, err := c.rdb.HMGet(ctx, c.key, "epoch", "pos").Result()
	if err != nil {
		return Position{}, 0, fmt.Errorf("binlog: load checkpoint %s: %w", c.key, err)
	}
	if vals[0] == nil || vals[1] == nil {
		return Position{}, 0, nil
	}
	es, _ := vals[0].(string)
	ps, _ := vals[1].(string)
	epoch, err := strconv.ParseUint(es, 10, 64)
	if err != nil {
		return Position{}, 0, fmt.Errorf("binlog: load checkpoint %s: bad epoch %q", c.key, es)
	}
	p, err := ParsePosition(ps)
	if err != nil {
		return Position{}, 0, fmt.Errorf("binlog: load checkpoint %s: %w", c.key, err)
	}
	return p, epoch, nil
}

// Save stores p for epoch unless a greater epoch has saved (ErrStaleEpoch).
// An equal epoch may save again, so Save fences only writers whose epochs
// differ; leaders that take turns use Claim and Advance instead. Save ends
// any claim on the record: the owner's next Advance is refused.
func (c *RedisCheckpoints) Save(ctx context.Context, epoch uint64, p Position) error {
	n, err := saveScript.Run(ctx, c.rdb, []string{c.key}, strconv.FormatUint(epoch, 10), p.String()).Int()
	if err != nil {
		return fmt.Errorf("binlog: save checkpoint %s: %w", c.key, err)
	}
	if n == 0 {
		return ErrStaleEpoch
	}
	return nil
}

// Claim implements ClaimStore.
func (c *RedisCheckpoints) Claim(ctx context.Context, lockKey, token string) (*Claim, error) {
	vals, err := claimScript.Run(ctx, c.rdb, []string{c.key, lockKey}, token).StringSlice()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotLeader
	}
	if err != nil {
		return nil, fmt.Errorf("binlog: claim checkpoint %s: %w", c.key, err)
	}
	if len(vals) != 4 || vals[3] == "" {
		return nil, fmt.Errorf("binlog: claim checkpoint %s: unexpected reply %q", c.key, vals)
	}
	epoch, err := strconv.ParseUint(vals[0], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("binlog: claim checkpoint %s: bad epoch %q", c.key, vals[0])
	}
	p, err := ParsePosition(vals[1])
	if err != nil {
		return nil, fmt.Errorf("binlog: claim checkpoint %s: %w", c.key, err)
	}
	return &Claim{Pos: p, Server: vals[2], Epoch: epoch, owner: token, seq: "0", run: vals[3]}, nil
}

// Advance implements ClaimStore.
func (c *RedisCheckpoints) Advance(ctx context.Context, cl *Claim, pos Position, server string) error {
	if cl.owner == "" {
		return fmt.Errorf("binlog: advance checkpoint %s: %w: the claim is spent", c.key, ErrCheckpointMoved)
	}
	n, err := advanceScript.Run(ctx, c.rdb, []string{c.key}, cl.owner, cl.seq, cl.run, pos.String(), server).Int64()
	if err != nil {
		return fmt.Errorf("binlog: advance checkpoint %s: %w", c.key, err)
	}
	if n <= 0 {
		cl.owner = ""
		return fmt.Errorf("binlog: advance checkpoint %s: %w: %s", c.key, ErrCheckpointMoved, advanceRefusals[-n])
	}
	cl.Pos, cl.Server, cl.seq = pos, server, strconv.FormatInt(n, 10)
	return nil
}

var advanceRefusals = map[int64]string{
	1: "the record is gone (Redis lost its data)",
	2: "another leadership claimed it",
	3: "it went back to an older state (Redis lost writes)",
	4: "Redis restarted or failed over since the claim (writes may be lost)",
}

// Check makes the checks Run makes before it streams (server settings and
// privileges), so that a caller that reads positions first (a checkpoint
// store, Stream.CurrentPosition) fails at start with the same clear error
// instead of retrying: joined *PreflightError values (errors.Is(err,
// ErrPreflight)). Connection errors are retried until ctx ends, as Run
// retries them.
func (s *Stream) Check(ctx context.Context) error {
	db := sql.OpenDB(s.connector())
	defer db.Close()
	err := s.retry(ctx, "preflight", func() error {
		_, err := preflight(ctx, db, &s.cfg, s.opts.Logger)
		return err
	})
	return s.redact(err)
}

// Transient reports whether err, from a Stream method, may go away on a
// new connection (a network error, a server restarting). Everything else
// (access denied, a wrong setting, a lost position) will not.
func Transient(err error) bool { return transient(err) }

// ServerIdentity names the server the stream reads, for a checkpoint to
// record beside its position: "uuid=<server_uuid>" on MySQL,
// "server_id=<id>" on MariaDB, which has no server_uuid, each followed by
// " domains=<GTID domain ids>" when the server has GTIDs. A file/offset
// position means nothing on another server; a GTID position may resume on
// any server whose GTID history holds it (a promoted replica).
func (s *Stream) ServerIdentity(ctx context.Context) (string, error) {
	db := sql.OpenDB(s.connector())
	defer db.Close()
	var uuid, id, gtid sql.NullString
	err := db.QueryRowContext(ctx, "SELECT @@server_id").Scan(&id)
	if err == nil {
		// MariaDB has no server_uuid and MySQL no gtid_binlog_pos: ask for each alone.
		if db.QueryRowContext(ctx, "SELECT @@server_uuid").Scan(&uuid) != nil {
			uuid = sql.NullString{}
		}
		if db.QueryRowContext(ctx, "SELECT @@gtid_binlog_pos").Scan(&gtid) != nil {
			err = db.QueryRowContext(ctx, "SELECT @@gtid_executed").Scan(&gtid)
		}
	}
	if err != nil {
		return "", s.redact(fmt.Errorf("binlog: server identity: %w", err))
	}
	ident := "server_id=" + id.String
	if uuid.Valid && uuid.String != "" {
		ident = "uuid=" + uuid.String
	}
	if d := gtidDomains(gtid.String); d != "" {
		ident += " domains=" + d
	}
	return ident, nil
}

// gtidDomains returns the sorted, comma-separated domains of a MariaDB GTID
// position ("0-1-5,2-1-9" -> "0,2"), or the source UUIDs of a MySQL GTID set.
func gtidDomains(set string) string {
	var ds []string
	for _, part := range strings.Split(strings.Join(strings.Fields(set), ""), ",") {
		if part == "" {
			continue
		}
		if i := strings.IndexAny(part, "-:"); i > 0 && part[i] == '-' && !strings.Contains(part, ":") {
			ds = append(ds, part[:i])
		} else if i := strings.IndexByte(part, ':'); i > 0 {
			ds = append(ds, part[:i])
		}
	}
	slices.Sort(ds)
	return strings.Join(slices.Compact(ds), ",")
}
