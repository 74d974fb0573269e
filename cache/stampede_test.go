package cache_test

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cacheaside/cacheaside/cache"
	"github.com/cacheaside/cacheaside/internal/testenv"
)

// slowQuery reads user id with a server-side pause, so that every caller of
// a cold key arrives while the load is still under way.
const slowQuery = "SELECT id, name FROM users WHERE id = ? AND SLEEP(0.05) = 0"

func TestStampedeGoroutines(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	c := f.cache(nil)
	key := f.key("user", 1)
	load := func(ctx context.Context) (user, error) {
		f.loads.Add(1)
		var u user
		err := f.db.QueryRowContext(ctx, slowQuery, 1).Scan(&u.ID, &u.Name)
		return u, err
	}
	const n = 1000
	var wg sync.WaitGroup
	start := make(chan struct{})
	var good atomic.Int64
	for range n {
		wg.Go(func() {
			<-start
			u, err := cache.Fetch(ctx, c, key, load)
			if assert.NoError(t, err) && u.Name == "ann" {
				good.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	assert.Equal(t, int64(n), good.Load())
	assert.Equal(t, int64(1), f.loads.Load(), "1,000 goroutines on a cold key: one load")
}

func TestStampedeProcesses(t *testing.T) {
	f := newFixture(t)
	_, dbName := env.NewDatabase(t)
	db, err := sql.Open("mysql", env.DSN(dbName))
	require.NoError(t, err)
	defer db.Close()
	_, err = db.Exec("CREATE TABLE users (id BIGINT PRIMARY KEY, name VARCHAR(64) NOT NULL)")
	require.NoError(t, err)
	_, err = db.Exec("INSERT INTO users VALUES (1, 'ann')")
	require.NoError(t, err)

	const procs, goroutines = 4, 250
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	vars := []string{
		"STAMPEDE_DB=" + dbName,
		"STAMPEDE_KEY=" + f.key("user", 1),
		"STAMPEDE_LOADS=" + f.base + "loads",
		"STAMPEDE_BARRIER=" + f.base + "barrier",
		"STAMPEDE_PREFIX=" + f.base + "-gen:",
		"STAMPEDE_GOROUTINES=" + strconv.Itoa(goroutines),
	}
	type child struct {
		lines chan string
		wait  func() error
	}
	children := make([]child, procs)
	for i := range children {
		cmd := env.Child(ctx, "stampede", vars...)
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		lines := make(chan string, 4)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		children[i] = child{lines, cmd.Wait}
	}
	for i, c := range children {
		require.Equal(t, "ready", <-c.lines, "child %d", i)
	}
	// Barrier: every child blocks on the list until all are ready.
	for range procs {
		require.NoError(t, f.rdb.RPush(ctx, f.base+"barrier", "go").Err())
	}
	for i, c := range children {
		assert.Equal(t, fmt.Sprintf("ok %d", goroutines), <-c.lines, "child %d", i)
		for range c.lines {
		}
		require.NoError(t, c.wait(), "child %d", i)
	}
	loads, err := f.rdb.Get(ctx, f.base+"loads").Int()
	require.NoError(t, err)
	assert.Equal(t, 1, loads, "%d processes x %d goroutines on a cold key: one load in total", procs, goroutines)
}

// stampedeChild fetches one cold key from many goroutines once the parent
// opens the barrier, counts its loads in Redis and prints "ok <n>" with the
// number of goroutines that got the right value.
func stampedeChild(ctx context.Context, env *testenv.Env) error {
	db, err := sql.Open("mysql", env.DSN(os.Getenv("STAMPEDE_DB")))
	if err != nil {
		return err
	}
	defer db.Close()
	rdb := env.NewRedis(nil)
	defer rdb.Close()
	c, err := cache.New(rdb, &cache.Options{Prefix: os.Getenv("STAMPEDE_PREFIX")})
	if err != nil {
		return err
	}
	defer c.Close()
	key, loadsKey := os.Getenv("STAMPEDE_KEY"), os.Getenv("STAMPEDE_LOADS")
	n, err := strconv.Atoi(os.Getenv("STAMPEDE_GOROUTINES"))
	if err != nil {
		return err
	}
	load := func(ctx context.Context) (user, error) {
		if err := rdb.Incr(ctx, loadsKey).Err(); err != nil {
			return user{}, err
		}
		var u user
		err := db.QueryRowContext(ctx, slowQuery, 1).Scan(&u.ID, &u.Name)
		return u, err
	}
	if err := db.PingContext(ctx); err != nil {
		return err
	}
	fmt.Println("ready")
	if err := rdb.BLPop(ctx, time.Minute, os.Getenv("STAMPEDE_BARRIER")).Err(); err != nil {
		return fmt.Errorf("barrier: %w", err)
	}
	var wg sync.WaitGroup
	var good atomic.Int64
	errs := make(chan error, n)
	start := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-start
			u, err := cache.Fetch(ctx, c, key, load)
			switch {
			case err != nil:
				errs <- err
			case u.Name == "ann":
				good.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	var msgs []string
	for err := range errs {
		msgs = append(msgs, err.Error())
	}
	if len(msgs) > 0 {
		fmt.Fprintln(os.Stderr, strings.Join(msgs, "\n"))
	}
	fmt.Printf("ok %d\n", good.Load())
	return nil
}
