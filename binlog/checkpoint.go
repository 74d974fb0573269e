package binlog

import (
	"context"
	_ "embed"
	"fmt"
	"strconv"

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

//go:embed checkpoint_save.lua
var saveLua string

var saveScript = redis.NewScript(saveLua)

// RedisCheckpoints is a CheckpointStore in one Redis hash (fields epoch and
// pos). Keeping it in the Redis that holds the cache means a Redis that
// loses writes loses the checkpoint with them, and the stream replays the
// lost invalidations. It works with a single Redis, Sentinel and Cluster.
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
// An equal epoch may save again.
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
