package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warmpool/warmpool/clock"
	"github.com/warmpool/warmpool/driver"
)

// Commands from the pool to a slot.
type (
	slotAcquire struct{}
	slotRelease struct{}
	slotDrain   struct{ reason string }
)

// Driver outcomes, sent by the slot's own goroutines to its mailbox.
type (
	containerStarted struct{ handle driver.Handle }
	containerReady   struct{}
	containerFailed  struct{ err error }
	containerExited  struct{ exit driver.Exit }
	containerStopped struct{ err error }
)

// slotEvent is what a slot reports to its pool: the event it applied, so that
// the pool's view applies the same transition.
type slotEvent struct {
	Slot     string
	Event    Event
	Endpoint string
	Handle   driver.Handle
	Reason   string
}

// slotActor owns one container: it runs the driver calls in goroutines, turns
// their outcomes into events of the state machine and reports each one to the
// pool. It decides nothing about leases: that is the pool's business.
type slotActor struct {
	id     string
	spec   driver.Spec
	drv    driver.Driver
	clock  clock.Clock
	root   *actor.RootContext
	log    *slog.Logger
	parent *actor.PID

	// adopt, when set, is a container from an earlier run to take over
	// instead of starting one; drainAtOnce stops it instead of keeping it.
	adopt       *driver.Handle
	drainAtOnce bool
	// leaving is the pool's flag: set, the node exits and the container
	// must keep running for the next start to adopt.
	leaving *atomic.Bool
	// inert slots run no driver: in a replay, their reports come from the
	// recording.
	inert bool

	state      State
	handle     driver.Handle
	hasHandle  bool
	starting   bool // Start has not returned yet
	stopping   bool // a Stop is in flight
	cancel     context.CancelFunc
	readyTimer clock.Timer
}

func (s *slotActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		s.parent = ctx.Parent()
		s.state = Warming
		if s.inert {
			return
		}
		if s.drainAtOnce {
			// An orphan from an earlier run: adopt it only to stop it. No
			// effect runs here: the stop follows containerStarted.
			s.state = Draining
		}
		s.begin(ctx.Self())
	case slotAcquire:
		s.apply(ctx, EvAcquire, "")
	case slotRelease:
		s.apply(ctx, EvRelease, "")
	case slotDrain:
		s.apply(ctx, EvDrain, m.reason)
	case containerStarted:
		s.starting = false
		s.handle, s.hasHandle = m.handle, true
		s.log = s.log.With("container", m.handle.ID)
		if s.state == Draining {
			s.stopContainer(ctx.Self())
		}
	case containerReady:
		s.apply(ctx, EvReady, "")
	case containerFailed:
		if s.starting && !s.hasHandle {
			s.starting = false // Start itself failed: there is nothing to stop
		}
		s.apply(ctx, EvStartFailed, m.err.Error())
		s.finishIfIdle(ctx)
	case containerExited:
		s.apply(ctx, EvExited, m.exit.Reason)
	case containerStopped:
		s.stopping = false
		s.hasHandle = false
		if m.err != nil {
			s.log.Warn("stopping the container failed", "err", m.err)
		}
		s.finishIfIdle(ctx)
	case *actor.Stopping:
		// Stopped by the pool (node shutdown) or by its supervisor: make sure
		// the container does not outlive the slot.
		s.teardown()
	}
}

// begin starts the container and waits for it to be ready, off the mailbox.
func (s *slotActor) begin(self *actor.PID) {
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.starting = true
	timeout := s.spec.Template.StartTimeout.D()
	readyCtx, readyCancel := context.WithCancelCause(ctx)
	s.readyTimer = s.clock.AfterFunc(timeout, func() {
		readyCancel(fmt.Errorf("not ready within %s (startTimeout)", timeout))
	})
	drv, spec, root, adopt, drainAtOnce := s.drv, s.spec, s.root, s.adopt, s.drainAtOnce
	go func() {
		defer readyCancel(nil)
		var h driver.Handle
		var err error
		if adopt != nil {
			h = *adopt
			err = drv.Adopt(readyCtx, h)
		} else {
			h, err = drv.Start(readyCtx, spec)
		}
		if err != nil {
			root.Send(self, containerFailed{err: causeOf(readyCtx, err)})
			return
		}
		root.Send(self, containerStarted{handle: h})
		if drainAtOnce {
			return
		}
		go func() {
			exit, err := drv.Wait(ctx, h)
			if err == nil {
				root.Send(self, containerExited{exit: exit})
			}
		}()
		if err := drv.Ready(readyCtx, h); err != nil {
			root.Send(self, containerFailed{err: causeOf(readyCtx, err)})
			return
		}
		root.Send(self, containerReady{})
	}()
}

// causeOf prefers the reason a context was cancelled (the start timeout) to
// the bare "context canceled" a driver returns.
func causeOf(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil && errors.Is(err, ctx.Err()) {
		return cause
	}
	return err
}

func (s *slotActor) apply(ctx actor.Context, ev Event, reason string) {
	step, err := Transition(s.state, ev, s.clock.Now())
	if err != nil {
		// A command that crossed a container event in flight (an acquire of a
		// slot that just died); the pool learns the truth from our report.
		s.log.Debug("ignoring event", "err", err)
		return
	}
	s.state = step.To
	if s.readyTimer != nil && step.To != Warming {
		s.readyTimer.Stop()
		s.readyTimer = nil
	}
	for _, eff := range step.Effects {
		if eff == EffStop {
			s.cancel()
			s.stopContainer(ctx.Self())
		}
	}
	if (step.From != step.To || ev == EvStartFailed || ev == EvExited) && s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("slot transition", "from", step.From, "to", step.To, "event", ev, "reason", reason)
	}
	if ev == EvAcquire || ev == EvRelease || ev == EvDrain || step.From == step.To {
		return // the pool made this decision or already knows; nothing to report
	}
	ctx.Send(s.parent, slotEvent{Slot: s.id, Event: ev, Endpoint: s.handle.Endpoint, Handle: s.handle, Reason: reason})
}

func (s *slotActor) stopContainer(self *actor.PID) {
	if !s.hasHandle || s.stopping {
		return
	}
	s.stopping = true
	drv, h, grace, root := s.drv, s.handle, s.spec.Template.StopGrace.D(), s.root
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), grace+30*time.Second)
		defer cancel()
		root.Send(self, containerStopped{err: drv.Stop(ctx, h, grace)})
	}()
}

// finishIfIdle moves a draining slot to gone once nothing of its container
// remains: no start in flight, no handle, no stop in flight.
func (s *slotActor) finishIfIdle(ctx actor.Context) {
	if s.state != Draining || s.starting || s.hasHandle || s.stopping {
		return
	}
	step, err := Transition(s.state, EvStopped, s.clock.Now())
	if err != nil {
		return
	}
	s.state = step.To
	// The pool stops this actor when it applies the event: a Terminated sent
	// now would overtake the reports still queued for the pool (system
	// messages go first).
	ctx.Send(s.parent, slotEvent{Slot: s.id, Event: EvStopped})
}

func (s *slotActor) teardown() {
	if s.cancel != nil {
		s.cancel()
	}
	if s.readyTimer != nil {
		s.readyTimer.Stop()
	}
	if s.leaving != nil && s.leaving.Load() && s.state != Draining {
		return // the node exits and leaves the container for its next start
	}
	if s.hasHandle && !s.stopping {
		drv, h, grace := s.drv, s.handle, s.spec.Template.StopGrace.D()
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), grace+30*time.Second)
			defer cancel()
			_ = drv.Stop(ctx, h, grace)
		}()
	}
}
