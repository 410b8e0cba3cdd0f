package cluster_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/warmpool/warmpool/actors"
	"github.com/warmpool/warmpool/client"
	"github.com/warmpool/warmpool/cluster"
	"github.com/warmpool/warmpool/testkit"
)

// nodeAndLeases starts a node of a demo pool web, and opens its lease
// store beside it, to write what the node would not.
func nodeAndLeases(t *testing.T) (*cluster.Node, *nats.Conn, *cluster.LeaseKV) {
	t.Helper()
	node, nc := testkit.StartNode(t, testkit.DemoPool("web", 0))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	leases, _, err := cluster.OpenStores(ctx(t), js, cluster.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return node, nc, leases
}

// TestOrphanedLeaseIsDropped: a lease write that timed out may have landed
// after all, and the pool, not knowing, stopped the container. The stored
// lease names this node and a slot its pool does not hold; it must not
// refuse the session for good. The first acquire is told to retry, and the
// orphan is ended; the retry gets a container.
func TestOrphanedLeaseIsDropped(t *testing.T) {
	node, nc, leases := nodeAndLeases(t)
	orphan := actors.LeaseRecord{Pool: "web", ID: "s1", Node: node.ID(), Slot: "stopped-slot",
		Endpoint: "http://127.0.0.1:1", ExpiresAt: time.Now().Add(time.Hour)}
	if _, err := leases.Create(ctx(t), orphan); err != nil {
		t.Fatal(err)
	}
	p := client.New(nc).Pool("web")
	if _, err := p.GetContainer(ctx(t), "s1"); !client.IsRetryable(err) {
		t.Fatalf("first acquire over an orphan: %v; want a retryable error", err)
	}
	l, err := p.GetContainer(ctx(t), "s1")
	if err != nil {
		t.Fatalf("retry: %v", err)
	}
	if l.Slot == orphan.Slot || l.Node != node.ID() {
		t.Fatalf("retry got %+v", l)
	}
	got, ok, err := leases.Get(ctx(t), "web", "s1")
	if err != nil || !ok || got.Record.Slot != l.Slot {
		t.Fatalf("stored lease %+v %v %v; want slot %s", got.Record, ok, err, l.Slot)
	}
	// A lease the pool holds is no orphan: acquires keep it.
	if again, err := p.GetContainer(ctx(t), "s1"); err != nil || again.Slot != l.Slot {
		t.Fatalf("sticky acquire: %+v %v", again, err)
	}
}

// TestSweepEndsLeasesNobodyElseWill: the periodic sweep ends this node's
// orphans and the long-expired leases of nodes that are not live, and
// keeps the leases the pool holds, and those of nodes expired only lately.
func TestSweepEndsLeasesNobodyElseWill(t *testing.T) {
	node, nc, leases := nodeAndLeases(t)
	held, err := client.New(nc).Pool("web").GetContainer(ctx(t), "held")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, r := range []actors.LeaseRecord{
		{Pool: "web", ID: "orphan", Node: node.ID(), Slot: "stopped-slot", ExpiresAt: now.Add(time.Hour)},
		{Pool: "web", ID: "long-gone", Node: "gone-node", Slot: "x", ExpiresAt: now.Add(-10 * time.Minute)},
		{Pool: "web", ID: "lately", Node: "gone-node", Slot: "y", ExpiresAt: now.Add(-time.Minute)},
		{Pool: "web", ID: "unexpired", Node: "gone-node", Slot: "z", ExpiresAt: now.Add(time.Hour)},
	} {
		if _, err := leases.Create(ctx(t), r); err != nil {
			t.Fatal(err)
		}
	}
	if n := node.SweepLeases(ctx(t), now); n != 2 {
		t.Errorf("sweep ended %d leases; want 2", n)
	}
	for id, want := range map[string]bool{"held": true, "orphan": false, "long-gone": false, "lately": true, "unexpired": true} {
		l, ok, err := leases.Get(ctx(t), "web", id)
		if err != nil || ok != want {
			t.Errorf("%s: stored %v (%v); want %v", id, ok, err, want)
		}
		if id == "held" && l.Record.Slot != held.Slot {
			t.Errorf("held: %+v", l.Record)
		}
	}
}
