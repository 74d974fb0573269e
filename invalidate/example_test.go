package invalidate_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheaside/cacheaside/binlog"
	"github.com/cacheaside/cacheaside/bloom"
	"github.com/cacheaside/cacheaside/cache"
	"github.com/cacheaside/cacheaside/invalidate"
)

// Example runs the three parts together: a read-through cache gated by a
// shared Bloom filter of existing keys, and the binlog invalidator that
// invalidates the cache and feeds the filter on every insert.
func Example() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db, schema, rdb, prefix, done := exampleSetup(ctx)
	defer done()

	// The filter knows every user that exists, warmed by a table scan once
	// the invalidator runs (below).
	filter := bloom.New(rdb, prefix+"bloom:users", &bloom.Options{ExpectedItems: 100_000})
	c := cache.New(rdb, &cache.Options{Prefix: prefix, Filter: filter, TombstoneTTL: 50 * time.Millisecond})
	defer c.Close()

	rules, err := invalidate.NewRules(invalidate.Rule{Schema: schema, Table: "users", Keys: []string{prefix + "user:{id}"}})
	if err != nil {
		log.Fatal(err)
	}
	if err := rules.Check(ctx, db); err != nil {
		log.Fatal(err)
	}
	cfg := env.MySQLConfig("")
	stream, err := binlog.New(binlog.Config{Addr: cfg.Addr, User: cfg.User, Password: cfg.Passwd, ServerID: 1000 + rand.Uint32N(1<<30)}, nil)
	if err != nil {
		log.Fatal(err)
	}
	applied := make(chan invalidate.Applied, 16)
	inv := invalidate.New(stream, c, rdb, rules, &invalidate.Options{
		Filter:      filter, // inserted rows' keys are added to the filter
		LeaderKey:   prefix + "leader",
		Checkpoints: binlog.NewRedisCheckpoints(rdb, prefix+"checkpoint"),
		OnApplied:   func(a invalidate.Applied) { applied <- a },
	})
	go func() {
		if err := inv.Run(ctx); err != nil {
			log.Print(err)
		}
	}()
	for !inv.Stats().Leader {
		time.Sleep(5 * time.Millisecond)
	}
	// Warm after the invalidator has started: the scan then sees every row
	// the stream does not, whereas a filter warmed before a first start
	// would miss the rows committed in between (the first start deletes it).
	if err := filter.Warm(ctx, bloom.Scan(ctx, db, prefix+"user:", "SELECT id FROM users")); err != nil {
		log.Fatal(err)
	}

	get := func(id int) (string, error) {
		return cache.Fetch(ctx, c, prefix+"user:"+strconv.Itoa(id), func(ctx context.Context) (string, error) {
			fmt.Println("  load", id, "from MariaDB")
			var name string
			err := db.QueryRowContext(ctx, "SELECT name FROM users WHERE id = ?", id).Scan(&name)
			if errors.Is(err, sql.ErrNoRows) {
				return "", cache.ErrNotFound
			}
			return name, err
		})
	}

	fmt.Println(get(1))
	fmt.Println(get(1))
	fmt.Println(get(2)) // never existed: the filter answers, no Redis, no MariaDB

	// A plain INSERT, and then an UPDATE, that bypass the library.
	for _, q := range []string{"INSERT INTO users VALUES (2, 'Bob')", "UPDATE users SET name = 'Ann Lee' WHERE id = 1"} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			log.Fatal(err)
		}
		a := <-applied
		fmt.Println("invalidated", len(a.Keys), "key(s)")
	}
	fmt.Println(get(2))
	fmt.Println(get(1))
	// Output:
	//   load 1 from MariaDB
	// Ann <nil>
	// Ann <nil>
	//  cache: not found
	// invalidated 1 key(s)
	// invalidated 1 key(s)
	//   load 2 from MariaDB
	// Bob <nil>
	//   load 1 from MariaDB
	// Ann Lee <nil>
}

// exampleSetup gives the example a database with user 1 (Ann), a Redis
// client and a key prefix of its own; done removes them.
func exampleSetup(ctx context.Context) (*sql.DB, string, *redis.Client, string, func()) {
	schema := fmt.Sprintf("example_%08x", rand.Uint32())
	prefix := schema + ":"
	admin := env.Admin()
	for _, q := range []string{
		"CREATE DATABASE " + schema,
		"CREATE TABLE " + schema + ".users (id BIGINT PRIMARY KEY, name VARCHAR(100) NOT NULL)",
		"INSERT INTO " + schema + ".users VALUES (1, 'Ann')",
	} {
		if _, err := admin.ExecContext(ctx, q); err != nil {
			log.Fatal(err)
		}
	}
	db, err := sql.Open("mysql", env.DSN(schema))
	if err != nil {
		log.Fatal(err)
	}
	rdb := env.NewRedis(nil)
	return db, schema, rdb, prefix, func() {
		db.Close()
		_, _ = admin.ExecContext(context.Background(), "DROP DATABASE "+schema)
		iter := rdb.Scan(context.Background(), 0, prefix+"*", 1000).Iterator()
		for iter.Next(context.Background()) {
			rdb.Del(context.Background(), iter.Val())
		}
		rdb.Close()
	}
}
