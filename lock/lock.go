package lock

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

var (
	// ErrNotObtained is returned by Obtain and TryObtain when another holder
	// has the lock and the retry strategy gave up or the context ended.
	ErrNotObtained = errors.New("lock: not obtained")

	// ErrNotHeld is returned by Release, Refresh and TTL when the key no longer
	// holds the lock's token: the lock expired, was released, or was lost with
	// Redis's data. Another holder may have it now.
	ErrNotHeld = errors.New("lock: not held")
)

// Client is the part of go-redis the package uses. *redis.Client,
// *redis.ClusterClient, *redis.Ring and every redis.UniversalClient satisfy it.
// Every script touches exactly one key, so Cluster needs no hash tags.
type Client = redis.Scripter

// releaseTimeout bounds Release, which runs on a context detached from the
// caller's cancellation.
const releaseTimeout = 5 * time.Second

var (
	//go:embed obtain.lua
	obtainSrc string
	//go:embed refresh.lua
	refreshSrc string
	//go:embed release.lua
	releaseSrc string
	//go:embed ttl.lua
	ttlSrc string

	obtainScript  = redis.NewScript(obtainSrc)
	refreshScript = redis.NewScript(refreshSrc)
	releaseScript = redis.NewScript(releaseSrc)
	ttlScript     = redis.NewScript(ttlSrc)
)

// Options configures Obtain. A nil *Options means the defaults.
type Options struct {
	// Retry decides how long Obtain waits for a lock that another holder
	// has, and how often it tries again meanwhile.
	// Default: Backoff{Limit: ttl}: jittered waits from 10ms to 250ms for at
	// most the TTL asked for, by which time a holder that died without
	// releasing has expired.
	Retry RetryStrategy

	// Token is the value the key holds while the lock is held. It must be
	// unique to the holder: two holders with the same token both hold the
	// lock. Obtain with the token that already holds the key succeeds and
	// resets the TTL. Set it to make the holder readable in Redis (for
	// example "host/pid/random").
	// Default: 128 random bits from crypto/rand, hex-encoded.
	Token string
}

// Lock is a lock held in Redis under a key, identified by its token. Its
// methods are safe for concurrent use.
type Lock struct {
	client Client
	key    string
	token  string
}

// Obtain takes the lock on key for ttl, waiting for another holder as
// opts.Retry allows. It returns ErrNotObtained (wrapping ctx's error when ctx
// ended) when it gives up, and a wrapped Redis error when Redis fails, without
// retrying: go-redis already retried the command per its own options.
// ttl is rounded down to whole milliseconds and must be at least 1ms.
func Obtain(ctx context.Context, rdb Client, key string, ttl time.Duration, opts *Options) (*Lock, error) {
	if opts == nil {
		opts = &Options{}
	}
	retry := opts.Retry
	if retry == nil {
		retry = Backoff{Limit: ttl}
	}
	token := opts.Token
	if token == "" {
		token = newToken()
	}
	return obtain(ctx, rdb, key, ttl, token, retry)
}

// TryObtain makes one attempt to take the lock on key for ttl with a random
// token. It returns ErrNotObtained when another holder has it.
func TryObtain(ctx context.Context, rdb Client, key string, ttl time.Duration) (*Lock, error) {
	return obtain(ctx, rdb, key, ttl, newToken(), noRetry{})
}

func obtain(ctx context.Context, rdb Client, key string, ttl time.Duration, token string, retry RetryStrategy) (*Lock, error) {
	ms, err := millis(ttl)
	if err != nil {
		return nil, err
	}
	var (
		next func() (time.Duration, bool)
		p    pause
	)
	defer p.stop()
	for {
		ok, err := obtainScript.Run(ctx, rdb, []string{key}, token, ms).Bool()
		if err != nil {
			return nil, fmt.Errorf("lock: obtain %s: %w", key, err)
		}
		if ok {
			return &Lock{client: rdb, key: key, token: token}, nil
		}
		if next == nil {
			next = retry.Waits()
		}
		wait, again := next()
		if !again {
			return nil, ErrNotObtained
		}
		if !p.sleep(ctx, wait) {
			return nil, fmt.Errorf("%w: %w", ErrNotObtained, context.Cause(ctx))
		}
	}
}

// Key returns the Redis key of the lock.
func (l *Lock) Key() string { return l.key }

// Token returns the value the key holds while the lock is held.
func (l *Lock) Token() string { return l.token }

// Release gives the lock up if the key still holds its token, and returns
// ErrNotHeld otherwise (it then leaves the key alone: it may be another
// holder's lock). It runs on a context that keeps ctx's values but not its
// cancellation or deadline, bounded by a few seconds of its own, so a caller
// whose context has ended still releases; otherwise the lock would block
// everyone else until its TTL ran out. A Release whose reply was lost and
// retried by go-redis reports ErrNotHeld although it released.
func (l *Lock) Release(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	ok, err := releaseScript.Run(ctx, l.client, []string{l.key}, l.token).Bool()
	if err != nil {
		return fmt.Errorf("lock: release %s: %w", l.key, err)
	}
	if !ok {
		return ErrNotHeld
	}
	return nil
}

// Refresh sets the lock's time to live to ttl if the key still holds its
// token, and returns ErrNotHeld otherwise: a lock that expired, even one
// nobody took since, is never revived, because another holder may have come
// and gone in between. ttl must be at least 1ms.
func (l *Lock) Refresh(ctx context.Context, ttl time.Duration) error {
	ms, err := millis(ttl)
	if err != nil {
		return err
	}
	ok, err := refreshScript.Run(ctx, l.client, []string{l.key}, l.token, ms).Bool()
	if err != nil {
		return fmt.Errorf("lock: refresh %s: %w", l.key, err)
	}
	if !ok {
		return ErrNotHeld
	}
	return nil
}

// TTL returns how long the lock has left before it expires, or ErrNotHeld
// when the key no longer holds its token. A key that something outside this
// package made persistent reports 0.
func (l *Lock) TTL(ctx context.Context) (time.Duration, error) {
	ms, err := ttlScript.Run(ctx, l.client, []string{l.key}, l.token).Int64()
	if err != nil {
		return 0, fmt.Errorf("lock: ttl %s: %w", l.key, err)
	}
	switch {
	case ms == -2:
		return 0, ErrNotHeld
	case ms < 0:
		return 0, nil
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// millis converts a TTL to the whole milliseconds Redis takes.
func millis(ttl time.Duration) (int64, error) {
	ms := ttl.Milliseconds()
	if ms < 1 {
		return 0, fmt.Errorf("lock: ttl %v is shorter than 1ms; pass at least time.Millisecond", ttl)
	}
	return ms, nil
}

// newToken returns 128 random bits, hex-encoded.
func newToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails; see crypto/rand.Read
	return hex.EncodeToString(b[:])
}
