package actors_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warmpool/warmpool/actors"
	"github.com/warmpool/warmpool/clock"
	"github.com/warmpool/warmpool/driver"
	"github.com/warmpool/warmpool/messages"
	"github.com/warmpool/warmpool/testkit"
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

type rig struct {
	t         *testing.T
	sys       *actor.ActorSystem
	logger    *slog.Logger
	cfg       messages.PoolConfig
	clock     *clock.Fake
	drv       *testkit.FakeDriver
	leases    *actors.MemoryLeases
	snapshots *actors.MemorySnapshots
	newID     func() string
	events    *testkit.EventLog
	tweak     func(*actors.PoolOptions)
	pool      *actors.Pool
}

// newRig runs one pool on a fake clock, the fake driver and in-memory
// stores. cfg's zero fields take the defaults; the driver is "fake".
func newRig(t *testing.T, cfg messages.PoolConfig, plan func(driver.Spec) testkit.FakePlan) *rig {
	t.Helper()
	return newRigWith(t, cfg, plan, nil)
}

// newRigWith is newRig with a last say on the pool's options.
func newRigWith(t *testing.T, cfg messages.PoolConfig, plan func(driver.Spec) testkit.FakePlan, tweak func(*actors.PoolOptions)) *rig {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(testWriter(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return logger }))
	clk := clock.NewFake(epoch)
	drv := testkit.NewFakeDriver(clk)
	if plan != nil {
		drv.SetPlan(plan)
	}
	if cfg.Name == "" {
		cfg.Name = "test"
	}
	cfg.Driver = messages.DriverFake
	seq := 0
	var mu sync.Mutex
	r := &rig{t: t, sys: sys, logger: logger, cfg: cfg, clock: clk, drv: drv,
		leases: actors.NewMemoryLeases(), snapshots: actors.NewMemorySnapshots(), events: &testkit.EventLog{},
		newID: func() string { mu.Lock(); defer mu.Unlock(); seq++; return fmt.Sprintf("slot-%03d", seq) },
		tweak: tweak,
	}
	r.pool = r.spawn(nil)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := r.pool.Stop(ctx, actors.ExitStop); err != nil {
			t.Errorf("stop: %v", err)
		}
		if n := drv.Live(); n != 0 {
			t.Errorf("%d containers left after Stop", n)
		}
		sys.Shutdown()
	})
	return r
}

func (r *rig) options() actors.PoolOptions {
	o := actors.PoolOptions{
		Config: r.cfg, Node: "n1", Driver: r.drv, Clock: r.clock, Logger: r.logger, NewID: r.newID,
		Leases: r.leases, Snapshots: r.snapshots, Events: r.events, Seed: 42,
	}
	if r.tweak != nil {
		r.tweak(&o)
	}
	return o
}

func (r *rig) spawn(rec *actors.Recovery) *actors.Pool {
	r.t.Helper()
	o := r.options()
	o.Recovery = rec
	pool, err := actors.SpawnPool(r.sys.Root, o)
	if err != nil {
		r.t.Fatal(err)
	}
	return pool
}

// restart stops the pool as a node exit would and starts it again from
// what the stores and the driver hold; between the two, down runs (the node
// is down: time passes, containers die).
func (r *rig) restart(onExit actors.OnExit, down func()) {
	r.t.Helper()
	if err := r.pool.Stop(r.ctx(), onExit); err != nil {
		r.t.Fatal(err)
	}
	if down != nil {
		down()
	}
	rec, err := actors.LoadRecovery(r.ctx(), r.options())
	if err != nil {
		r.t.Fatal(err)
	}
	r.pool = r.spawn(&rec)
}

func (r *rig) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	r.t.Cleanup(cancel)
	return ctx
}

func (r *rig) stats() messages.Stats {
	r.t.Helper()
	st, err := r.pool.Stats(r.ctx())
	if err != nil {
		r.t.Fatal(err)
	}
	return st
}

// waitStats polls until the counts match.
func (r *rig) waitStats(warm, acquired, warming, draining int) {
	r.t.Helper()
	testkit.CheckFor(r.t, 5*time.Second, 2*time.Millisecond, func() error {
		st := r.stats()
		if st.Warm != warm || st.Acquired != acquired || st.Warming != warming || st.Draining != draining {
			return fmt.Errorf("stats warm=%d acquired=%d warming=%d draining=%d; want %d %d %d %d",
				st.Warm, st.Acquired, st.Warming, st.Draining, warm, acquired, warming, draining)
		}
		if st.Total != warm+acquired+warming+draining {
			return fmt.Errorf("total %d is not the sum of the states", st.Total)
		}
		return nil
	})
}

// waitStarted polls until the driver has started n containers: only then
// are their timers on the fake clock, and an Advance reaches them.
func (r *rig) waitStarted(n int) {
	r.t.Helper()
	testkit.CheckFor(r.t, 5*time.Second, time.Millisecond, func() error {
		if got := r.drv.Started(); got != n {
			return fmt.Errorf("started %d containers; want %d", got, n)
		}
		return nil
	})
}

func (r *rig) acquire(id string) messages.Lease {
	r.t.Helper()
	l, err := r.pool.Acquire(r.ctx(), id)
	if err != nil {
		r.t.Fatalf("acquire %q: %v", id, err)
	}
	return l
}

func TestWarmsToTarget(t *testing.T) {
	r := newRig(t, messages.PoolConfig{WarmTarget: 3}, nil)
	r.waitStats(3, 0, 0, 0)
	if got := r.drv.Live(); got != 3 {
		t.Fatalf("live containers = %d; want 3", got)
	}
}

func TestAcquireIsStickyAndRefills(t *testing.T) {
	r := newRig(t, messages.PoolConfig{WarmTarget: 1, AcquireTimeout: messages.Duration(time.Minute)}, nil)
	r.waitStats(1, 0, 0, 0)
	l := r.acquire("alice")
	if l.Cold || l.Slot == "" || l.Endpoint == "" || l.ID != "alice" || l.Pool != "test" || l.Node != "n1" {
		t.Fatalf("lease = %+v", l)
	}
	if want := epoch.Add(time.Minute); !l.ExpiresAt.Equal(want) {
		t.Fatalf("expires_at = %s; want %s", l.ExpiresAt, want)
	}
	r.waitStats(1, 1, 0, 0) // a fresh container replaced the one handed out
	r.clock.Advance(10 * time.Second)
	again := r.acquire("alice")
	if again.Slot != l.Slot || again.Endpoint != l.Endpoint {
		t.Fatalf("re-acquire gave slot %s; want sticky %s", again.Slot, l.Slot)
	}
	if want := epoch.Add(70 * time.Second); !again.ExpiresAt.Equal(want) {
		t.Fatalf("re-acquire did not extend the lease: %s; want %s", again.ExpiresAt, want)
	}
	bob := r.acquire("bob")
	if bob.Slot == l.Slot {
		t.Fatal("two sessions share a slot")
	}
}

func TestConcurrentAcquiresOfOneIDShareOneColdStart(t *testing.T) {
	r := newRig(t, messages.PoolConfig{WarmTarget: 0}, func(driver.Spec) testkit.FakePlan {
		return testkit.FakePlan{ReadyAfter: 2 * time.Second}
	})
	const n = 20
	leases := make(chan messages.Lease, n)
	errs := make(chan error, n)
	for range n {
		go func() {
			l, err := r.pool.Acquire(r.ctx(), "same")
			if err != nil {
				errs <- err
				return
			}
			leases <- l
		}()
	}
	testkit.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		if st := r.stats(); st.Waiting != n || st.Warming != 1 {
			return fmt.Errorf("waiting=%d warming=%d; want %d and 1", st.Waiting, st.Warming, n)
		}
		return nil
	})
	r.waitStarted(1)
	r.clock.Advance(2 * time.Second)
	var slot string
	for range n {
		select {
		case err := <-errs:
			t.Fatal(err)
		case l := <-leases:
			if !l.Cold {
				t.Fatal("a cold start is not marked cold")
			}
			if slot == "" {
				slot = l.Slot
			} else if l.Slot != slot {
				t.Fatalf("same id got slots %s and %s", slot, l.Slot)
			}
		}
	}
	if got := r.drv.Started(); got != 1 {
		t.Fatalf("started %d containers; want 1", got)
	}
	if l := r.acquire("same"); l.Cold || l.Slot != slot {
		t.Fatalf("a sticky re-acquire after the cold start = %+v; want the same slot, not cold", l)
	}
}

func TestReleaseReusesByDefault(t *testing.T) {
	r := newRig(t, messages.PoolConfig{WarmTarget: 1}, nil)
	r.waitStats(1, 0, 0, 0)
	l := r.acquire("a")
	r.waitStats(1, 1, 0, 0)
	rel, err := r.pool.Release(r.ctx(), "a")
	if err != nil || rel.Replaced || rel.Slot != l.Slot {
		t.Fatalf("release = %+v, %v", rel, err)
	}
	r.waitStats(2, 0, 0, 0) // back to warm; the pool keeps what it has
	if _, err := r.pool.Release(r.ctx(), "a"); !errors.Is(err, messages.ErrUnknownLease) {
		t.Fatalf("second release: %v; want ErrUnknownLease", err)
	}
	if _, err := r.pool.Renew(r.ctx(), "a"); !errors.Is(err, messages.ErrUnknownLease) {
		t.Fatalf("renew after release: %v; want ErrUnknownLease", err)
	}
}

func TestReleaseReplace(t *testing.T) {
	r := newRig(t, messages.PoolConfig{WarmTarget: 1, OnRelease: messages.OnReleaseReplace}, nil)
	r.waitStats(1, 0, 0, 0)
	l := r.acquire("a")
	r.waitStats(1, 1, 0, 0)
	rel, err := r.pool.Release(r.ctx(), "a")
	if err != nil || !rel.Replaced {
		t.Fatalf("release = %+v, %v", rel, err)
	}
	r.waitStats(1, 0, 0, 0)
	for _, s := range r.drv.LiveSlots() {
		if s == l.Slot {
			t.Fatalf("released container %s still runs", s)
		}
	}
	if b := r.acquire("b"); b.Slot == l.Slot {
		t.Fatal("a replaced container was handed out again")
	}
}

func TestLeaseExpiresAndRenewExtends(t *testing.T) {
	r := newRig(t, messages.PoolConfig{WarmTarget: 1, AcquireTimeout: messages.Duration(time.Minute),
		RefreshInterval: messages.Duration(10 * time.Second)}, nil)
	r.waitStats(1, 0, 0, 0)
	a := r.acquire("a")
	r.acquire("b")
	r.waitStats(1, 2, 0, 0)
	r.clock.Advance(50 * time.Second)
	if l, err := r.pool.Renew(r.ctx(), "a"); err != nil || !l.ExpiresAt.Equal(epoch.Add(110*time.Second)) || l.Slot != a.Slot {
		t.Fatalf("renew = %+v, %v", l, err)
	}
	// b expires at 60s and is reaped by the refresh at 60s; a lives to 110s.
	r.clock.Advance(10 * time.Second)
	r.waitStats(2, 1, 0, 0)
	if _, err := r.pool.Renew(r.ctx(), "b"); !errors.Is(err, messages.ErrUnknownLease) {
		t.Fatalf("renew of an expired lease: %v", err)
	}
	if l := r.acquire("a"); l.Slot != a.Slot {
		t.Fatal("a lost its container before expiry")
	}
}

func TestExpiredLeaseIsNotStickyEvenBeforeTheRefresh(t *testing.T) {
	r := newRig(t, messages.PoolConfig{WarmTarget: 1, AcquireTimeout: messages.Duration(time.Minute),
		RefreshInterval: messages.Duration(time.Hour), OnRelease: messages.OnReleaseReplace}, nil)
	r.waitStats(1, 0, 0, 0)
	a := r.acquire("a")
	r.waitStats(1, 1, 0, 0)
	r.clock.Advance(time.Minute)
	if l := r.acquire("a"); l.Slot == a.Slot {
		t.Fatal("an expired lease was extended")
	}
}

func TestExhaustedAtMaxInstances(t *testing.T) {
	r := newRig(t, messages.PoolConfig{WarmTarget: 0, MaxInstances: 2}, nil)
	r.acquire("a")
	r.acquire("b")
	_, err := r.pool.Acquire(r.ctx(), "c")
	if !errors.Is(err, messages.ErrExhausted) {
		t.Fatalf("third acquire: %v; want ErrExhausted", err)
	}
	if r.stats().Total != 2 {
		t.Fatal("exceeded maxInstances")
	}
	if _, err := r.pool.Release(r.ctx(), "a"); err != nil {
		t.Fatal(err)
	}
	if l := r.acquire("c"); l.Cold {
		t.Fatal("the released warm container was not reused")
	}
}

func TestDeadContainersAreReplaced(t *testing.T) {
	r := newRig(t, messages.PoolConfig{WarmTarget: 1}, nil)
	r.waitStats(1, 0, 0, 0)
	warm := r.drv.LiveSlots()[0]
	r.drv.Kill(warm)
	testkit.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		if s := r.drv.LiveSlots(); len(s) != 1 || s[0] == warm {
			return fmt.Errorf("live slots %v", s)
		}
		return nil
	})
	r.waitStats(1, 0, 0, 0)
	l := r.acquire("a")
	r.waitStats(1, 1, 0, 0)
	r.drv.Kill(l.Slot)
	r.waitStats(1, 0, 0, 0)
	if again := r.acquire("a"); again.Slot == l.Slot {
		t.Fatal("a session kept a dead container")
	}
}

func TestStartFailuresBackOff(t *testing.T) {
	var mu sync.Mutex
	failing := true
	r := newRig(t, messages.PoolConfig{WarmTarget: 1}, func(driver.Spec) testkit.FakePlan {
		mu.Lock()
		defer mu.Unlock()
		if failing {
			return testkit.FakePlan{StartErr: errors.New("no such image")}
		}
		return testkit.FakePlan{}
	})
	testkit.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		st := r.stats()
		if st.StartFailures != 1 || st.BackoffUntil == nil || st.LastError == "" || st.Total != 0 {
			return fmt.Errorf("stats %+v", st)
		}
		return nil
	})
	// No retry while backing off: time stands still, nothing starts.
	if st := r.stats(); st.StartFailures != 1 {
		t.Fatalf("retried during backoff: %+v", st)
	}
	if _, err := r.pool.Acquire(r.ctx(), "x"); !errors.Is(err, messages.ErrNotReady) {
		t.Fatalf("acquire during backoff: %v; want ErrNotReady", err)
	}
	r.clock.Advance(2 * time.Second) // past the first backoff (1s ±20%)
	testkit.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		if st := r.stats(); st.StartFailures != 2 {
			return fmt.Errorf("start failures %d; want 2", st.StartFailures)
		}
		return nil
	})
	mu.Lock()
	failing = false
	mu.Unlock()
	r.clock.Advance(3 * time.Second) // past the second backoff (2s ±20%)
	r.waitStats(1, 0, 0, 0)
	if st := r.stats(); st.StartFailures != 0 || st.BackoffUntil != nil {
		t.Fatalf("a success did not reset the backoff: %+v", st)
	}
}

func TestNeverReadyTimesOut(t *testing.T) {
	r := newRig(t, messages.PoolConfig{WarmTarget: 0, Template: messages.Template{StartTimeout: messages.Duration(5 * time.Second)}}, func(driver.Spec) testkit.FakePlan {
		return testkit.FakePlan{NeverReady: true}
	})
	errc := make(chan error, 1)
	go func() { _, err := r.pool.Acquire(r.ctx(), "a"); errc <- err }()
	r.waitStats(0, 0, 1, 0)
	r.waitStarted(1)
	r.clock.Advance(5 * time.Second)
	if err := <-errc; !errors.Is(err, messages.ErrNotReady) {
		t.Fatalf("acquire of a never-ready template: %v; want ErrNotReady", err)
	}
	r.waitStats(0, 0, 0, 0)
	if r.drv.Live() != 0 {
		t.Fatal("the never-ready container was not stopped")
	}
	if st := r.stats(); st.StartFailures != 1 {
		t.Fatalf("start failures = %d (%+v)", st.StartFailures, st)
	}
}

func TestShutdownAllStopsEverythingAndPauses(t *testing.T) {
	r := newRig(t, messages.PoolConfig{WarmTarget: 2}, nil)
	r.waitStats(2, 0, 0, 0)
	r.acquire("a")
	r.waitStats(2, 1, 0, 0)
	rep, err := r.pool.ShutdownAll(r.ctx())
	if err != nil || rep.Stopped != 3 || rep.LeasesEnded != 1 {
		t.Fatalf("shutdown = %+v, %v", rep, err)
	}
	r.waitStats(0, 0, 0, 0)
	if st := r.stats(); !st.Paused || r.drv.Live() != 0 {
		t.Fatalf("after shutdown: %+v, live %d", st, r.drv.Live())
	}
	r.clock.Advance(time.Hour) // refreshes do not refill a paused pool
	r.waitStats(0, 0, 0, 0)
	if _, err := r.pool.Renew(r.ctx(), "a"); !errors.Is(err, messages.ErrUnknownLease) {
		t.Fatalf("lease survived shutdown: %v", err)
	}
	l := r.acquire("a")
	if !l.Cold {
		t.Fatal("acquire after shutdown should be a cold start")
	}
	r.waitStats(2, 1, 0, 0) // and the pool is warm again
}

func TestWarmup(t *testing.T) {
	r := newRig(t, messages.PoolConfig{WarmTarget: 1, MaxInstances: 4}, nil)
	r.waitStats(1, 0, 0, 0)
	rep, err := r.pool.Warmup(r.ctx(), 10)
	if err != nil || rep.Requested != 10 || rep.Started != 3 {
		t.Fatalf("warmup = %+v, %v", rep, err)
	}
	r.waitStats(4, 0, 0, 0)
	if _, err := r.pool.Warmup(r.ctx(), -1); !errors.Is(err, messages.ErrBadRequest) {
		t.Fatalf("negative warmup: %v", err)
	}
	if rep, err := r.pool.Warmup(r.ctx(), 0); err != nil || rep.Started != 0 {
		t.Fatalf("warmup 0 = %+v, %v", rep, err)
	}
}

func TestBadIDs(t *testing.T) {
	r := newRig(t, messages.PoolConfig{WarmTarget: 0}, nil)
	for _, id := range []string{"", string(make([]byte, 257)), "\xff\xfe"} {
		if _, err := r.pool.Acquire(r.ctx(), id); !errors.Is(err, messages.ErrInvalidID) {
			t.Errorf("acquire(%q): %v; want ErrInvalidID", id, err)
		}
		if _, err := r.pool.Release(r.ctx(), id); !errors.Is(err, messages.ErrInvalidID) {
			t.Errorf("release(%q): %v; want ErrInvalidID", id, err)
		}
		if _, err := r.pool.Renew(r.ctx(), id); !errors.Is(err, messages.ErrInvalidID) {
			t.Errorf("renew(%q): %v; want ErrInvalidID", id, err)
		}
	}
	long := string(make([]byte, 256))
	if _, err := r.pool.Acquire(r.ctx(), long); err != nil {
		t.Errorf("a 256-byte id was refused: %v", err)
	}
}

func TestStopFailsWaitersAndLaterRequests(t *testing.T) {
	r := newRig(t, messages.PoolConfig{WarmTarget: 0}, func(driver.Spec) testkit.FakePlan {
		return testkit.FakePlan{NeverReady: true}
	})
	errc := make(chan error, 1)
	go func() { _, err := r.pool.Acquire(r.ctx(), "a"); errc <- err }()
	r.waitStats(0, 0, 1, 0)
	if err := r.pool.Stop(r.ctx(), actors.ExitStop); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, messages.ErrNotReady) {
		t.Fatalf("waiter: %v", err)
	}
	if _, err := r.pool.Acquire(r.ctx(), "b"); !errors.Is(err, messages.ErrNotReady) {
		t.Fatalf("acquire after stop: %v", err)
	}
	if r.drv.Live() != 0 {
		t.Fatal("containers left after stop")
	}
}

func testWriter() io.Writer {
	if testing.Verbose() {
		return os.Stderr
	}
	return io.Discard
}

func TestRestartLeavingContainersRestoresLeases(t *testing.T) {
	r := newRig(t, messages.PoolConfig{WarmTarget: 1, AcquireTimeout: messages.Duration(time.Minute)}, nil)
	r.waitStats(1, 0, 0, 0)
	a, b := r.acquire("a"), r.acquire("b")
	r.waitStats(1, 2, 0, 0)
	if a.Revision == 0 || b.Revision == 0 {
		t.Fatalf("leases without a revision: %+v %+v", a, b)
	}
	started := r.drv.Started()

	r.restart(actors.ExitLeave, nil)
	r.waitStats(1, 2, 0, 0)
	if got := r.drv.Started(); got != started {
		t.Fatalf("the restart started %d containers; want it to adopt all", got-started)
	}
	for _, want := range []messages.Lease{a, b} {
		l := r.acquire(want.ID)
		if l.Slot != want.Slot || l.Endpoint != want.Endpoint || l.Cold {
			t.Fatalf("after restart %s got %+v; want slot %s", want.ID, l, want.Slot)
		}
		if l.Revision <= want.Revision {
			t.Fatalf("re-acquire did not write the lease: revision %d after %d", l.Revision, want.Revision)
		}
	}
	if c := r.acquire("c"); c.Slot == a.Slot || c.Slot == b.Slot || c.Cold {
		t.Fatalf("a new session got %+v", c)
	}
}

func TestRestartEndsExpiredAndOrphanedLeasesAndStopsOrphans(t *testing.T) {
	r := newRig(t, messages.PoolConfig{WarmTarget: 1, AcquireTimeout: messages.Duration(time.Minute),
		OnRelease: messages.OnReleaseReplace}, nil)
	r.waitStats(1, 0, 0, 0)
	r.clock.Advance(30 * time.Second)
	r.acquire("old")          // expires at 90s
	dead := r.acquire("dead") // its container dies while the node is down
	r.clock.Advance(30 * time.Second)
	keep := r.acquire("keep") // expires at 120s
	r.waitStats(1, 3, 0, 0)

	r.restart(actors.ExitLeave, func() {
		r.clock.Advance(40 * time.Second) // now 100s: old has expired, keep has not
		r.drv.Kill(dead.Slot)
		// A container this node started but never recorded (the node died
		// between start and snapshot): recovery must stop it.
		if _, err := r.drv.Start(r.ctx(), driver.Spec{Pool: "test", Slot: "stray", Node: "n1"}); err != nil {
			t.Fatal(err)
		}
	})
	testkit.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		st := r.stats()
		if st.Acquired != 1 || st.Draining != 0 || st.Warming != 0 {
			return fmt.Errorf("stats %+v", st)
		}
		for _, s := range r.drv.LiveSlots() {
			if s == "stray" || s == dead.Slot {
				return fmt.Errorf("container %s still runs", s)
			}
		}
		return nil
	})
	leases, _ := r.leases.List(r.ctx(), "test")
	if len(leases) != 1 || leases[0].Record.ID != "keep" {
		t.Fatalf("stored leases after recovery: %+v; want only keep", leases)
	}
	if l := r.acquire("keep"); l.Slot != keep.Slot {
		t.Fatal("keep lost its container")
	}
	for _, id := range []string{"old", "dead"} {
		if _, err := r.pool.Renew(r.ctx(), id); !errors.Is(err, messages.ErrUnknownLease) {
			t.Fatalf("renew %s after recovery: %v; want ErrUnknownLease", id, err)
		}
	}
	if l := r.acquire("dead"); l.Slot == dead.Slot {
		t.Fatal("dead got its dead container back")
	}
	// The snapshots name exactly the slots that run.
	testkit.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		snaps, _ := r.snapshots.List(r.ctx(), "test", "n1")
		var names []string
		for _, s := range snaps {
			names = append(names, s.Slot)
		}
		if live := r.drv.LiveSlots(); fmt.Sprint(names) != fmt.Sprint(live) {
			return fmt.Errorf("snapshots %v; live containers %v", names, live)
		}
		return nil
	})
}

func TestRestartStoppingContainersEndsLeases(t *testing.T) {
	r := newRig(t, messages.PoolConfig{WarmTarget: 1}, nil)
	r.waitStats(1, 0, 0, 0)
	a := r.acquire("a")
	r.restart(actors.ExitStop, func() {
		if n := r.drv.Live(); n != 0 {
			t.Fatalf("%d containers run after a stop with ExitStop", n)
		}
	})
	r.waitStats(1, 0, 0, 0)
	if leases, _ := r.leases.List(r.ctx(), "test"); len(leases) != 0 {
		t.Fatalf("leases left after ExitStop: %+v", leases)
	}
	if l := r.acquire("a"); l.Slot == a.Slot {
		t.Fatal("a stopped container came back")
	}
}

func TestStaleWriterLosesTheLease(t *testing.T) {
	r := newRig(t, messages.PoolConfig{WarmTarget: 1}, nil)
	r.waitStats(1, 0, 0, 0)
	a := r.acquire("a")
	// Another writer takes a's lease over (a newer revision).
	r.leases.Overwrite(actors.LeaseRecord{Pool: "test", ID: "a", Slot: "elsewhere", Node: "n2", ExpiresAt: epoch.Add(time.Hour)})
	if _, err := r.pool.Renew(r.ctx(), "a"); !errors.Is(err, messages.ErrUnknownLease) {
		t.Fatalf("renew by the stale writer: %v; want ErrUnknownLease", err)
	}
	// The loser never hands the container out again: it is drained.
	testkit.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		for _, s := range r.drv.LiveSlots() {
			if s == a.Slot {
				return fmt.Errorf("the lost container %s still runs", s)
			}
		}
		return nil
	})
	// A create that finds the key taken fails and keeps the container.
	r.waitStats(1, 0, 0, 0)
	r.leases.Overwrite(actors.LeaseRecord{Pool: "test", ID: "b", Slot: "elsewhere", Node: "n2", ExpiresAt: epoch.Add(time.Hour)})
	if _, err := r.pool.Acquire(r.ctx(), "b"); !errors.Is(err, messages.ErrNotReady) {
		t.Fatalf("acquire of an id held by another writer: %v; want ErrNotReady", err)
	}
	r.waitStats(2, 0, 0, 0) // back to warm, beside the refill the acquire started
}

func TestLeaseStoreFailureLosesNothing(t *testing.T) {
	r := newRig(t, messages.PoolConfig{WarmTarget: 1}, nil)
	r.waitStats(1, 0, 0, 0)
	r.leases.FailWith(func(op string, _ actors.LeaseRecord) error { return errors.New("disk full") })
	if _, err := r.pool.Acquire(r.ctx(), "a"); !errors.Is(err, messages.ErrNotReady) || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("acquire while the store fails: %v", err)
	}
	r.waitStats(2, 0, 0, 0) // back to warm, beside the refill the acquire started
	r.leases.FailWith(nil)
	a := r.acquire("a")
	r.leases.FailWith(func(op string, _ actors.LeaseRecord) error { return errors.New("disk full") })
	if _, err := r.pool.Release(r.ctx(), "a"); !errors.Is(err, messages.ErrNotReady) {
		t.Fatalf("release while the store fails: %v", err)
	}
	r.leases.FailWith(nil)
	if l := r.acquire("a"); l.Slot != a.Slot {
		t.Fatal("a failed release lost the lease")
	}
	if _, err := r.pool.Release(r.ctx(), "a"); err != nil {
		t.Fatal(err)
	}
}

// TestLeaseCreateOfUnknownOutcome: a create that timed out may have
// recorded the container as the session's. The caller is told to retry,
// and that container goes to no one else: it is stopped, and the pool
// refills.
func TestLeaseCreateOfUnknownOutcome(t *testing.T) {
	r := newRig(t, messages.PoolConfig{WarmTarget: 1}, nil)
	r.waitStats(1, 0, 0, 0)
	before := r.drv.LiveSlots()
	r.leases.FailWith(func(op string, _ actors.LeaseRecord) error {
		return fmt.Errorf("%w: timed out", actors.ErrOutcomeUnknown)
	})
	if _, err := r.pool.Acquire(r.ctx(), "a"); !errors.Is(err, messages.ErrNotReady) {
		t.Fatalf("acquire whose lease write timed out: %v; want ErrNotReady", err)
	}
	r.leases.FailWith(nil)
	r.waitStats(1, 0, 0, 0) // the refill only
	for _, slot := range r.drv.LiveSlots() {
		if slices.Contains(before, slot) {
			t.Fatalf("slot %s, whose lease write had an unknown outcome, still runs", slot)
		}
	}
	if l := r.acquire("a"); slices.Contains(before, l.Slot) {
		t.Fatalf("the retry got slot %s again", l.Slot)
	}
}

// TestLeaseWrittenAfterCallersGaveUp: a create that lands after every
// caller of the acquire stopped waiting (a slow write while NATS elects a
// leader) makes no session: the lease is ended at once and the container
// goes back to the pool. A caller without a deadline, or one still
// waiting, gets its lease as usual.
func TestLeaseWrittenAfterCallersGaveUp(t *testing.T) {
	for _, tt := range []struct {
		name      string
		deadlines []time.Duration // of the acquires; 0: none
		want      bool            // whether the session is made
	}{
		{"the only caller gave up", []time.Duration{time.Second}, false},
		{"every caller gave up", []time.Duration{time.Second, 1500 * time.Millisecond}, false},
		{"one caller still waits", []time.Duration{time.Second, time.Minute}, true},
		{"one caller has no deadline", []time.Duration{time.Second, 0}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, messages.PoolConfig{WarmTarget: 1}, nil)
			r.waitStats(1, 0, 0, 0)
			gate, writing := make(chan struct{}), make(chan struct{}, 1)
			r.leases.FailWith(func(op string, _ actors.LeaseRecord) error {
				if op == "create" {
					writing <- struct{}{}
					<-gate
				}
				return nil
			})
			replies := make(chan error, len(tt.deadlines))
			for i, d := range tt.deadlines {
				var deadline time.Time
				if d > 0 {
					deadline = r.clock.Now().Add(d)
				}
				r.pool.Send(messages.Acquire{ID: "a", Deadline: deadline, Reply: func(_ messages.Lease, err error) { replies <- err }})
				if i == 0 {
					<-writing // the create is in flight; the others join it
				}
			}
			r.waitStats(1, 1, 0, 0) // reserved, beside the refill
			r.clock.Advance(2 * time.Second)
			close(gate)
			for range tt.deadlines {
				if err := <-replies; (err == nil) != tt.want {
					t.Fatalf("reply %v; want a lease: %v", err, tt.want)
				}
			}
			r.leases.FailWith(nil)
			if tt.want {
				r.waitStats(1, 1, 0, 0)
				return
			}
			r.waitStats(2, 0, 0, 0) // the container is back, warm
			testkit.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
				if ls, err := r.leases.List(r.ctx(), "test"); err != nil || len(ls) != 0 {
					return fmt.Errorf("leases %+v %v; want none", ls, err)
				}
				return nil
			})
		})
	}
}

func TestEventsTellTheLifeOfASession(t *testing.T) {
	r := newRig(t, messages.PoolConfig{WarmTarget: 1, AcquireTimeout: messages.Duration(time.Minute),
		RefreshInterval: messages.Duration(10 * time.Second)}, nil)
	r.waitStats(1, 0, 0, 0)
	a := r.acquire("a")
	r.acquire("a")
	if _, err := r.pool.Release(r.ctx(), "a"); err != nil {
		t.Fatal(err)
	}
	r.acquire("b")
	r.clock.Advance(time.Minute) // b expires; the refresh at 60s reaps it
	testkit.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		if got := r.events.Kinds(testkit.Session("b")); fmt.Sprint(got) != fmt.Sprint([]string{
			messages.EventSlotAcquired, messages.EventLeaseCreated, messages.EventLeaseExpired}) {
			return fmt.Errorf("b's events: %v", got)
		}
		return nil
	})
	want := []string{messages.EventSlotAcquired, messages.EventLeaseCreated, messages.EventLeaseRenewed, messages.EventLeaseReleased}
	if got := r.events.Kinds(testkit.Session("a")); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("a's events: %v; want %v", got, want)
	}
	want = []string{messages.EventSlotWarming, messages.EventSlotWarm, messages.EventSlotAcquired, messages.EventLeaseCreated,
		messages.EventLeaseRenewed, messages.EventLeaseReleased, messages.EventSlotReleased}
	if got := r.events.Kinds(testkit.Slot(a.Slot)); fmt.Sprint(got[:len(want)]) != fmt.Sprint(want) {
		t.Fatalf("slot %s's events: %v; want %v first", a.Slot, got, want)
	}
	var last uint64
	for _, e := range r.events.Events() {
		if e.Seq != last+1 || e.Pool != "test" || e.Node != "n1" || e.Type != messages.TypeEvent || e.Time.IsZero() {
			t.Fatalf("event %+v after seq %d", e, last)
		}
		last = e.Seq
	}
	if len(r.events.Kinds(func(e messages.Event) bool { return e.Kind == messages.EventRefresh })) == 0 {
		t.Fatal("no refresh event")
	}
}

func TestEventsOfColdStartsAndExhaustion(t *testing.T) {
	r := newRig(t, messages.PoolConfig{WarmTarget: 0, MaxInstances: 1}, nil)
	r.acquire("a")
	if _, err := r.pool.Acquire(r.ctx(), "b"); !errors.Is(err, messages.ErrExhausted) {
		t.Fatal(err)
	}
	if got := r.events.Kinds(testkit.Session("a")); len(got) == 0 || got[0] != messages.EventColdStart {
		t.Fatalf("a's events: %v; want a cold start first", got)
	}
	if got := r.events.Kinds(testkit.Session("b")); fmt.Sprint(got) != fmt.Sprint([]string{messages.EventExhausted}) {
		t.Fatalf("b's events: %v", got)
	}
}

func TestRestartWithReplaceStopsContainersWhoseLeaseEnded(t *testing.T) {
	r := newRig(t, messages.PoolConfig{WarmTarget: 1, AcquireTimeout: messages.Duration(time.Minute),
		OnRelease: messages.OnReleaseReplace}, nil)
	r.waitStats(1, 0, 0, 0)
	a := r.acquire("a")
	r.waitStats(1, 1, 0, 0)
	// Let the snapshots catch up: recovery reads the slot as acquired.
	testkit.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		snaps, _ := r.snapshots.List(r.ctx(), "test", "n1")
		for _, s := range snaps {
			if s.Slot == a.Slot && s.State == "acquired" {
				return nil
			}
		}
		return fmt.Errorf("no acquired snapshot of %s yet", a.Slot)
	})
	r.restart(actors.ExitLeave, func() { r.clock.Advance(2 * time.Minute) }) // a's lease expires while down
	r.waitStats(1, 0, 0, 0)
	testkit.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		for _, s := range r.drv.LiveSlots() {
			if s == a.Slot {
				return fmt.Errorf("the used container %s was kept", s)
			}
		}
		return nil
	})
	if b := r.acquire("b"); b.Slot == a.Slot {
		t.Fatal("a used container went to another session under onRelease: replace")
	}
}

func TestShareOfTheClusterFigures(t *testing.T) {
	r := newRig(t, messages.PoolConfig{WarmTarget: 3, MaxInstances: 6}, nil)
	r.waitStats(3, 0, 0, 0)
	// Two more nodes join: this one keeps 1 of 3 warm and 2 of 6 at most.
	r.pool.Send(messages.SetShare{WarmTarget: 1, MaxInstances: 2, Nodes: 3})
	st := r.stats()
	if st.Share.WarmTarget != 1 || st.Share.MaxInstances != 2 || st.Share.Nodes != 3 || st.Config.WarmTarget != 3 {
		t.Fatalf("stats after the share: %+v", st)
	}
	// The pool keeps what it has (no container is stopped to come down),
	// but starts nothing beyond its share.
	r.acquire("a")
	r.acquire("b")
	r.acquire("c")
	if _, err := r.pool.Acquire(r.ctx(), "d"); !errors.Is(err, messages.ErrExhausted) {
		t.Fatalf("acquire beyond the share: %v; want ErrExhausted", err)
	}
	// The others leave: the whole figures come back, and the pool refills.
	r.pool.Send(messages.SetShare{WarmTarget: 3, MaxInstances: 6, Nodes: 1})
	r.waitStats(3, 3, 0, 0)
}
