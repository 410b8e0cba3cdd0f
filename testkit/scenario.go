package testkit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warmpool/warmpool/actors"
	"github.com/warmpool/warmpool/clock"
	"github.com/warmpool/warmpool/messages"
)

// Scenario runs one pool in-process on a fake clock, the fake driver and
// in-memory stores, and records it: a deterministic stand-in for a node, to
// write a scenario by hand, assert on its events and state, and save its
// recording for `warmpool replay` or Replay. Its methods wait for the pool's
// answer; time moves only with Advance.
type Scenario struct {
	Clock  *clock.Fake
	Driver *FakeDriver
	Leases *actors.MemoryLeases
	Log    *EventLog

	cfg    messages.PoolConfig
	sys    *actor.ActorSystem
	pool   *actors.Pool
	snaps  *actors.MemorySnapshots
	rec    *actors.WriterRecorder
	buf    *Buffer
	mu     sync.Mutex
	seq    int
	closed bool
}

// Epoch is where a Scenario's clock starts.
var Epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// NewScenario starts a pool named cfg.Name (default "scenario") whose zero
// settings take the defaults; the driver is the fake one.
func NewScenario(cfg messages.PoolConfig) (*Scenario, error) {
	if cfg.Name == "" {
		cfg.Name = "scenario"
	}
	cfg.Driver = messages.DriverFake
	logger := slog.New(slog.DiscardHandler)
	clk := clock.NewFake(Epoch)
	s := &Scenario{
		Clock: clk, Driver: NewFakeDriver(clk), Leases: actors.NewMemoryLeases(), Log: &EventLog{},
		cfg: cfg, snaps: actors.NewMemorySnapshots(), buf: &Buffer{},
		sys: actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return logger })),
	}
	s.rec = actors.NewWriterRecorder(s.buf)
	if err := s.spawn(nil); err != nil {
		s.sys.Shutdown()
		return nil, err
	}
	return s, nil
}

func (s *Scenario) options() actors.PoolOptions {
	return actors.PoolOptions{
		Config: s.cfg, Node: "scenario-node", Driver: s.Driver, Clock: s.Clock, Seed: 1,
		NewID: func() string {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.seq++
			return fmt.Sprintf("slot-%04d", s.seq)
		},
		Logger: slog.New(slog.DiscardHandler), Leases: s.Leases, Snapshots: s.snaps, Events: s.Log, Recorder: s.rec,
	}
}

func (s *Scenario) spawn(rec *actors.Recovery) error {
	o := s.options()
	o.Recovery = rec
	p, err := actors.SpawnPool(s.sys.Root, o)
	if err != nil {
		return err
	}
	s.pool = p
	return nil
}

func ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 10*time.Second)
}

// Acquire acquires the container of session id.
func (s *Scenario) Acquire(id string) (messages.Lease, error) {
	c, cancel := ctx()
	defer cancel()
	return s.pool.Acquire(c, id)
}

// Release ends the lease of session id.
func (s *Scenario) Release(id string) (messages.Released, error) {
	c, cancel := ctx()
	defer cancel()
	return s.pool.Release(c, id)
}

// Renew extends the lease of session id.
func (s *Scenario) Renew(id string) (messages.Lease, error) {
	c, cancel := ctx()
	defer cancel()
	return s.pool.Renew(c, id)
}

// Warmup starts up to n more containers.
func (s *Scenario) Warmup(n int) (messages.WarmupReply, error) {
	c, cancel := ctx()
	defer cancel()
	return s.pool.Warmup(c, n)
}

// ShutdownAll stops every container and ends every lease.
func (s *Scenario) ShutdownAll() (messages.ShutdownReply, error) {
	c, cancel := ctx()
	defer cancel()
	return s.pool.ShutdownAll(c)
}

// Stats returns the pool's counts.
func (s *Scenario) Stats() (messages.Stats, error) {
	c, cancel := ctx()
	defer cancel()
	return s.pool.Stats(c)
}

// State returns the pool's slots and sessions.
func (s *Scenario) State() (actors.PoolState, error) {
	c, cancel := ctx()
	defer cancel()
	return s.pool.State(c)
}

// Kill makes the container of slot die, as a crash would.
func (s *Scenario) Kill(slot string) bool { return s.Driver.Kill(slot) }

// Advance moves the clock: refreshes and other timers that fall due run.
func (s *Scenario) Advance(d time.Duration) { s.Clock.Advance(d) }

// Settle waits until no container is starting or stopping, no lease write
// is in flight, and the pool's slots are exactly the containers that run.
func (s *Scenario) Settle() error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		before := fmt.Sprint(s.Driver.LiveSlots())
		st, err := s.State()
		if err != nil {
			return err
		}
		var slots []string
		busy := st.Writes > 0
		for _, v := range st.Slots {
			slots = append(slots, v.ID)
			busy = busy || v.State == "warming" || v.State == "draining"
		}
		// The driver is read before and after the pool, so that a change
		// in between cannot pass for a match.
		if !busy && before == fmt.Sprint(slots) && before == fmt.Sprint(s.Driver.LiveSlots()) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the pool did not settle: slots %+v, containers %s", st.Slots, before)
		}
		time.Sleep(time.Millisecond)
	}
}

// Restart stops the pool as a node would on exit and starts it again from
// what its stores and driver hold.
func (s *Scenario) Restart(onExit actors.OnExit) error {
	c, cancel := ctx()
	defer cancel()
	if err := s.pool.Stop(c, onExit); err != nil {
		return err
	}
	rec, err := actors.LoadRecovery(c, s.options())
	if err != nil {
		return err
	}
	return s.spawn(&rec)
}

// Close stops the pool and its containers and ends the recording.
func (s *Scenario) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	c, cancel := ctx()
	defer cancel()
	err := s.pool.Stop(c, actors.ExitStop)
	err = errors.Join(err, s.rec.Close())
	s.sys.Shutdown()
	if n := s.Driver.Live(); n != 0 {
		err = errors.Join(err, fmt.Errorf("%d containers still run", n))
	}
	return err
}

// Recording ends the recording (call it once the scenario is done, before
// Close; later inputs are not recorded) and returns it as JSON lines.
func (s *Scenario) Recording() ([]byte, error) {
	if err := s.rec.Close(); err != nil {
		return nil, err
	}
	return s.buf.Bytes(), nil
}

// Replay replays a recording and returns each pool's result; a divergence
// is not an error here: look at the results' Divergences.
func Replay(recording io.Reader) ([]actors.ReplayResult, error) {
	inputs, err := actors.ReadInputs(recording)
	if err != nil {
		return nil, err
	}
	c, cancel := ctx()
	defer cancel()
	return actors.Replay(c, inputs, nil)
}

// ReplayFile replays a recording file, as `warmpool replay` does.
func ReplayFile(path string) ([]actors.ReplayResult, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Replay(f)
}

// Buffer is a bytes.Buffer that goroutines may write while a test reads it
// (a logger's destination, a recording).
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// Bytes returns a copy of what was written.
func (l *Buffer) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.b.Bytes())
}

// String returns what was written.
func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
