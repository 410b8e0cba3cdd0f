package actors

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warmpool/warmpool/clock"
	"github.com/warmpool/warmpool/driver"
	"github.com/warmpool/warmpool/messages"
)

// PoolState is a pool's decisions at one moment, in a stable order: what a
// replay is compared by.
type PoolState struct {
	Slots    []SlotState    `json:"slots"`
	Sessions []SessionState `json:"sessions"`
	// Writes counts the durable lease writes in flight.
	Writes int            `json:"writes"`
	Stats  messages.Stats `json:"stats"`
}

// SlotState is one slot in a PoolState.
type SlotState struct {
	ID      string `json:"id"`
	State   string `json:"state"`
	Session string `json:"session,omitempty"`
}

// SessionState is one session in a PoolState.
type SessionState struct {
	ID        string    `json:"id"`
	Slot      string    `json:"slot"`
	Leased    bool      `json:"leased"`
	Revision  uint64    `json:"revision"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (p *poolActor) state() PoolState {
	st := PoolState{Stats: p.stats(), Writes: p.writes}
	for _, id := range sortedKeys(p.slots) {
		v := p.slots[id]
		st.Slots = append(st.Slots, SlotState{ID: id, State: v.state.String(), Session: v.session})
	}
	for _, id := range sortedKeys(p.sessions) {
		s := p.sessions[id]
		st.Sessions = append(st.Sessions, SessionState{ID: id, Slot: s.slot, Leased: s.state == leased, Revision: s.revision, ExpiresAt: s.expiresAt})
	}
	return st
}

// State returns the pool's state.
func (p *Pool) State(ctx context.Context) (PoolState, error) {
	ch := make(chan PoolState, 1)
	p.root.Send(p.pid, getState{reply: ch})
	select {
	case st := <-ch:
		return st, nil
	case <-ctx.Done():
		return PoolState{}, ctx.Err()
	}
}

// ReplayResult is what a replay of one pool's recording gives.
type ReplayResult struct {
	Pool string `json:"pool"`
	// Inputs is how many inputs were replayed.
	Inputs int `json:"inputs"`
	// Events are the events the replay emitted, in order.
	Events []messages.Event `json:"events"`
	// Final is the pool's state after the last input.
	Final PoolState `json:"final"`
	// Divergences lists where the replay's events differ from the
	// recorded ones; empty when the replay reproduced the run.
	Divergences []string `json:"divergences,omitempty"`
}

// Replay replays a recording (see ReadInputs) into fresh pools, one for each
// run of a pool in it (a node that restarted records a run per start), with
// no driver, no store and a clock that reads each input's recorded time:
// the pools make the same decisions from the same inputs, and each result
// says where its events differ from the recorded ones.
func Replay(ctx context.Context, inputs []Input, logger *slog.Logger) ([]ReplayResult, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	// A recording holds one run per pool per start of the node: a header
	// begins each. Each run replays on its own, from its recorded recovery.
	var runs [][]Input
	current := map[string]int{} // pool -> index of its current run
	for _, in := range inputs {
		i, ok := current[in.Pool]
		if in.Kind == InputHeader || !ok {
			runs = append(runs, nil)
			i = len(runs) - 1
			current[in.Pool] = i
		}
		runs[i] = append(runs[i], in)
	}
	var results []ReplayResult
	for _, run := range runs {
		r, err := replayPool(ctx, run, logger)
		if err != nil {
			return results, fmt.Errorf("pool %s: %w", run[0].Pool, err)
		}
		results = append(results, r)
	}
	return results, nil
}

// replayClock reads what the replayer sets; its timers never fire (the
// ticks they would send are inputs in the recording).
type replayClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *replayClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *replayClock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

type noTimer struct{}

func (noTimer) Stop() bool { return true }

func (c *replayClock) AfterFunc(time.Duration, func()) clock.Timer { return noTimer{} }

// eventCollector keeps a replay's events.
type eventCollector struct {
	mu     sync.Mutex
	events []messages.Event
}

func (c *eventCollector) Emit(e messages.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.events = append(c.events, e)
}

func replayPool(ctx context.Context, inputs []Input, logger *slog.Logger) (ReplayResult, error) {
	res := ReplayResult{}
	if len(inputs) < 2 || inputs[0].Kind != InputHeader || inputs[0].Config == nil || inputs[1].Kind != InputStart {
		return res, errors.New("the recording does not begin with a header and a start")
	}
	head, start := inputs[0], inputs[1]
	res.Pool = head.Config.Name
	clk := &replayClock{now: start.Time}
	var idMu sync.Mutex
	var ids []string
	setIDs := func(next []string) {
		idMu.Lock()
		defer idMu.Unlock()
		ids = slices.Clone(next)
	}
	setIDs(start.NewIDs)
	newID := func() string {
		idMu.Lock()
		defer idMu.Unlock()
		if len(ids) == 0 {
			return "replay-extra-id" // a divergence: the events will show it
		}
		id := ids[0]
		ids = ids[1:]
		return id
	}
	events := &eventCollector{}
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return logger }))
	defer sys.Shutdown()
	o := PoolOptions{
		Config: *head.Config, Node: head.Node, Seed: head.Seed, Driver: inertDriver{}, Clock: clk, NewID: newID,
		Logger: logger, Recovery: start.Recovery, Events: events, replay: true,
	}
	pool, err := SpawnPool(sys.Root, o)
	if err != nil {
		return res, err
	}
	defer func() { _ = sys.Root.StopFuture(pool.pid).Wait() }()
	deliver := func(msg any) error {
		done := make(chan struct{})
		sys.Root.Send(pool.pid, replayed{msg: msg, done: done})
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := deliver(nil); err != nil { // Started is handled first
		return res, err
	}
	var recorded []messages.Event
	recorded = append(recorded, start.Events...)
	for _, in := range inputs[2:] {
		msg, err := in.message(func(any, error) {})
		if err != nil {
			return res, fmt.Errorf("input %d: %w", in.Seq, err)
		}
		clk.set(in.Time)
		setIDs(in.NewIDs)
		if err := deliver(msg); err != nil {
			return res, err
		}
		recorded = append(recorded, in.Events...)
		res.Inputs++
	}
	res.Inputs++ // the start
	st, err := pool.State(ctx)
	if err != nil {
		return res, err
	}
	res.Final = st
	events.mu.Lock()
	res.Events = slices.Clone(events.events)
	events.mu.Unlock()
	res.Divergences = diffEvents(recorded, res.Events)
	return res, nil
}

// diffEvents compares recorded and replayed events field by field.
func diffEvents(want, got []messages.Event) []string {
	var out []string
	for i := 0; i < max(len(want), len(got)); i++ {
		switch {
		case i >= len(got):
			out = append(out, fmt.Sprintf("event %d: recorded %s, replay emitted nothing", i+1, want[i]))
		case i >= len(want):
			out = append(out, fmt.Sprintf("event %d: replay emitted %s, not in the recording", i+1, got[i]))
		case !sameEvent(want[i], got[i]):
			out = append(out, fmt.Sprintf("event %d: recorded %s, replay emitted %s", i+1, want[i], got[i]))
		}
		if len(out) >= 20 {
			out = append(out, "... (more)")
			break
		}
	}
	return out
}

func sameEvent(a, b messages.Event) bool {
	a.Time, b.Time = a.Time.UTC(), b.Time.UTC()
	return reflect.DeepEqual(a, b)
}

// WriteResult prints a replay result for people.
func WriteResult(w io.Writer, r ReplayResult) {
	fmt.Fprintf(w, "pool %s: %d inputs, %d events replayed\n", r.Pool, r.Inputs, len(r.Events))
	st := r.Final.Stats
	fmt.Fprintf(w, "final: warm=%d acquired=%d warming=%d draining=%d total=%d\n", st.Warm, st.Acquired, st.Warming, st.Draining, st.Total)
	for _, s := range r.Final.Sessions {
		fmt.Fprintf(w, "  session %q slot=%s leased=%v revision=%d expires_at=%s\n", s.ID, s.Slot, s.Leased, s.Revision, s.ExpiresAt.UTC().Format(time.RFC3339))
	}
	if len(r.Divergences) == 0 {
		fmt.Fprintln(w, "the replay reproduced the recorded events exactly")
		return
	}
	fmt.Fprintf(w, "DIVERGED from the recording:\n  %s\n", strings.Join(r.Divergences, "\n  "))
}

// inertDriver is a replay's driver: it is never called, since a replay's
// slots are inert and its recovery comes from the recording.
type inertDriver struct{}

var errInert = errors.New("replay: no driver")

func (inertDriver) Start(context.Context, driver.Spec) (driver.Handle, error) {
	return driver.Handle{}, errInert
}
func (inertDriver) Ready(context.Context, driver.Handle) error { return errInert }
func (inertDriver) Wait(ctx context.Context, _ driver.Handle) (driver.Exit, error) {
	<-ctx.Done()
	return driver.Exit{}, ctx.Err()
}
func (inertDriver) Stop(context.Context, driver.Handle, time.Duration) error { return nil }
func (inertDriver) List(context.Context, string) ([]driver.Found, error)     { return nil, nil }
func (inertDriver) Adopt(context.Context, driver.Handle) error               { return errInert }
