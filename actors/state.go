package actors

import (
	"fmt"
	"time"
)

// State is where a slot's container is in its life.
type State uint8

// The slot states. A slot only moves forward, except acquired -> warm on a
// release that reuses the container.
const (
	// Warming: the container is starting and not yet ready.
	Warming State = iota + 1
	// Warm: ready and idle, can be handed out.
	Warm
	// Acquired: held by a session.
	Acquired
	// Draining: being stopped (released with replace, died, failed to start,
	// shut down); still counts against maxInstances until it is gone.
	Draining
	// Gone: stopped and cleaned up; the slot is forgotten.
	Gone
)

var stateNames = [...]string{"unknown", "warming", "warm", "acquired", "draining", "gone"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", s)
}

// Event is what happens to a slot: a container outcome reported by the driver,
// or a decision of the pool.
type Event uint8

// Slot events.
const (
	// EvReady: the container answers.
	EvReady Event = iota + 1
	// EvStartFailed: the container could not start or did not get ready in time.
	EvStartFailed
	// EvAcquire: the pool hands the slot to a session.
	EvAcquire
	// EvRelease: the session let go and the container is reused.
	EvRelease
	// EvDrain: the pool wants the container gone (replace, shutdown).
	EvDrain
	// EvExited: the container exited on its own.
	EvExited
	// EvStopped: the container is stopped and cleaned up.
	EvStopped
)

var eventNames = [...]string{"unknown", "ready", "start_failed", "acquire", "release", "drain", "exited", "stopped"}

func (e Event) String() string {
	if int(e) < len(eventNames) {
		return eventNames[e]
	}
	return fmt.Sprintf("event(%d)", e)
}

// Effect is work a transition asks the slot actor to do, off its mailbox.
type Effect uint8

// Effects.
const (
	// EffStop: cancel a start in flight and stop the container.
	EffStop Effect = iota + 1
)

// Step is the outcome of a legal transition.
type Step struct {
	From, To State
	Event    Event
	At       time.Time
	Effects  []Effect
}

// IllegalTransitionError says an event does not apply in a state. It is a
// value, never a panic: the actor logs it and answers the caller.
type IllegalTransitionError struct {
	From  State
	Event Event
}

func (e *IllegalTransitionError) Error() string {
	return fmt.Sprintf("slot: event %s is not allowed in state %s", e.Event, e.From)
}

var stop = []Effect{EffStop}

// Transition is the slot state machine: pure, so that both the slot actor and
// the pool's view of it move the same way, and a log of events replays to the
// same states. Events that arrive late for a container already on its way out
// (a ready report after a drain, say) leave Draining unchanged.
func Transition(from State, ev Event, now time.Time) (Step, error) {
	step := Step{From: from, Event: ev, At: now}
	switch {
	case from == Warming && ev == EvReady:
		step.To = Warm
	case from == Warm && ev == EvAcquire:
		step.To = Acquired
	case from == Acquired && ev == EvRelease:
		step.To = Warm
	case (from == Warming || from == Warm || from == Acquired) &&
		(ev == EvStartFailed && from == Warming || ev == EvExited || ev == EvDrain):
		step.To, step.Effects = Draining, stop
	case from == Draining && (ev == EvReady || ev == EvStartFailed || ev == EvExited || ev == EvDrain):
		step.To = Draining
	case from == Draining && ev == EvStopped:
		step.To = Gone
	default:
		return Step{}, &IllegalTransitionError{From: from, Event: ev}
	}
	return step, nil
}
