package binlog_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/cacheaside/cacheaside/binlog"
)

// Example streams the row changes of one schema and checkpoints after each
// transaction. The server here is the test harness's MariaDB; any MySQL or
// MariaDB with binlog_format=ROW works.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := env.Admin()
	for _, q := range []string{
		"CREATE DATABASE example_shop",
		"CREATE TABLE example_shop.users (id INT PRIMARY KEY, email VARCHAR(100))",
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			log.Fatal(err)
		}
	}
	defer db.Exec("DROP DATABASE example_shop")
	rdb := env.NewRedis(nil)
	defer rdb.Close()
	defer rdb.Del(context.Background(), "example:binlog:checkpoint")

	mc := env.MySQLConfig("")
	s, err := binlog.New(
		binlog.Config{Addr: mc.Addr, User: mc.User, Password: mc.Passwd, ServerID: 4242},
		&binlog.Options{Include: func(schema, _ string) bool { return schema == "example_shop" }},
	)
	if err != nil {
		log.Fatal(err)
	}
	checkpoints := binlog.NewRedisCheckpoints(rdb, "example:binlog:checkpoint")
	from, err := checkpoints.Load(ctx)
	if err != nil {
		log.Fatal(err)
	}
	if from.IsZero() { // first run: start from here, before the writes below
		if from, err = s.CurrentPosition(ctx); err != nil {
			log.Fatal(err)
		}
	}

	for _, q := range []string{
		"INSERT INTO example_shop.users VALUES (1, 'ada@example.com')",
		"UPDATE example_shop.users SET email = 'ada@example.org' WHERE id = 1",
		"TRUNCATE TABLE example_shop.users",
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			log.Fatal(err)
		}
	}

	err = s.Run(ctx, from, binlog.HandlerFunc(func(ctx context.Context, tx *binlog.Tx) error {
		for _, r := range tx.Rows {
			fmt.Println(r.Op, r.Table, r.PrimaryKey, r.Before["email"], "->", r.After["email"])
		}
		for _, c := range tx.Changes {
			fmt.Println(c.Kind, c.Table)
			cancel() // done for this example
		}
		if tx.More {
			return nil // checkpoint only whole transactions
		}
		return checkpoints.Save(ctx, 1, tx.Pos)
	}))
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// insert users [id] <nil> -> ada@example.com
	// update users [id] ada@example.com -> ada@example.org
	// truncate users
}
