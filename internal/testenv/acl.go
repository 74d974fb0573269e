package testenv

import (
	"context"
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"
)

// ACLUser is a Redis user limited to some keys, channels and commands, as
// production runs a service: ACL SETUSER name on >password ~keys &channels
// commands, after a reset of all three.
type ACLUser struct {
	// Name and Password authenticate the user.
	Name, Password string
	// Keys are the key patterns the user may read and write (ACL ~pattern),
	// e.g. "app:*". Scripts are held to them too.
	Keys []string
	// Channels are the Pub/Sub channel patterns it may use (ACL &pattern).
	Channels []string
	// Commands are ACL command rules, e.g. "+get", "+evalsha", "+@read",
	// "-flushall"; ClientCommands lists what a go-redis client needs on top.
	Commands []string
}

// ClientCommands are the rules a go-redis client needs to connect and
// route: HELLO and AUTH on connect, CLIENT SETNAME, PING, and the
// cluster's and the failover client's topology reads. (go-redis also sends
// CLIENT SETINFO, which Redis 7.0 does not know, and ignores its refusal.)
func ClientCommands() []string {
	return []string{"+hello", "+auth", "+ping", "+client|setname",
		"+cluster|slots", "+cluster|shards", "+cluster|nodes", "+readonly", "+role"}
}

func (u ACLUser) rules() []any {
	args := []any{"ACL", "SETUSER", u.Name, "reset", "on", ">" + u.Password}
	for _, k := range u.Keys {
		args = append(args, "~"+k)
	}
	for _, c := range u.Channels {
		args = append(args, "&"+c)
	}
	for _, c := range u.Commands {
		args = append(args, c)
	}
	return args
}

// AddUser creates (or replaces) user u on the server. The server keeps no
// ACL file, so the harness applies its users again on every Start: a
// restarted or failed-over node knows them as the real ones would from
// their configuration.
func (r *Redis) AddUser(ctx context.Context, u ACLUser) error {
	if u.Name == "" || u.Name == "default" {
		return fmt.Errorf("testenv: AddUser: name %q: give the user a name of its own", u.Name)
	}
	if err := r.setUser(ctx, u); err != nil {
		return err
	}
	r.server.mu.Lock()
	r.users = append(r.users, u)
	r.server.mu.Unlock()
	return nil
}

func (r *Redis) setUser(ctx context.Context, u ACLUser) error {
	c := r.client()
	defer c.Close()
	if err := c.Do(ctx, u.rules()...).Err(); err != nil {
		return fmt.Errorf("testenv: %s: ACL SETUSER %s: %w", r.Addr(), u.Name, err)
	}
	return nil
}

// applyUsers sets every user added so far, after a start.
func (r *Redis) applyUsers() error {
	r.server.mu.Lock()
	users := append([]ACLUser(nil), r.users...)
	r.server.mu.Unlock()
	for _, u := range users {
		if err := r.setUser(context.Background(), u); err != nil {
			return err
		}
	}
	return nil
}

// AddUser creates user u on every node of the cluster (ACLs are per node).
func (c *Cluster) AddUser(ctx context.Context, u ACLUser) error {
	for _, n := range c.Nodes {
		if err := n.AddUser(ctx, u); err != nil {
			return err
		}
	}
	return nil
}

// AddUser creates user u on both data servers (ACLs are not replicated);
// the sentinels themselves need none.
func (s *Sentinel) AddUser(ctx context.Context, u ACLUser) error {
	for _, n := range s.Data {
		if err := n.AddUser(ctx, u); err != nil {
			return err
		}
	}
	return nil
}

// RedisUserClient creates user u on the servers of the given kind and
// returns a client of that kind that authenticates as u, closed at the end
// of the test. Add ClientCommands to u.Commands unless the test is about
// them. With external servers it skips the test: it needs the harness's own.
func (e *Env) RedisUserClient(t testing.TB, kind RedisKind, u ACLUser) redis.UniversalClient {
	t.Helper()
	ctx := context.Background()
	var c redis.UniversalClient
	switch kind {
	case KindSingle:
		_, r := e.Faults(t)
		if err := r.AddUser(ctx, u); err != nil {
			t.Fatal(err)
		}
		c = redis.NewClient(&redis.Options{Addr: r.Addr(), Username: u.Name, Password: u.Password})
	case KindCluster:
		cl := e.Cluster(t)
		if err := cl.AddUser(ctx, u); err != nil {
			t.Fatal(err)
		}
		c = cl.Client(&redis.ClusterOptions{Username: u.Name, Password: u.Password})
	case KindSentinel:
		s := e.Sentinel(t)
		if err := s.AddUser(ctx, u); err != nil {
			t.Fatal(err)
		}
		c = s.Client(&redis.FailoverOptions{Username: u.Name, Password: u.Password})
	case KindTLS:
		if e.External() {
			t.Skip("a TLS Redis needs the harness's own servers")
		}
		r, err := e.startTLS()
		if err == nil {
			err = r.AddUser(ctx, u)
		}
		if err != nil {
			t.Fatal(err)
		}
		c = redis.NewClient(&redis.Options{Addr: r.TLSAddr(), TLSConfig: r.TLS.ClientConfig(), Username: u.Name, Password: u.Password})
	default:
		t.Fatalf("testenv: unknown Redis kind %q", kind)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
