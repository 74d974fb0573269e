package invalidate_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/bloom"
	"github.com/cacheaside/cacheaside/invalidate"
)

// TestBloomChaos: rows are inserted through cache.Write (the writer adds
// the key before its commit) and through plain SQL (the invalidator adds
// it after the commit), while filters with and without local copies look
// up every key that is committed and added; meanwhile subscriptions are
// killed, the filter's keys deleted, the filter rebuilt, and Redis
// restarted. No lookup of a committed, added row may answer "cannot
// contain"; a local copy may see another process's add late (its message
// in flight), but not for longer than its checks take to notice a gap.
func TestBloomChaos(t *testing.T) {
	const duration = 60 * time.Second
	rdb := env.RedisClient(t)
	key := env.Prefix(t) + "{bloom}"
	var s *stack
	opts := func(local bool) *bloom.Options {
		return &bloom.Options{
			ExpectedItems: 50_000, Local: local,
			ParamsRefresh: 100 * time.Millisecond, DropDelay: 200 * time.Millisecond,
			BeforeSwap: func(ctx context.Context) error {
				ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				defer cancel()
				return s.inv.WaitApplied(ctx)
			},
		}
	}
	invFilter := bloom.New(rdb, key, opts(false))
	t.Cleanup(func() { _ = invFilter.Delete(context.Background()) })
	s = newStack(t, stackOptions{inv: &invalidate.Options{Filter: invFilter}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var readers []*bloom.Filter
	var runs sync.WaitGroup
	for i := range 3 {
		f := bloom.New(env.NewRedis(nil), key, opts(i < 2)) // two with local copies, one without
		readers = append(readers, f)
		if i < 2 {
			runs.Go(func() { assert.NoError(t, f.Run(ctx)) })
		}
	}
	defer runs.Wait()
	defer cancel()
	writer := bloom.New(rdb, key, opts(false))
	scan := func(ctx context.Context) bloom.Keys {
		return bloom.Scan(ctx, s.db, s.prefix+"user:", "SELECT id FROM users")
	}
	require.NoError(t, writer.Warm(ctx, scan(ctx)))

	// checkable holds the keys of committed rows whose Add has returned.
	var mu sync.Mutex
	var checkable []string
	var pendingSQL []string
	addCheckable := func(k string) { mu.Lock(); checkable = append(checkable, k); mu.Unlock() }
	var workers sync.WaitGroup
	stop := make(chan struct{})
	var nextID atomic.Int64
	var viaWrite, viaSQL atomic.Int64
	insert := func(id int64) error {
		_, err := s.db.ExecContext(ctx, "INSERT INTO users (id, email, name) VALUES (?, ?, 'U')", id, fmt.Sprintf("u%d@example.com", id))
		return err
	}
	workers.Go(func() { // through cache.Write: Add before the commit
		for {
			select {
			case <-stop:
				return
			default:
			}
			id := nextID.Add(1)
			k := userKey(s.prefix, uint64(id))
			committed := false
			_ = s.cache.Write(ctx, []string{k}, func(ctx context.Context) error {
				if err := writer.Add(ctx, k); err != nil {
					return err
				}
				if err := insert(id); err != nil {
					return err
				}
				committed = true
				return nil
			})
			if committed {
				viaWrite.Add(1)
				addCheckable(k)
			}
		}
	})
	workers.Go(func() { // plain SQL: the invalidator adds after the commit
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			id := nextID.Add(1)
			if insert(id) == nil {
				viaSQL.Add(1)
				mu.Lock()
				pendingSQL = append(pendingSQL, userKey(s.prefix, uint64(id)))
				mu.Unlock()
			}
			mu.Lock()
			rest := pendingSQL[:0]
			for _, k := range pendingSQL {
				if s.applied.count(k) > 0 {
					checkable = append(checkable, k)
				} else {
					rest = append(rest, k)
				}
			}
			pendingSQL = rest
			mu.Unlock()
		}
	})
	workers.Go(func() { // warm again whenever the filter is gone
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			_ = writer.Warm(ctx, scan(ctx))
		}
	})
	var lookups, falseNeg, late atomic.Int64
	for r, f := range readers {
		workers.Go(func() {
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				keys := checkable[:len(checkable):len(checkable)]
				mu.Unlock()
				for _, k := range keys {
					lookups.Add(1)
					if f.MayContain(ctx, k) {
						continue
					}
					if r == 2 {
						falseNeg.Add(1)
						t.Errorf("remote filter: %s reported absent", k)
						continue
					}
					// A local copy may not have the add's message yet; it must
					// have it, or be out of service, once its checks ran.
					late.Add(1)
					deadline := time.Now().Add(2 * time.Second)
					for !f.MayContain(ctx, k) {
						if time.Now().After(deadline) {
							falseNeg.Add(1)
							t.Errorf("local copy %d: %s reported absent for 2s (stats %+v)", r, k, f.Stats())
							break
						}
						time.Sleep(time.Millisecond)
					}
				}
			}
		})
	}

	_, srv := env.Faults(t)
	faults := map[string]int{}
	end := time.Now().Add(duration)
	for i := 0; time.Now().Before(end); i++ {
		time.Sleep(2 * time.Second)
		switch i % 5 {
		case 0, 2:
			faults["pubsub killed"]++
			require.NoError(t, rdb.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err())
		case 1:
			faults["filter keys deleted"]++
			for _, k := range rdb.Keys(ctx, key+"*").Val() {
				rdb.Del(ctx, k)
			}
		case 3:
			faults["rebuilds"]++
			if err := bloom.New(rdb, key, opts(false)).Rebuild(ctx, scan(ctx)); err != nil {
				t.Logf("rebuild: %v", err)
			}
		case 4:
			if faults["redis restarted"] < 2 {
				faults["redis restarted"]++
				require.NoError(t, srv.Kill())
				require.NoError(t, srv.Start())
			}
		}
	}
	close(stop)
	workers.Wait()

	// Quiescence: every row in MariaDB, looked up in every filter.
	s.fence(t)
	rows, err := s.db.Query("SELECT id FROM users")
	require.NoError(t, err)
	var ids []uint64
	for rows.Next() {
		var id uint64
		require.NoError(t, rows.Scan(&id))
		ids = append(ids, id)
	}
	require.NoError(t, rows.Err())
	for _, f := range readers {
		require.Eventually(t, func() bool {
			for _, id := range ids {
				if !f.MayContain(ctx, userKey(s.prefix, id)) {
					return false
				}
			}
			return true
		}, 10*time.Second, 10*time.Millisecond, "a row in MariaDB reads \"cannot contain\" after quiescence")
	}
	var local, resyncs uint64
	for _, f := range readers {
		local += f.Stats().Local
		resyncs += f.Stats().Resyncs
	}
	t.Logf("%d lookups (%d by local copies), %d false negatives, %d late local answers, %d resyncs; rows: %d through Write, %d through SQL, %d in MariaDB; faults %v",
		lookups.Load(), local, falseNeg.Load(), late.Load(), resyncs, viaWrite.Load(), viaSQL.Load(), len(ids), faults)
	assert.Zero(t, falseNeg.Load())
	assert.Greater(t, lookups.Load(), int64(10_000))
	assert.Positive(t, local, "the local copies never answered")
}
