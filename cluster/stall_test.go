package cluster

import (
	"io"
	"log/slog"
	"testing"
	"time"
)

// TestMembershipStallIsNotSilence: the time this node did not run counts
// for nobody's silence. After a 5 s stall a member heard just before it is
// still live; it is declared dead only once it stays silent for DeadAfter
// of the time this node watched.
func TestMembershipStallIsNotSilence(t *testing.T) {
	o := MembershipOptions{Node: "me", Interval: 100 * time.Millisecond, DeadAfter: time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}.withDefaults()
	o.OnDead = func(id string) {}
	m := &Membership{o: o, log: o.Logger, members: map[string]Member{}, wake: make(chan struct{}, 1)}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	check := func(at time.Duration) bool {
		m.expire(t0.Add(at))
		m.mu.Lock()
		defer m.mu.Unlock()
		_, live := m.members["other"]
		return live
	}
	m.members["other"] = Member{Node: "other", LastSeen: t0.Add(-700 * time.Millisecond)}
	if !check(0) {
		t.Fatal("dead 700ms after its last heartbeat")
	}
	// 5 s without a check: this node was stopped.
	if !check(5 * time.Second) {
		t.Fatal("declared dead after this node's own stall")
	}
	// Watching again, every 50 ms: dead once 1 s of watched silence has
	// passed (700 ms before the stall, then 300 ms more).
	at := 5 * time.Second
	for ; check(at); at += 50 * time.Millisecond {
		if at > 7*time.Second {
			t.Fatal("never declared dead")
		}
	}
	if watched := at - 5*time.Second; watched < 250*time.Millisecond || watched > 400*time.Millisecond {
		t.Fatalf("declared dead %s after the stall; want about 300ms", watched)
	}
}
