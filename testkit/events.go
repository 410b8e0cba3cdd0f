package testkit

import (
	"sync"

	"github.com/warmpool/warmpool/messages"
)

// EventLog is an actors.EventSink that keeps every event in memory, for
// tests that assert on what a pool did. It is safe for concurrent use.
type EventLog struct {
	mu     sync.Mutex
	events []messages.Event
}

// Emit implements actors.EventSink.
func (l *EventLog) Emit(e messages.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, e)
}

// Events returns a copy of the events so far that match every filter.
func (l *EventLog) Events(filters ...func(messages.Event) bool) []messages.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []messages.Event
next:
	for _, e := range l.events {
		for _, f := range filters {
			if !f(e) {
				continue next
			}
		}
		out = append(out, e)
	}
	return out
}

// Kinds returns the kinds of the events that match every filter, in order.
func (l *EventLog) Kinds(filters ...func(messages.Event) bool) []string {
	var kinds []string
	for _, e := range l.Events(filters...) {
		kinds = append(kinds, e.Kind)
	}
	return kinds
}

// Session filters the events of one session.
func Session(id string) func(messages.Event) bool {
	return func(e messages.Event) bool { return e.Session == id }
}

// Slot filters the events of one slot.
func Slot(id string) func(messages.Event) bool {
	return func(e messages.Event) bool { return e.Slot == id }
}
