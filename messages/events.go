package messages

import (
	"fmt"
	"strings"
	"time"
)

// TypeEvent is the type string of an Event.
const TypeEvent = "warmpool.v1.event"

// Event kinds: what happened, to a slot, a lease or the pool.
const (
	EventSlotWarming  = "slot.warming"  // a container is starting (or being adopted)
	EventSlotWarm     = "slot.warm"     // ready and idle
	EventSlotAcquired = "slot.acquired" // handed to a session
	EventSlotReleased = "slot.released" // back to warm after a release
	EventSlotDraining = "slot.draining" // being stopped
	EventSlotStopped  = "slot.stopped"  // gone
	EventSlotFailed   = "slot.failed"   // failed to start, or died

	EventLeaseCreated  = "lease.created"
	EventLeaseRenewed  = "lease.renewed" // extended by renew or a sticky acquire
	EventLeaseExpired  = "lease.expired"
	EventLeaseRevoked  = "lease.revoked" // ended by warmpool: container gone, lost to another writer, shutdown
	EventLeaseReleased = "lease.released"

	EventColdStart = "acquire.cold_start" // no warm container: the session waits for one
	EventExhausted = "acquire.exhausted"  // refused at maxInstances
	EventRefresh   = "pool.refresh"
)

// Event is one decision of a pool or one transition of a slot, in the order
// the pool made them. Seq numbers a pool's events from 1 for each start of
// its node.
type Event struct {
	Type    string    `json:"type"`
	Seq     uint64    `json:"seq"`
	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"`
	Pool    string    `json:"pool"`
	Node    string    `json:"node"`
	Slot    string    `json:"slot,omitempty"`
	Session string    `json:"session,omitempty"`
	Reason  string    `json:"reason,omitempty"`
}

// String renders the event as one line for people:
//
//	2026-12-04T20:44:08.123Z web node-1 lease.created session="alice" slot=3f2a... reason=...
func (e Event) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s %-18s", e.Time.UTC().Format("2006-01-02T15:04:05.000Z"), e.Pool, e.Node, e.Kind)
	if e.Session != "" {
		fmt.Fprintf(&b, " session=%q", e.Session)
	}
	if e.Slot != "" {
		fmt.Fprintf(&b, " slot=%s", e.Slot)
	}
	if e.Reason != "" {
		fmt.Fprintf(&b, " reason=%q", e.Reason)
	}
	return b.String()
}
