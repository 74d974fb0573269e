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
