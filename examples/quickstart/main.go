// Command quickstart starts a throwaway MariaDB (binlog on) and Redis, writes
// a row and prints the binlog row event that the write produced.
package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/cacheaside/cacheaside/internal/testenv"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	fmt.Println("starting MariaDB (binlog on) and Redis on loopback ports ...")
	env, err := testenv.Start(nil)
	if err != nil {
		return err
	}
	defer env.Close()
	fmt.Printf("MariaDB at %s, Redis at %s\n", env.MySQLConfig("").Addr, env.RedisAddr())

	db := env.Admin()
	for _, q := range []string{
		"CREATE DATABASE IF NOT EXISTS shop",
		"CREATE TABLE IF NOT EXISTS shop.users (id BIGINT PRIMARY KEY, email VARCHAR(100))",
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return err
		}
	}
	file, pos, err := masterStatus(ctx, db)
	if err != nil {
		return err
	}

	cfg := env.MySQLConfig("")
	host, port, err := splitAddr(cfg.Addr)
	if err != nil {
		return err
	}
	syncer := replication.NewBinlogSyncer(replication.BinlogSyncerConfig{
		ServerID: 1001, Flavor: mysql.MariaDBFlavor, Host: host, Port: port,
		User: cfg.User, Password: cfg.Passwd,
	})
	defer syncer.Close()
	streamer, err := syncer.StartSync(mysql.Position{Name: file, Pos: pos})
	if err != nil {
		return err
	}

	fmt.Println("write: INSERT INTO shop.users VALUES (1, 'ada@example.com')")
	if _, err := db.ExecContext(ctx, "INSERT INTO shop.users VALUES (1, 'ada@example.com')"); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		ev, err := streamer.GetEvent(ctx)
		if err != nil {
			return err
		}
		rows, ok := ev.Event.(*replication.RowsEvent)
		if !ok {
			continue
		}
		fmt.Printf("binlog row event: %s.%s %v\n", rows.Table.Schema, rows.Table.Table, ev.Header.EventType)
		names := rows.Table.ColumnNameString()
		for _, row := range rows.Rows {
			for i, v := range row {
				fmt.Printf("  %s = %v\n", names[i], v)
			}
		}
		return nil
	}
}

func masterStatus(ctx context.Context, db *sql.DB) (string, uint32, error) {
	rows, err := db.QueryContext(ctx, "SHOW MASTER STATUS")
	if err != nil {
		return "", 0, err
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	if !rows.Next() {
		return "", 0, errors.New("SHOW MASTER STATUS returned nothing: is log_bin on?")
	}
	var file string
	var pos uint32
	dest := []any{&file, &pos}
	for range cols[2:] {
		dest = append(dest, new(sql.RawBytes))
	}
	return file, pos, rows.Scan(dest...)
}

func splitAddr(addr string) (string, uint16, error) {
	var host string
	var port uint16
	for i := len(addr) - 1; i >= 0; i-- {
		if addr[i] == ':' {
			host = addr[:i]
			_, err := fmt.Sscan(addr[i+1:], &port)
			return host, port, err
		}
	}
	return "", 0, fmt.Errorf("bad address %q", addr)
}
