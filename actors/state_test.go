package actors

import (
	"errors"
	"slices"
	"testing"
	"time"
)

func TestTransition(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	type want struct {
		to   State
		stop bool
	}
	legal := map[State]map[Event]want{
		Warming: {
			EvReady:       {Warm, false},
			EvStartFailed: {Draining, true},
			EvExited:      {Draining, true},
			EvDrain:       {Draining, true},
		},
		Warm: {
			EvAcquire: {Acquired, false},
			EvExited:  {Draining, true},
			EvDrain:   {Draining, true},
		},
		Acquired: {
			EvRelease: {Warm, false},
			EvExited:  {Draining, true},
			EvDrain:   {Draining, true},
		},
		Draining: {
			EvReady:       {Draining, false},
			EvStartFailed: {Draining, false},
			EvExited:      {Draining, false},
			EvDrain:       {Draining, false},
			EvStopped:     {Gone, false},
		},
		Gone: {},
	}
	events := []Event{EvReady, EvStartFailed, EvAcquire, EvRelease, EvDrain, EvExited, EvStopped}
	// Every (state, event) pair: the table above lists the legal ones, all
	// others must be an IllegalTransitionError.
	for from, allowed := range legal {
		for _, ev := range events {
			t.Run(from.String()+"/"+ev.String(), func(t *testing.T) {
				step, err := Transition(from, ev, now)
				w, ok := allowed[ev]
				if !ok {
					var ite *IllegalTransitionError
					if !errors.As(err, &ite) || ite.From != from || ite.Event != ev {
						t.Fatalf("Transition(%s, %s) = %+v, %v; want IllegalTransitionError", from, ev, step, err)
					}
					return
				}
				if err != nil {
					t.Fatalf("Transition(%s, %s): %v", from, ev, err)
				}
				if step.To != w.to || step.From != from || step.Event != ev || !step.At.Equal(now) {
					t.Fatalf("Transition(%s, %s) = %+v; want to %s", from, ev, step, w.to)
				}
				if got := slices.Contains(step.Effects, EffStop); got != w.stop {
					t.Fatalf("Transition(%s, %s) stop effect = %v; want %v", from, ev, got, w.stop)
				}
			})
		}
	}
}

func TestTransitionUnknownValues(t *testing.T) {
	if _, err := Transition(State(99), EvReady, time.Time{}); err == nil {
		t.Fatal("unknown state accepted")
	}
	if _, err := Transition(Warm, Event(99), time.Time{}); err == nil {
		t.Fatal("unknown event accepted")
	}
	if State(99).String() == "" || Event(99).String() == "" {
		t.Fatal("empty name for unknown value")
	}
}
