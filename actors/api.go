package actors

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/google/uuid"

	"github.com/warmpool/warmpool/clock"
	"github.com/warmpool/warmpool/driver"
	"github.com/warmpool/warmpool/messages"
)

// PoolOptions are what a pool actor is built from. Time, ids and randomness
// are injected so that tests and replays control them.
type PoolOptions struct {
	// Config is the pool's settings; defaults are applied and validated by
	// SpawnPool.
	Config messages.PoolConfig
	// Node is the id of the node that runs the pool, reported in leases.
	Node string
	// Driver runs the pool's containers.
	Driver driver.Driver
	// Clock gives the time and runs timers; default clock.Real().
	Clock clock.Clock
	// NewID names new slots; default uuid.NewString.
	NewID func() string
	// Seed seeds the backoff jitter.
	Seed uint64
	// Logger gets the pool's logs; default slog.Default().
	Logger *slog.Logger
	// Leases keeps the leases durably; default an in-memory store.
	Leases LeaseStore
	// Snapshots keeps slot snapshots; nil keeps none.
	Snapshots SnapshotStore
	// Recovery, when set, is the state to start from (see LoadRecovery).
	Recovery *Recovery
	// Events receives the pool's events; nil drops them.
	Events EventSink
	// Recorder, when set, records every input of the pool (see Replay).
	Recorder Recorder
	// replay: the pool runs from a recording (see Replay).
	replay bool
	// Root sends timer ticks and driver results; set by SpawnPool.
	Root *actor.RootContext
}

// EventSink receives a pool's events in the order the pool made its
// decisions. Emit is called from the pool's mailbox: it must not block.
type EventSink interface {
	Emit(messages.Event)
}

// OnExit says what a stopping pool does with its containers.
type OnExit string

const (
	// ExitLeave keeps warm and acquired containers running, and their leases
	// stored, for the next start of the node to adopt: sessions survive a
	// rolling restart.
	ExitLeave OnExit = "leave"
	// ExitStop stops every container and ends every lease.
	ExitStop OnExit = "stop"
)

// Pool is a handle on a running pool actor, safe for concurrent use.
type Pool struct {
	name    string
	pid     *actor.PID
	root    *actor.RootContext
	snap    *snapshotWriter
	stopped atomic.Bool
}

// SpawnPool validates o, starts the pool actor and returns its handle. The
// pool starts warming containers at once.
func SpawnPool(root *actor.RootContext, o PoolOptions) (*Pool, error) {
	o.Config = o.Config.WithDefaults()
	if err := o.Config.Validate(); err != nil {
		return nil, err
	}
	if o.Driver == nil {
		return nil, fmt.Errorf("%w: pools.%s: no driver", messages.ErrConfigValidation, o.Config.Name)
	}
	if o.Clock == nil {
		o.Clock = clock.Real()
	}
	if o.NewID == nil {
		o.NewID = uuid.NewString
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Leases == nil {
		o.Leases = NewMemoryLeases()
	}
	o.Root = root
	var snap *snapshotWriter
	if o.Snapshots != nil {
		snap = newSnapshotWriter(o.Snapshots, o.Logger.With("pool", o.Config.Name))
	}
	props := actor.PropsFromProducer(func() actor.Actor { return newPoolActor(o, snap) })
	pid, err := root.SpawnNamed(props, "pool-"+o.Config.Name)
	if err != nil {
		if snap != nil {
			snap.close()
		}
		return nil, fmt.Errorf("pool %s: %w", o.Config.Name, err)
	}
	return &Pool{name: o.Config.Name, pid: pid, root: root, snap: snap}, nil
}

// Name is the pool's name.
func (p *Pool) Name() string { return p.name }

// Send hands a request (messages.Acquire, Release, Renew, GetStats, Warmup,
// ShutdownAll) to the pool without waiting; its Reply is called once. After
// Stop, it is answered at once with ErrNotReady.
func (p *Pool) Send(msg any) {
	if p.stopped.Load() {
		failRequest(msg, fmt.Errorf("%w: pool %s is stopped", messages.ErrNotReady, p.name))
		return
	}
	p.root.Send(p.pid, msg)
}

// Acquire returns the container of session id (see messages.Acquire).
func (p *Pool) Acquire(ctx context.Context, id string) (messages.Lease, error) {
	return ask(ctx, p, func(r func(messages.Lease, error)) any { return messages.Acquire{ID: id, Reply: r} })
}

// Release ends the lease of session id.
func (p *Pool) Release(ctx context.Context, id string) (messages.Released, error) {
	return ask(ctx, p, func(r func(messages.Released, error)) any { return messages.Release{ID: id, Reply: r} })
}

// Renew extends the lease of session id.
func (p *Pool) Renew(ctx context.Context, id string) (messages.Lease, error) {
	return ask(ctx, p, func(r func(messages.Lease, error)) any { return messages.Renew{ID: id, Reply: r} })
}

// Stats returns the pool's counts.
func (p *Pool) Stats(ctx context.Context) (messages.Stats, error) {
	return ask(ctx, p, func(r func(messages.Stats, error)) any { return messages.GetStats{Reply: r} })
}

// Warmup starts up to n more containers now.
func (p *Pool) Warmup(ctx context.Context, n int) (messages.WarmupReply, error) {
	return ask(ctx, p, func(r func(messages.WarmupReply, error)) any { return messages.Warmup{Count: n, Reply: r} })
}

// ShutdownAll stops every container and ends every lease.
func (p *Pool) ShutdownAll(ctx context.Context) (messages.ShutdownReply, error) {
	return ask(ctx, p, func(r func(messages.ShutdownReply, error)) any { return messages.ShutdownAll{Reply: r} })
}

// Holds reports whether the pool holds session id, or a lease of id on
// slot, or is making one. A stored lease of this node that the pool does
// not hold is an orphan: a write whose outcome was unknown left it, and it
// may be deleted at its revision.
func (p *Pool) Holds(ctx context.Context, id, slot string) (bool, error) {
	if p.stopped.Load() {
		return false, fmt.Errorf("%w: pool %s is stopped", messages.ErrNotReady, p.name)
	}
	ch := make(chan bool, 1)
	p.root.Send(p.pid, holdsQuery{id: id, slot: slot, reply: ch})
	select {
	case held := <-ch:
		return held, nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// Stop stops the pool for a node shutdown: new requests fail, acquires
// waiting for a container fail, lease writes in flight land. Then, with
// ExitStop, every container is stopped and every lease ended; with ExitLeave,
// warm and acquired containers keep running and their leases stay stored for
// the next start to adopt. Final snapshots are written, then the actors stop.
// ctx bounds the wait; containers still stopping when it ends are left to the
// slot actors (see the driver's Close for a hard bound).
func (p *Pool) Stop(ctx context.Context, onExit OnExit) error {
	if p.stopped.Swap(true) {
		return nil
	}
	done := make(chan struct{})
	p.root.Send(p.pid, stopPool{done: done, leave: onExit == ExitLeave})
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("pool %s: still stopping: %w", p.name, ctx.Err())
	}
	if p.snap != nil {
		if ferr := p.snap.flush(ctx); ferr != nil && err == nil {
			err = fmt.Errorf("pool %s: writing final snapshots: %w", p.name, ferr)
		}
	}
	if perr := p.root.PoisonFuture(p.pid).Wait(); perr != nil && err == nil {
		err = fmt.Errorf("pool %s: stopping the actor: %w", p.name, perr)
	}
	if p.snap != nil {
		p.snap.close()
	}
	return err
}

func ask[T any](ctx context.Context, p *Pool, build func(func(T, error)) any) (T, error) {
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	p.Send(build(func(v T, err error) { ch <- result{v, err} }))
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

func failRequest(msg any, err error) {
	switch m := msg.(type) {
	case messages.Acquire:
		m.Reply(messages.Lease{}, err)
	case messages.Release:
		m.Reply(messages.Released{}, err)
	case messages.Renew:
		m.Reply(messages.Lease{}, err)
	case messages.GetStats:
		m.Reply(messages.Stats{}, err)
	case messages.Warmup:
		m.Reply(messages.WarmupReply{}, err)
	case messages.ShutdownAll:
		m.Reply(messages.ShutdownReply{}, err)
	}
}
