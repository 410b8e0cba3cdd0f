package cluster_test

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/warmpool/warmpool/cluster"
	"github.com/warmpool/warmpool/messages"
	"github.com/warmpool/warmpool/testkit"
)

func TestShare(t *testing.T) {
	for _, tc := range []struct {
		total int
		nodes []string
		want  map[string]int
	}{
		{10, []string{"b", "a", "c"}, map[string]int{"a": 4, "b": 3, "c": 3, "z": 0}},
		{2, []string{"c", "b", "a"}, map[string]int{"a": 1, "b": 1, "c": 0}},
		{3, []string{"a", "a", "b"}, map[string]int{"a": 2, "b": 1}},
		{5, []string{"n1"}, map[string]int{"n1": 5, "n2": 0}},
		{0, []string{"a", "b"}, map[string]int{"a": 0, "b": 0}},
		{-3, []string{"a", "b"}, map[string]int{"a": 0, "b": 0}},
		{7, nil, map[string]int{"a": 0}},
	} {
		for node, want := range tc.want {
			if got := cluster.Share(tc.total, tc.nodes, node); got != want {
				t.Errorf("Share(%d, %v, %q) = %d, want %d", tc.total, tc.nodes, node, got, want)
			}
		}
	}

	ids := []string{"n7", "n3", "n1", "n9", "n2", "n8", "n4", "n6", "n5", "n3", "n1"}
	for total := 0; total <= 40; total++ {
		for n := 1; n <= len(ids); n++ {
			nodes := ids[:n]
			unique := slices.Compact(slices.Sorted(slices.Values(nodes)))
			rev := slices.Clone(nodes)
			slices.Reverse(rev)
			sum, lo, hi := 0, total, 0
			for _, id := range unique {
				s := cluster.Share(total, nodes, id)
				if again := cluster.Share(total, rev, id); again != s {
					t.Fatalf("Share(%d, %v, %q) depends on order: %d and %d", total, nodes, id, s, again)
				}
				sum += s
				lo, hi = min(lo, s), max(hi, s)
			}
			if sum != total || hi-lo > 1 {
				t.Fatalf("Share(%d, %v): sum %d, min %d, max %d", total, nodes, sum, lo, hi)
			}
		}
	}
}

const (
	testInterval  = 50 * time.Millisecond
	testDeadAfter = 300 * time.Millisecond
)

func memberConn(t *testing.T, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func join(t *testing.T, url string, o cluster.MembershipOptions) *cluster.Membership {
	t.Helper()
	o.Interval, o.DeadAfter = testInterval, testDeadAfter
	o.Logger = slog.New(slog.DiscardHandler)
	m, err := cluster.NewMembership(memberConn(t, url), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

func liveIDs(m *cluster.Membership) []string {
	var ids []string
	for _, mb := range m.Live() {
		ids = append(ids, mb.Node)
	}
	return ids
}

func liveIs(m *cluster.Membership, want ...string) func() error {
	return func() error {
		if got := liveIDs(m); !slices.Equal(got, want) {
			return fmt.Errorf("live %v, want %v", got, want)
		}
		return nil
	}
}

// changes records OnChange's calls.
type changes struct {
	mu   sync.Mutex
	sets [][]string
}

func (c *changes) record(live []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sets = append(c.sets, live)
}

func (c *changes) get() [][]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.sets)
}

func TestMembershipJoinDieLeave(t *testing.T) {
	url := testkit.StartNATS(t).ClientURL()
	var seen changes
	load := map[string]cluster.PoolLoad{"web": {Warm: 2, Warming: 1, Acquired: 3, Total: 6}}
	a := join(t, url, cluster.MembershipOptions{Node: "a", Load: func() map[string]cluster.PoolLoad { return load }, OnChange: seen.record})
	b := join(t, url, cluster.MembershipOptions{Node: "b"})
	c := join(t, url, cluster.MembershipOptions{Node: "c"})
	for _, m := range []*cluster.Membership{a, b, c} {
		testkit.CheckFor(t, 2*time.Second, 5*time.Millisecond, liveIs(m, "a", "b", "c"))
	}

	// Load is carried to the others; LastSeen is recent.
	for _, mb := range b.Live() {
		if mb.Node == "a" && mb.Pools["web"] != load["web"] {
			t.Errorf("b sees a's pools %+v, want %+v", mb.Pools, load)
		}
		if age := time.Since(mb.LastSeen); age > testDeadAfter {
			t.Errorf("b last saw %s %s ago", mb.Node, age)
		}
	}

	// Garbage on the heartbeat subjects is counted and ignored.
	nc := memberConn(t, url)
	for subj, data := range map[string]string{
		"warmpool.v1.nodes.x": "not json",
		"warmpool.v1.nodes.y": `{"type":"other.v1","node":"y"}`,
		"warmpool.v1.nodes.z": `{"type":"warmpool.v1.heartbeat","node":"a"}`,
		"warmpool.v1.nodes.w": `{"type":"warmpool.v1.heartbeat","node":"w","pools":[1]}`,
	} {
		if err := nc.Publish(subj, []byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	testkit.CheckFor(t, 2*time.Second, 5*time.Millisecond, func() error {
		if n := b.Malformed(); n < 4 {
			return fmt.Errorf("b counted %d malformed heartbeats, want 4", n)
		}
		return nil
	})
	if err := liveIs(b, "a", "b", "c")(); err != nil {
		t.Fatal(err)
	}

	// A node that stops heartbeating is declared dead in bounded time.
	c.Close()
	closed := time.Now()
	testkit.CheckFor(t, 2*time.Second, 2*time.Millisecond, liveIs(a, "a", "b"))
	detected := time.Since(closed)
	testkit.CheckFor(t, 2*time.Second, 2*time.Millisecond, liveIs(b, "a", "b"))
	t.Logf("closed node dropped after %s (dead_after %s, interval %s)", detected, testDeadAfter, testInterval)
	if bound := testDeadAfter + 2*testInterval; detected > bound {
		t.Errorf("closed node dropped after %s, want within %s", detected, bound)
	}
	if early := testDeadAfter - testInterval; detected < early {
		t.Errorf("closed node dropped after %s, before %s", detected, early)
	}

	// A node that leaves is dropped at once.
	left := time.Now()
	if err := b.Leave(ctx(t)); err != nil {
		t.Fatal(err)
	}
	testkit.CheckFor(t, 2*time.Second, 2*time.Millisecond, liveIs(a, "a"))
	detected = time.Since(left)
	t.Logf("leaving node dropped after %s", detected)
	if detected > testDeadAfter/3 {
		t.Errorf("leaving node dropped after %s, want well under %s", detected, testDeadAfter)
	}
	if err := b.Leave(ctx(t)); !errors.Is(err, cluster.ErrMembershipClosed) {
		t.Errorf("second Leave: %v, want ErrMembershipClosed", err)
	}

	// OnChange saw each live set, in order.
	testkit.CheckFor(t, time.Second, 2*time.Millisecond, func() error {
		got := seen.get()
		if len(got) != 5 {
			return fmt.Errorf("OnChange calls %v, want 5", got)
		}
		return nil
	})
	got := seen.get()
	second := got[1]
	if !slices.Equal(second, []string{"a", "b"}) && !slices.Equal(second, []string{"a", "c"}) {
		t.Errorf("second live set %v, want [a b] or [a c]", second)
	}
	got[1] = nil
	want := [][]string{{"a"}, nil, {"a", "b", "c"}, {"a", "b"}, {"a"}}
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("OnChange calls %v, want %v", got, want)
	}
}

func TestMembershipOptions(t *testing.T) {
	nc := memberConn(t, testkit.StartNATS(t).ClientURL())
	for _, o := range []cluster.MembershipOptions{
		{},
		{Node: "a.b"},
		{Node: "a*"},
		{Node: "a", Interval: time.Second, DeadAfter: 2 * time.Second},
		{Node: "a", Interval: -time.Second},
		{Node: "a", DeadAfter: time.Second}, // default interval 1s
	} {
		if _, err := cluster.NewMembership(nc, o); !errors.Is(err, messages.ErrConfigValidation) {
			t.Errorf("NewMembership(%+v): %v, want ErrConfigValidation", o, err)
		}
	}
	if _, err := cluster.NewMembership(nil, cluster.MembershipOptions{Node: "a"}); !errors.Is(err, messages.ErrConfigValidation) {
		t.Errorf("NewMembership without a connection: %v, want ErrConfigValidation", err)
	}
	m, err := cluster.NewMembership(nc, cluster.MembershipOptions{Node: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if err := liveIs(m, "a")(); err != nil {
		t.Error(err)
	}
	m.Close()
	m.Close()
	if err := m.Leave(ctx(t)); !errors.Is(err, cluster.ErrMembershipClosed) {
		t.Errorf("Leave after Close: %v, want ErrMembershipClosed", err)
	}
}
