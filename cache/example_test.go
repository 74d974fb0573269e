package cache_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/cacheaside/cacheaside/cache"
)

// User is a row of the users table.
type User struct {
	ID   int64
	Name string
}

// UserRepo reads users through the cache and writes them through it.
type UserRepo struct {
	db    *sql.DB
	cache *cache.Cache
}

func userKey(id int64) string { return "user:" + strconv.FormatInt(id, 10) }

// User returns user id, from Redis when cached.
func (r *UserRepo) User(ctx context.Context, id int64) (User, error) {
	return cache.Fetch(ctx, r.cache, userKey(id), func(ctx context.Context) (User, error) {
		var u User
		err := r.db.QueryRowContext(ctx, "SELECT id, name FROM users WHERE id = ?", id).Scan(&u.ID, &u.Name)
		if errors.Is(err, sql.ErrNoRows) {
			return u, cache.ErrNotFound
		}
		return u, err
	})
}

// Users returns the users that exist among ids, with one MGET when cached.
func (r *UserRepo) Users(ctx context.Context, ids ...int64) (map[string]User, error) {
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = userKey(id)
	}
	return cache.FetchMany(ctx, r.cache, keys, func(ctx context.Context, missing []string) (map[string]User, error) {
		args := make([]any, len(missing))
		for i, k := range missing {
			args[i] = strings.TrimPrefix(k, "user:")
		}
		q := "SELECT id, name FROM users WHERE id IN (?" + strings.Repeat(",?", len(args)-1) + ")"
		rows, err := r.db.QueryContext(ctx, q, args...)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		found := map[string]User{}
		for rows.Next() {
			var u User
			if err := rows.Scan(&u.ID, &u.Name); err != nil {
				return nil, err
			}
			found[userKey(u.ID)] = u
		}
		return found, rows.Err()
	})
}

// Rename changes a user's name; Write invalidates the cached row around it.
func (r *UserRepo) Rename(ctx context.Context, id int64, name string) error {
	return r.cache.Write(ctx, []string{userKey(id)}, func(ctx context.Context) error {
		_, err := r.db.ExecContext(ctx, "UPDATE users SET name = ? WHERE id = ?", name, id)
		return err
	})
}

func Example() {
	ctx := context.Background()
	db, rdb, done := exampleServers()
	defer done()

	c, err := cache.New(rdb, nil)
	if err != nil {
		fmt.Println(err) // a bad setting, named
		return
	}
	defer c.Close()
	repo := &UserRepo{db: db, cache: c}

	u, err := repo.User(ctx, 1) // a miss: loaded from MariaDB and cached
	fmt.Println(u.Name, err)
	u, err = repo.User(ctx, 1) // a hit: one GET
	fmt.Println(u.Name, err)

	if err := repo.Rename(ctx, 1, "Ann Lee"); err != nil {
		log.Fatal(err)
	}
	u, err = repo.User(ctx, 1)
	fmt.Println(u.Name, err)

	_, err = repo.User(ctx, 42) // cached as not found
	fmt.Println(errors.Is(err, cache.ErrNotFound))

	users, err := repo.Users(ctx, 1, 2, 42)
	fmt.Println(len(users), users["user:2"].Name, err)

	s := repo.cache.Stats()
	fmt.Println("loads:", s.Loads, "hits:", s.Hits)
	// Output:
	// Ann <nil>
	// Ann <nil>
	// Ann Lee <nil>
	// true
	// 2 Bob <nil>
	// loads: 4 hits: 2
}

// exampleServers gives an example its own database, with users 1 (Ann) and
// 2 (Bob), and a Redis client; done drops the database and the keys.
func exampleServers() (*sql.DB, *redis.Client, func()) {
	ctx := context.Background()
	name := "example_" + strings.ToLower(uniqueBaseNoCleanup())
	mustExec := func(db *sql.DB, q string) {
		if _, err := db.ExecContext(ctx, q); err != nil {
			log.Fatal(err)
		}
	}
	mustExec(env.Admin(), "CREATE DATABASE "+name)
	db, err := sql.Open("mysql", env.DSN(name))
	if err != nil {
		log.Fatal(err)
	}
	mustExec(db, "CREATE TABLE users (id BIGINT PRIMARY KEY, name VARCHAR(64) NOT NULL)")
	mustExec(db, "INSERT INTO users VALUES (1, 'Ann'), (2, 'Bob')")
	rdb := env.NewRedis(nil)
	return db, rdb, func() {
		rdb.Del(ctx, "user:1", "user:2", "user:42")
		rdb.Close()
		db.Close()
		mustExec(env.Admin(), "DROP DATABASE "+name)
	}
}

// Doc is a row of a table with a version column.
type Doc struct {
	ID      int64
	Body    string
	Version int64
}

// CacheVersion returns the row's version, so Docs may fill over versioned
// tombstones.
func (d Doc) CacheVersion() int64 { return d.Version }

func ExampleCache_InvalidateVersions() {
	ctx := context.Background()
	rdb := env.NewRedis(nil)
	defer rdb.Close()
	c, err := cache.New(rdb, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	key := "doc:" + uniqueBaseNoCleanup()
	defer rdb.Del(ctx, key)

	replica := Doc{ID: 7, Body: "draft", Version: 1} // has not applied version 2 yet
	fromReplica := func(context.Context) (Doc, error) { return replica, nil }

	// The row became version 2 on the primary (the binlog says so).
	if err := c.InvalidateVersions(ctx, cache.KeyVersion{Key: key, Version: 2}); err != nil {
		log.Fatal(err)
	}
	d, _ := cache.Fetch(ctx, c, key, fromReplica) // served, not cached
	fmt.Println(d.Body, "refused:", c.Stats().FillsRefused)

	replica = Doc{ID: 7, Body: "final", Version: 2} // the replica caught up
	_, _ = cache.Fetch(ctx, c, key, fromReplica)    // cached
	d, _ = cache.Fetch(ctx, c, key, fromReplica)    // a hit
	fmt.Println(d.Body, "hits:", c.Stats().Hits)
	// Output:
	// draft refused: 1
	// final hits: 1
}
