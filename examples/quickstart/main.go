// Command quickstart starts a throwaway MariaDB (binlog on) and Redis, wraps
// a repository method with a read-through cache, runs the binlog
// invalidator in the background, and shows an UPDATE that bypasses the
// library reach the cache through the binlog.
package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheaside/cacheaside/binlog"
	"github.com/cacheaside/cacheaside/cache"
	"github.com/cacheaside/cacheaside/internal/testenv"
	"github.com/cacheaside/cacheaside/invalidate"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

// User is a row of shop.users.
type User struct {
	ID    int64
	Email string
	Name  string
}

// Users is a repository whose reads go through the cache.
type Users struct {
	db    *sql.DB
	cache *cache.Cache
}

// Get reads a user through the cache; on a miss it loads from MariaDB.
func (r *Users) Get(ctx context.Context, id int64) (User, error) {
	return cache.Fetch(ctx, r.cache, fmt.Sprintf("user:%d", id), func(ctx context.Context) (User, error) {
		fmt.Printf("  (loading user %d from MariaDB)\n", id)
		u := User{ID: id}
		err := r.db.QueryRowContext(ctx, "SELECT email, name FROM shop.users WHERE id = ?", id).Scan(&u.Email, &u.Name)
		if errors.Is(err, sql.ErrNoRows) {
			return User{}, cache.ErrNotFound
		}
		return u, err
	})
}

// Rename updates a user through the cache: delete, write, delete again.
func (r *Users) Rename(ctx context.Context, id int64, name string) error {
	return r.cache.Write(ctx, []string{fmt.Sprintf("user:%d", id)}, func(ctx context.Context) error {
		_, err := r.db.ExecContext(ctx, "UPDATE shop.users SET name = ? WHERE id = ?", name, id)
		return err
	})
}

func run(ctx context.Context) error {
	fmt.Println("starting MariaDB (binlog on) and Redis on loopback ports ...")
	env, err := testenv.Start(nil)
	if err != nil {
		return err
	}
	defer env.Close()
	cfg := env.MySQLConfig("")
	fmt.Printf("MariaDB at %s, Redis at %s\n", cfg.Addr, env.RedisAddr())

	db := env.Admin()
	for _, q := range []string{
		"CREATE DATABASE IF NOT EXISTS shop",
		"CREATE TABLE IF NOT EXISTS shop.users (id BIGINT PRIMARY KEY, email VARCHAR(100), name VARCHAR(100))",
		"REPLACE INTO shop.users VALUES (1, 'ada@example.com', 'Ada')",
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return err
		}
	}

	// ContextTimeoutEnabled lets the cache give up on a hung Redis in time
	// to answer from MySQL; the timeouts bound the calls that carry none.
	rdb := redis.NewClient(&redis.Options{
		Addr:                  env.RedisAddr(),
		ContextTimeoutEnabled: true,
		DialTimeout:           100 * time.Millisecond,
		ReadTimeout:           100 * time.Millisecond,
		WriteTimeout:          100 * time.Millisecond,
		PoolTimeout:           100 * time.Millisecond,
	})
	defer rdb.Close()
	c, err := cache.New(rdb, &cache.Options{TTL: 10 * time.Minute, TombstoneTTL: 100 * time.Millisecond})
	if err != nil {
		return err
	}
	defer c.Close()
	users := &Users{db: db, cache: c}

	// The invalidator: binlog row changes of shop.users -> cache keys.
	rules, err := invalidate.NewRules(invalidate.Rule{Schema: "shop", Table: "users", Keys: []string{"user:{id}"}})
	if err != nil {
		return err
	}
	stream, err := binlog.New(binlog.Config{Addr: cfg.Addr, User: cfg.User, Password: cfg.Passwd, ServerID: 100 + rand.Uint32N(1<<20)}, nil)
	if err != nil {
		return err
	}
	applied := make(chan invalidate.Applied, 64)
	inv := invalidate.New(stream, c, rdb, rules, &invalidate.Options{
		LeaderTTL: time.Second,
		OnApplied: func(a invalidate.Applied) {
			select {
			case applied <- a:
			default:
			}
		},
	})
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	invDone := make(chan error, 1)
	go func() { invDone <- inv.Run(ctx) }()
	for !inv.Stats().Leader {
		time.Sleep(10 * time.Millisecond)
	}

	fmt.Println("\n1. first read: a miss, loaded from MariaDB and cached")
	u, err := users.Get(ctx, 1)
	if err != nil {
		return err
	}
	fmt.Printf("  -> %+v\n", u)
	fmt.Println("2. second read: a hit, no MariaDB")
	if u, err = users.Get(ctx, 1); err != nil {
		return err
	}
	fmt.Printf("  -> %+v\n", u)

	fmt.Println("3. an UPDATE by plain SQL that bypasses the library")
	if _, err := db.ExecContext(ctx, "UPDATE shop.users SET name = 'Ada Lovelace' WHERE id = 1"); err != nil {
		return err
	}
	if err := waitFor(ctx, applied, "user:1"); err != nil {
		return err
	}
	fmt.Println("4. read again: the stale copy is gone")
	if u, err = users.Get(ctx, 1); err != nil {
		return err
	}
	fmt.Printf("  -> %+v\n", u)

	fmt.Println("5. an update through the repository (delete, write, delete)")
	if err := users.Rename(ctx, 1, "Countess of Lovelace"); err != nil {
		return err
	}
	if u, err = users.Get(ctx, 1); err != nil {
		return err
	}
	fmt.Printf("  -> %+v\n", u)

	fmt.Println("6. a user that does not exist: the not-found answer is cached too")
	for range 2 {
		_, err := users.Get(ctx, 404)
		fmt.Printf("  -> %v\n", err)
	}
	st := inv.Stats()
	fmt.Printf("\ninvalidator: %d transactions, %d keys, apply p50 %v; cache: %+v\n",
		st.Transactions, st.Keys, st.ApplyP50, c.Stats())
	cancel()
	return <-invDone
}

// waitFor prints binlog transactions as the invalidator applies them until
// one invalidated key.
func waitFor(ctx context.Context, applied <-chan invalidate.Applied, key string) error {
	timeout := time.After(10 * time.Second)
	for {
		select {
		case a := <-applied:
			for _, r := range a.Tx.Rows {
				fmt.Printf("  binlog: %s %s.%s before=%v after=%v\n", r.Op, r.Schema, r.Table, r.Before, r.After)
			}
			for _, k := range a.Keys {
				fmt.Printf("  invalidated %s, %v after the transaction arrived\n", k, a.AckedAt.Sub(a.ReceivedAt))
				if k == key {
					return nil
				}
			}
		case <-timeout:
			return fmt.Errorf("no invalidation of %s within 10s", key)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
