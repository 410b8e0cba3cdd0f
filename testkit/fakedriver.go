package testkit

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/warmpool/warmpool/clock"
	"github.com/warmpool/warmpool/driver"
)

// FakePlan is how one fake container behaves.
type FakePlan struct {
	// StartErr makes Start fail.
	StartErr error
	// ReadyAfter is the time on the driver's clock from Start to ready.
	ReadyAfter time.Duration
	// NeverReady keeps the container warming until it is stopped or times out.
	NeverReady bool
	// ExitBeforeReady makes the container exit with this code instead of
	// getting ready (after ReadyAfter).
	ExitBeforeReady *int
}

// FakeDriver is a driver.Driver whose containers exist only in memory and
// move on the driver's clock, so that actor tests are deterministic. It is
// safe for concurrent use.
type FakeDriver struct {
	clock clock.Clock

	mu      sync.Mutex
	plan    func(driver.Spec) FakePlan
	seq     int
	live    map[string]*fakeContainer
	started int
	stopped int
}

type fakeContainer struct {
	spec   driver.Spec
	handle driver.Handle
	ready  chan struct{}
	exited chan struct{}
	exit   driver.Exit
}

// NewFakeDriver returns a driver whose containers get ready at once.
func NewFakeDriver(c clock.Clock) *FakeDriver {
	return &FakeDriver{clock: c, live: map[string]*fakeContainer{}, plan: func(driver.Spec) FakePlan { return FakePlan{} }}
}

// SetPlan decides the behaviour of every container started from now on.
func (d *FakeDriver) SetPlan(plan func(driver.Spec) FakePlan) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.plan = plan
}

// Start implements driver.Driver.
func (d *FakeDriver) Start(ctx context.Context, spec driver.Spec) (driver.Handle, error) {
	d.mu.Lock()
	plan := d.plan(spec)
	if plan.StartErr != nil {
		d.mu.Unlock()
		return driver.Handle{}, plan.StartErr
	}
	d.seq++
	d.started++
	id := fmt.Sprintf("fake-%d", d.seq)
	c := &fakeContainer{
		spec:   spec,
		handle: driver.Handle{ID: id, Endpoint: "http://fake.invalid/" + id, StartID: fmt.Sprint(d.seq), StartedAt: d.clock.Now()},
		ready:  make(chan struct{}),
		exited: make(chan struct{}),
	}
	d.live[id] = c
	d.mu.Unlock()
	switch {
	case plan.NeverReady:
	case plan.ExitBeforeReady != nil:
		code := *plan.ExitBeforeReady
		d.after(plan.ReadyAfter, func() { d.exit(id, driver.Exit{Code: code, Reason: fmt.Sprintf("exited with status %d", code)}) })
	default:
		d.after(plan.ReadyAfter, func() { close(c.ready) })
	}
	return c.handle, nil
}

func (d *FakeDriver) after(delay time.Duration, f func()) {
	if delay <= 0 {
		f()
		return
	}
	d.clock.AfterFunc(delay, f)
}

func (d *FakeDriver) get(h driver.Handle) (*fakeContainer, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c, ok := d.live[h.ID]
	if !ok {
		return nil, fmt.Errorf("%w: %s", driver.ErrUnknownContainer, h.ID)
	}
	return c, nil
}

// Ready implements driver.Driver.
func (d *FakeDriver) Ready(ctx context.Context, h driver.Handle) error {
	c, err := d.get(h)
	if err != nil {
		return err
	}
	select {
	case <-c.ready:
		return nil
	case <-c.exited:
		return fmt.Errorf("%w: %s", driver.ErrExited, c.exit.Reason)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Wait implements driver.Driver.
func (d *FakeDriver) Wait(ctx context.Context, h driver.Handle) (driver.Exit, error) {
	c, err := d.get(h)
	if err != nil {
		return driver.Exit{}, err
	}
	select {
	case <-c.exited:
		return c.exit, nil
	case <-ctx.Done():
		return driver.Exit{}, ctx.Err()
	}
}

// Stop implements driver.Driver.
func (d *FakeDriver) Stop(ctx context.Context, h driver.Handle, grace time.Duration) error {
	d.mu.Lock()
	c, ok := d.live[h.ID]
	if ok {
		delete(d.live, h.ID)
		d.stopped++
	}
	d.mu.Unlock()
	if ok {
		d.closeExit(c, driver.Exit{Code: 0, Reason: "stopped"})
	}
	return nil
}

// List implements driver.Driver: the live containers of node.
func (d *FakeDriver) List(ctx context.Context, node string) ([]driver.Found, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []driver.Found
	for _, c := range d.live {
		select {
		case <-c.exited:
			continue
		default:
		}
		if c.spec.Node == node {
			out = append(out, driver.Found{Handle: c.handle, Pool: c.spec.Pool, Slot: c.spec.Slot, Node: node})
		}
	}
	slices.SortFunc(out, func(a, b driver.Found) int { return strings.Compare(a.Slot, b.Slot) })
	return out, nil
}

// Adopt implements driver.Driver: a live container with the same StartID.
func (d *FakeDriver) Adopt(ctx context.Context, h driver.Handle) error {
	c, err := d.get(h)
	if err != nil {
		return err
	}
	if c.handle.StartID != h.StartID {
		return fmt.Errorf("%w: %s", driver.ErrNotSame, h.ID)
	}
	select {
	case <-c.exited:
		return fmt.Errorf("%w: %s exited", driver.ErrUnknownContainer, h.ID)
	default:
		return nil
	}
}

// Kill makes the container of slot exit, as a crash would; false if the slot
// has no live container.
func (d *FakeDriver) Kill(slot string) bool {
	d.mu.Lock()
	var id string
	for cid, c := range d.live {
		if c.spec.Slot == slot {
			id = cid
		}
	}
	d.mu.Unlock()
	return id != "" && d.exit(id, driver.Exit{Code: -1, Reason: "killed by signal 9"})
}

func (d *FakeDriver) exit(id string, e driver.Exit) bool {
	d.mu.Lock()
	c, ok := d.live[id]
	d.mu.Unlock()
	if ok {
		d.closeExit(c, e)
	}
	return ok
}

func (d *FakeDriver) closeExit(c *fakeContainer, e driver.Exit) {
	d.mu.Lock()
	defer d.mu.Unlock()
	select {
	case <-c.exited:
	default:
		c.exit = e
		close(c.exited)
	}
}

// Live counts the containers that run: started, not stopped, not exited.
func (d *FakeDriver) Live() int {
	return len(d.LiveSlots())
}

// Started counts every successful Start.
func (d *FakeDriver) Started() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.started
}

// LiveSlots lists the slots of the live containers, sorted.
func (d *FakeDriver) LiveSlots() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var s []string
	for _, c := range d.live {
		select {
		case <-c.exited:
		default:
			s = append(s, c.spec.Slot)
		}
	}
	slices.Sort(s)
	return s
}
