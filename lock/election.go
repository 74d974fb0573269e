package lock

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

//go:embed epoch.lua
var epochSrc string

var epochScript = redis.NewScript(epochSrc)

// ErrStepDown, returned by an election's fn (wrapped or not), gives up
// leadership without ending Run: Run releases the lock, pauses for TTL/5 so
// that a standby polling for the lock can take it, and campaigns again. A
// leader returns it when it cannot go on but another process, or a new
// leadership of its own, might: its store refused a write, or it cannot
// reach a backend.
var ErrStepDown = errors.New("lock: election: leader stepped down")

// leaderKey is the context key of the leadership's lock.
type leaderKey struct{}

// FromContext returns the lock of the leadership whose fn received ctx, so
// that fn can have a store check the lock's token in the same step as a
// write (one script over both keys).
func FromContext(ctx context.Context) (*Lock, bool) {
	l, ok := ctx.Value(leaderKey{}).(*Lock)
	return l, ok
}

// ElectionOptions configures an Election. A nil *ElectionOptions means the defaults.
type ElectionOptions struct {
	// TTL is the time to live of the leader's lock: how long a leader that
	// died holds up the others. At least 10ms. Default: 5s.
	TTL time.Duration

	// RefreshEvery is the pause between two refreshes of the leader's lock
	// (after a failed refresh the leader tries again four times as often).
	// It must be shorter than 9/10 of TTL. Default: TTL/3.
	RefreshEvery time.Duration

	// Retry paces a candidate's attempts to take the lock. A strategy that
	// gives up makes the candidate pause for RefreshEvery and start over:
	// a campaign ends only with Run's context.
	// Default: Backoff{Min: 10ms, Max: TTL/10}, so a standby notices a free
	// lock within TTL/10.
	Retry RetryStrategy

	// Logger receives elections, losses of leadership and Redis errors that
	// Run retries. Default: nothing is logged.
	Logger *slog.Logger
}

// Election runs a function in at most one process at a time among all that
// run the same election (the same key on the same Redis), and hands it a
// fencing epoch. See Run. An Election holds no state between calls: several
// Runs of one Election compete like separate processes.
type Election struct {
	client       Client
	key          string
	epochKey     string
	ttl          time.Duration
	refreshEvery time.Duration
	retry        RetryStrategy
	log          *slog.Logger
	err          error // a configuration error, returned by Run
}

// NewElection returns an election on key: the leader holds the lock on key,
// and the fencing epoch is the counter at key + ":epoch". It does no I/O; a
// bad option makes Run return an error that names it.
func NewElection(rdb Client, key string, opts *ElectionOptions) *Election {
	if opts == nil {
		opts = &ElectionOptions{}
	}
	e := &Election{
		client:       rdb,
		key:          key,
		epochKey:     key + ":epoch",
		ttl:          opts.TTL,
		refreshEvery: opts.RefreshEvery,
		retry:        opts.Retry,
		log:          opts.Logger,
	}
	if e.ttl == 0 {
		e.ttl = 5 * time.Second
	}
	if e.refreshEvery == 0 {
		e.refreshEvery = e.ttl / 3
	}
	if e.retry == nil {
		e.retry = Backoff{Min: min(10*time.Millisecond, e.ttl/10), Max: e.ttl / 10}
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	switch {
	case rdb == nil:
		e.err = errors.New("lock: NewElection needs a Redis client, got nil")
	case key == "":
		e.err = errors.New("lock: NewElection needs a key, got an empty one")
	case e.ttl < 10*time.Millisecond:
		e.err = fmt.Errorf("lock: ElectionOptions.TTL %v is below 10ms; leave it 0 for the default 5s", opts.TTL)
	case e.refreshEvery <= 0 || e.refreshEvery >= e.validity():
		e.err = fmt.Errorf("lock: ElectionOptions.RefreshEvery %v must be above 0 and shorter than 9/10 of TTL (%v); leave it 0 for TTL/3",
			opts.RefreshEvery, e.validity())
	}
	return e
}

// Run campaigns for leadership until ctx ends. While this process leads, Run
// calls fn with a context that is cancelled when leadership is lost, and with
// the fencing epoch of this leadership: a number that grows with every new
// leadership, so a store that remembers the highest epoch it has seen can
// refuse the writes of a leader that no longer leads.
//
// A leader refreshes its lock every RefreshEvery. It cancels fn's context
// (with a cause wrapping ErrNotHeld) as soon as a refresh finds the lock
// taken, or once 9/10 of TTL have passed since the last refresh that Redis
// confirmed, counted from when that refresh was sent. Redis cannot let the
// lock expire before TTL has passed since it executed that refresh, so a
// leader cut off from Redis stops before anyone else can start, provided the
// two clocks run at the same rate and fn returns promptly. A process that is
// paused (a stop signal, a long GC pause, a swapped-out VM) cannot notice
// anything while paused: that is the case the epoch is for.
//
// When fn returns after its context was cancelled by a lost leadership, Run
// releases the lock and campaigns again, whatever fn returned; so it does
// when fn returns an error matching ErrStepDown, after a pause of TTL/5.
// When fn returns on its own while still leader, Run releases the lock and
// returns fn's result. FromContext(fn's ctx) returns the leadership's lock. Once ctx ends, Run releases the lock, waits for fn and its own
// goroutines, and returns nil. Run leaves no goroutine behind; waiting for a
// Redis call in flight can take up to the client's read timeout.
func (e *Election) Run(ctx context.Context, fn func(ctx context.Context, epoch uint64) error) error {
	if e.err != nil {
		return e.err
	}
	if fn == nil {
		return errors.New("lock: Election.Run needs a func, got nil")
	}
	var p pause
	defer p.stop()
	for {
		t, err := e.campaign(ctx)
		if err != nil {
			return nil // only the end of ctx ends a campaign
		}
		done, err := e.lead(ctx, t, fn)
		if done || ctx.Err() != nil {
			return err
		}
		if errors.Is(err, ErrStepDown) && !p.sleep(ctx, e.ttl/5) {
			return nil
		}
	}
}

// term is one leadership: the lock, its epoch, and the time from which its
// validity is counted.
type term struct {
	lock      *Lock
	epoch     uint64
	validFrom time.Time
}

// campaign tries to take the lock until it succeeds or ctx ends.
func (e *Election) campaign(ctx context.Context) (*term, error) {
	var (
		next func() (time.Duration, bool)
		p    pause
	)
	defer p.stop()
	for {
		t, err := e.elect(ctx)
		if t != nil {
			return t, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err != nil {
			e.log.Warn("lock: election: campaign failed", "key", e.key, "err", err)
		}
		if next == nil {
			next = e.retry.Waits()
		}
		wait, ok := next()
		if !ok {
			wait, next = e.refreshEvery, nil
		}
		if !p.sleep(ctx, wait) {
			return nil, ctx.Err()
		}
	}
}

// elect makes one attempt to become leader. It returns a nil term and a nil
// error when another candidate leads.
//
// The epoch is taken after the lock, never before: with the order reversed,
// candidate A could take epoch 1, B epoch 2, B lead and die, and A then lead
// with the smaller epoch. Taking the lock first is not enough on its own
// either: A takes the lock, pauses past its TTL, B takes the lock and epoch
// 1, then A resumes and takes epoch 2 although B leads. So A confirms its lock
// after taking the epoch. The key holds A's token only from A's own SET until
// it expires or is released, so a confirmed lock means nobody else held it
// between A's SET and the confirmation, hence nobody took an epoch in that
// window: epochs are handed out in the order of the leaderships.
func (e *Election) elect(ctx context.Context) (*term, error) {
	l, err := obtain(ctx, e.client, e.key, e.ttl, newToken(), noRetry{})
	if errors.Is(err, ErrNotObtained) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	epoch, err := epochScript.Run(ctx, e.client, []string{e.epochKey}).Int64()
	if err == nil && epoch <= 0 {
		err = fmt.Errorf("key %s holds %d, not a positive counter", e.epochKey, epoch)
	}
	if err != nil {
		e.release(ctx, l)
		return nil, fmt.Errorf("lock: election %s: epoch: %w", e.key, err)
	}
	sent := time.Now()
	if err := l.Refresh(ctx, e.ttl); err != nil {
		if !errors.Is(err, ErrNotHeld) {
			e.release(ctx, l)
			return nil, err
		}
		return nil, nil
	}
	return &term{lock: l, epoch: uint64(epoch), validFrom: sent}, nil
}

// lead runs fn for one leadership, keeping the lock alive meanwhile. It
// reports done when Run should return err: fn returned on its own while
// still leader. Otherwise leadership was lost or ctx ended.
func (e *Election) lead(ctx context.Context, t *term, fn func(context.Context, uint64) error) (done bool, err error) {
	leaderCtx, cancel := context.WithCancelCause(context.WithValue(ctx, leaderKey{}, t.lock))
	defer cancel(nil)
	var wg sync.WaitGroup
	wg.Go(func() { e.keep(leaderCtx, cancel, t) })
	e.log.Info("lock: election: leading", "key", e.key, "epoch", t.epoch)

	err = fn(leaderCtx, t.epoch)
	lost := leaderCtx.Err() != nil && ctx.Err() == nil
	cause := context.Cause(leaderCtx)
	cancel(errors.New("lock: election: leadership ended"))
	wg.Wait()
	e.release(ctx, t.lock)

	switch {
	case ctx.Err() != nil:
		return true, nil
	case lost:
		e.log.Warn("lock: election: leadership lost", "key", e.key, "epoch", t.epoch, "cause", cause, "err", err)
		return false, nil
	case errors.Is(err, ErrStepDown):
		e.log.Warn("lock: election: stepped down", "key", e.key, "epoch", t.epoch, "err", err)
		return false, err
	}
	return true, err
}

// keep refreshes the lock until ctx ends, and cancels ctx through lose when
// the lock is found taken or its validity runs out. The validity deadline is
// a timer of its own, so it fires on time even while a refresh hangs on an
// unreachable Redis.
func (e *Election) keep(ctx context.Context, lose context.CancelCauseFunc, t *term) {
	valid := e.validity()
	expire := time.AfterFunc(time.Until(t.validFrom.Add(valid)), func() {
		lose(fmt.Errorf("lock: election %s: no refresh confirmed within %v: %w", e.key, valid, ErrNotHeld))
	})
	defer expire.Stop()
	tick := time.NewTimer(e.refreshEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		sent := time.Now()
		err := t.lock.Refresh(ctx, e.ttl)
		switch {
		case err == nil:
			if !expire.Stop() {
				return // the validity ran out while the refresh was in flight
			}
			expire.Reset(time.Until(sent.Add(valid)))
			tick.Reset(e.refreshEvery)
		case errors.Is(err, ErrNotHeld):
			lose(fmt.Errorf("lock: election %s: refresh: %w", e.key, err))
			return
		case ctx.Err() != nil:
			return
		default:
			e.log.Warn("lock: election: refresh failed", "key", e.key, "epoch", t.epoch, "err", err)
			tick.Reset(e.refreshEvery / 4)
		}
	}
}

// validity is how long a leader trusts a refresh that Redis confirmed: 9/10
// of TTL, counted from when the refresh was sent.
func (e *Election) validity() time.Duration { return e.ttl - e.ttl/10 }

// release gives up a leadership's lock; ErrNotHeld is expected after a loss.
func (e *Election) release(ctx context.Context, l *Lock) {
	if err := l.Release(ctx); err != nil && !errors.Is(err, ErrNotHeld) {
		e.log.Warn("lock: election: release failed", "key", e.key, "err", err)
	}
}
