package binlog_test

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/binlog"
)

func TestRedisCheckpoints(t *testing.T) {
	ctx := context.Background()
	rdb := env.RedisClient(t)
	prefix := env.Prefix(t)
	cp := binlog.NewRedisCheckpoints(rdb, prefix+"checkpoint")

	p, err := cp.Load(ctx)
	require.NoError(t, err)
	assert.True(t, p.IsZero(), "nothing stored: the zero Position")

	p1 := binlog.Position{File: "mysql-bin.000001", Offset: 100, GTIDSet: "0-1-5"}
	p2 := binlog.Position{File: "mysql-bin.000002", Offset: 4, GTIDSet: "0-1-9,1-2-3"}
	p3 := binlog.Position{File: "mysql-bin.000002", Offset: 900}
	require.NoError(t, cp.Save(ctx, 1, p1))
	p, err = cp.Load(ctx)
	require.NoError(t, err)
	assert.Equal(t, p1, p)

	require.NoError(t, cp.Save(ctx, 2, p2))
	assert.ErrorIs(t, cp.Save(ctx, 1, p3), binlog.ErrStaleEpoch, "an older epoch cannot move the checkpoint")
	p, epoch, err := cp.LoadEpoch(ctx)
	require.NoError(t, err)
	assert.Equal(t, p2, p)
	assert.Equal(t, uint64(2), epoch)

	require.NoError(t, cp.Save(ctx, 2, p3), "the same epoch saves again")
	require.NoError(t, cp.Save(ctx, 10, p1), "10 > 2 although \"10\" < \"2\"")
	assert.ErrorIs(t, cp.Save(ctx, 9, p2), binlog.ErrStaleEpoch)

	// Epochs beyond 2^53 compare exactly (Lua numbers would round them).
	require.NoError(t, cp.Save(ctx, 1<<62+1, p2))
	assert.ErrorIs(t, cp.Save(ctx, 1<<62, p3), binlog.ErrStaleEpoch)
	require.NoError(t, cp.Save(ctx, math.MaxUint64, p3))
	p, epoch, err = cp.LoadEpoch(ctx)
	require.NoError(t, err)
	assert.Equal(t, p3, p)
	assert.Equal(t, uint64(math.MaxUint64), epoch)

	keys, err := rdb.Keys(ctx, prefix+"*").Result()
	require.NoError(t, err)
	assert.Equal(t, []string{prefix + "checkpoint"}, keys, "one key holds epoch and position")
}

// TestRestartFromCheckpoint stops a stream part-way, then starts another
// from the last saved checkpoint: the second continues exactly after it.
func TestRestartFromCheckpoint(t *testing.T) {
	for _, gtid := range []bool{true, false} {
		t.Run(fmt.Sprintf("gtid=%v", gtid), func(t *testing.T) {
			ctx := context.Background()
			db, schema := env.NewDatabase(t)
			exec(t, db, "CREATE TABLE t (id INT PRIMARY KEY)")
			cp := binlog.NewRedisCheckpoints(env.RedisClient(t), env.Prefix(t)+"checkpoint")
			from := masterPos(t, env.Admin())
			first := stream(t, rootConfig(t), nil, schema, from)
			for id := 1; id <= 10; id++ {
				exec(t, db, fmt.Sprintf("INSERT INTO t VALUES (%d)", id))
			}
			for id := 1; id <= 5; id++ {
				tx := first.next()
				require.Equal(t, int64(id), tx.Rows[0].After["id"])
				p := tx.Pos
				if !gtid {
					p.GTIDSet = "" // a file/offset checkpoint
				}
				require.NoError(t, cp.Save(ctx, 1, p))
			}
			require.NoError(t, first.wait())
			for id := 11; id <= 15; id++ {
				exec(t, db, fmt.Sprintf("INSERT INTO t VALUES (%d)", id))
			}

			p, err := cp.Load(ctx)
			require.NoError(t, err)
			second := stream(t, rootConfig(t), nil, schema, p)
			for id := 6; id <= 15; id++ {
				tx := second.next()
				require.Len(t, tx.Rows, 1)
				require.Equal(t, int64(id), tx.Rows[0].After["id"], "no gap, no duplicate")
				assert.NotEmpty(t, tx.Pos.GTIDSet, "a file/offset start learns the GTID position")
			}
			second.none(200 * time.Millisecond)
		})
	}
}

// A claim needs the leader lock; an advance is a compare-and-set against
// what the claim last wrote, and refuses every change made behind its back:
// a lost record, another claim, a rollback, a Redis restart.
func TestRedisCheckpointClaims(t *testing.T) {
	ctx := context.Background()
	rdb := env.RedisClient(t)
	prefix := env.Prefix(t)
	lockKey, cpKey := prefix+"leader", prefix+"checkpoint"
	cp := binlog.NewRedisCheckpoints(rdb, cpKey)
	p1 := binlog.Position{File: "mysql-bin.000001", Offset: 100, GTIDSet: "0-1-5"}
	p2 := binlog.Position{File: "mysql-bin.000001", Offset: 200, GTIDSet: "0-1-6"}

	_, err := cp.Claim(ctx, lockKey, "a")
	assert.ErrorIs(t, err, binlog.ErrNotLeader, "no lock, no claim")
	require.NoError(t, rdb.Set(ctx, lockKey, "a", time.Minute).Err())
	a, err := cp.Claim(ctx, lockKey, "a")
	require.NoError(t, err)
	assert.True(t, a.Pos.IsZero(), "a new record holds no position")
	assert.Equal(t, uint64(1), a.Epoch)
	require.NoError(t, cp.Advance(ctx, a, p1, "server-1"))
	require.NoError(t, cp.Advance(ctx, a, p2, "server-1"))
	assert.Equal(t, p2, a.Pos)

	// Another leadership claims: the first one's advance is refused.
	require.NoError(t, rdb.Set(ctx, lockKey, "b", time.Minute).Err())
	b, err := cp.Claim(ctx, lockKey, "b")
	require.NoError(t, err)
	assert.Equal(t, p2, b.Pos)
	assert.Equal(t, "server-1", b.Server)
	assert.Equal(t, uint64(2), b.Epoch)
	assert.ErrorIs(t, cp.Advance(ctx, a, p2, ""), binlog.ErrCheckpointMoved)
	assert.ErrorIs(t, cp.Advance(ctx, a, p2, ""), binlog.ErrCheckpointMoved, "a refused claim stays spent")

	// Redis goes back to an older state of the record.
	old, err := rdb.Dump(ctx, cpKey).Result()
	require.NoError(t, err)
	require.NoError(t, cp.Advance(ctx, b, p1, ""))
	require.NoError(t, rdb.RestoreReplace(ctx, cpKey, 0, old).Err())
	assert.ErrorIs(t, cp.Advance(ctx, b, p2, ""), binlog.ErrCheckpointMoved)

	// Redis loses the record.
	b, err = cp.Claim(ctx, lockKey, "b")
	require.NoError(t, err)
	require.NoError(t, rdb.Del(ctx, cpKey).Err())
	assert.ErrorIs(t, cp.Advance(ctx, b, p2, ""), binlog.ErrCheckpointMoved)
	b, err = cp.Claim(ctx, lockKey, "b")
	require.NoError(t, err)
	assert.True(t, b.Pos.IsZero(), "a lost record holds no position")
	assert.Equal(t, uint64(1), b.Epoch, "the epoch went with the record")

	// A plain Save ends the claim.
	require.NoError(t, cp.Save(ctx, 9, p1))
	assert.ErrorIs(t, cp.Advance(ctx, b, p2, ""), binlog.ErrCheckpointMoved)

	// Redis restarts with its data: writes after the last save may be lost.
	_, r := env.Faults(t)
	b, err = cp.Claim(ctx, lockKey, "b")
	require.NoError(t, err)
	require.NoError(t, cp.Advance(ctx, b, p1, ""))
	require.NoError(t, r.Restart())
	err = cp.Advance(ctx, b, p2, "")
	assert.ErrorIs(t, err, binlog.ErrCheckpointMoved)
	assert.ErrorContains(t, err, "restarted")
	b, err = cp.Claim(ctx, lockKey, "b")
	require.NoError(t, err)
	assert.Equal(t, p1, b.Pos, "the record survived the restart")
	require.NoError(t, cp.Advance(ctx, b, p2, ""))
}
