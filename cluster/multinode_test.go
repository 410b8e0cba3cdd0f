package cluster_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/warmpool/warmpool/actors"
	"github.com/warmpool/warmpool/client"
	"github.com/warmpool/warmpool/cluster"
	"github.com/warmpool/warmpool/driver/process"
	"github.com/warmpool/warmpool/messages"
	"github.com/warmpool/warmpool/testkit"
)

// TestTwoNodesShareSessions runs two nodes of the same pool on one NATS
// system: requests land on either node (queue group), yet an id has one
// lease and one container, and every request for it reaches that container.
func TestTwoNodesShareSessions(t *testing.T) {
	web := testkit.DemoPool("web", 0)
	web.WarmTarget, web.MaxInstances = 3, 40
	a, b := twoNodes(t, web, 0, 0)
	nc, err := nats.Connect(a.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	p := client.New(nc).Pool("web")

	// The cluster-wide figures are shared: warmTarget 3 and maxInstances
	// 40 split between the two live nodes.
	shares := func() (warm, max, nodes int, err error) {
		for _, n := range []*cluster.Node{a, b} {
			st, err := n.Pool("web").Stats(ctx(t))
			if err != nil {
				return 0, 0, 0, err
			}
			warm, max, nodes = warm+st.Share.WarmTarget, max+st.Share.MaxInstances, st.Share.Nodes
		}
		return warm, max, nodes, nil
	}
	testkit.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		warm, max, nodes, err := shares()
		if err != nil || warm != 3 || max != 40 || nodes != 2 {
			return fmt.Errorf("shares sum to warm=%d max=%d over %d nodes (%v); want 3, 40, 2", warm, max, nodes, err)
		}
		if len(a.Members()) != 2 || len(b.Members()) != 2 {
			return fmt.Errorf("members %v / %v", a.Members(), b.Members())
		}
		return nil
	})

	const ids, each = 12, 6
	var mu sync.Mutex
	endpoints := map[string]map[string]bool{}
	nodes := map[string]bool{}
	var wg sync.WaitGroup
	for i := range ids * each {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("s%d", i%ids)
			l, err := p.GetContainer(ctx(t), id)
			if err != nil {
				t.Errorf("acquire %s: %v", id, err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if endpoints[id] == nil {
				endpoints[id] = map[string]bool{}
			}
			endpoints[id][l.Endpoint] = true
			nodes[l.Node] = true
		}()
	}
	wg.Wait()
	seen := map[string]string{}
	for id, eps := range endpoints {
		if len(eps) != 1 {
			t.Fatalf("session %s got %d containers: %v", id, len(eps), eps)
		}
		for ep := range eps {
			if other, ok := seen[ep]; ok {
				t.Fatalf("sessions %s and %s share %s", id, other, ep)
			}
			seen[ep] = id
		}
	}
	if len(endpoints) != ids {
		t.Fatalf("%d sessions got containers; want %d", len(endpoints), ids)
	}
	t.Logf("%d sessions served by nodes %v", ids, nodes)
	// The two nodes hold exactly one lease per session between them.
	total := 0
	for _, n := range []*cluster.Node{a, b} {
		st, err := n.Pool("web").Stats(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		total += st.Acquired
	}
	if total != ids {
		t.Fatalf("the nodes hold %d acquired containers; want %d", total, ids)
	}
	// stats over NATS answers for the cluster, with a breakdown by node.
	testkit.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		st, err := p.Stats(ctx(t))
		if err != nil {
			return err
		}
		sum := 0
		for _, c := range st.Nodes {
			sum += c.Acquired
		}
		if st.Acquired != ids || len(st.Nodes) != 2 || sum != ids {
			return fmt.Errorf("cluster stats acquired=%d over %d nodes (sum %d); want %d over 2", st.Acquired, len(st.Nodes), sum, ids)
		}
		return nil
	})
	// Renew and release reach the holder whichever node NATS picks.
	for i := range ids {
		id := fmt.Sprintf("s%d", i)
		for range 3 {
			if _, err := p.Renew(ctx(t), id); err != nil {
				t.Fatalf("renew %s: %v", id, err)
			}
		}
		if _, err := p.ReleaseContainer(ctx(t), id); err != nil {
			t.Fatalf("release %s: %v", id, err)
		}
	}
	for _, n := range []*cluster.Node{a, b} {
		if st, _ := n.Pool("web").Stats(ctx(t)); st.Acquired != 0 {
			t.Fatalf("node %s still holds %d after every release", n.ID(), st.Acquired)
		}
	}
	// b leaves: a takes the whole figures back at once.
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	left := time.Now()
	if err := b.Shutdown(c); err != nil {
		t.Fatal(err)
	}
	testkit.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		st, err := a.Pool("web").Stats(ctx(t))
		if err != nil || st.Share.WarmTarget != 3 || st.Share.MaxInstances != 40 || st.Share.Nodes != 1 {
			return fmt.Errorf("a's share %+v (%v)", st.Share, err)
		}
		return nil
	})
	t.Logf("a took b's share back %s after b began to leave", time.Since(left).Round(time.Millisecond))
}

// TestDeadNodesExpiredLeaseIsEnded: a session whose node is gone gets a new
// container on another node once its lease has expired.
func TestDeadNodesExpiredLeaseIsEnded(t *testing.T) {
	dir := t.TempDir()
	web := testkit.DemoPool("web", 0)
	web.AcquireTimeout = messages.Duration(time.Second)
	web.RefreshInterval = messages.Duration(time.Hour) // the dead node would never reap anyway
	a, err := cluster.Start(context.Background(), cluster.Options{
		NodeID: fmt.Sprintf("a-%d", time.Now().UnixNano()), DataDir: filepath.Join(dir, "a"), NATSListen: "127.0.0.1:-1",
		Pools: []messages.PoolConfig{web}, Logger: testkit.Logger(t), OnExit: actors.ExitStop,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = a.Shutdown(c)
	}()
	b, err := cluster.Start(context.Background(), cluster.Options{
		NodeID: fmt.Sprintf("b-%d", time.Now().UnixNano()), DataDir: filepath.Join(dir, "b"), NATSURL: a.ClientURL(),
		Pools: []messages.PoolConfig{web}, Logger: testkit.Logger(t), OnExit: actors.ExitLeave,
	})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(a.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// Acquire through b's own pool, so that b holds the lease.
	l, err := b.Pool("web").Acquire(ctx(t), "orphan")
	if err != nil {
		t.Fatal(err)
	}
	// b goes away leaving its lease (and container) behind, as a crash would.
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	_ = b.Shutdown(c)
	cancel()
	t.Cleanup(func() {
		// b left its container running: stop it.
		d := process.New(nil)
		found, _ := d.List(context.Background(), b.ID())
		for _, f := range found {
			if d.Adopt(context.Background(), f.Handle) == nil {
				_ = d.Stop(context.Background(), f.Handle, 0)
			}
		}
	})
	p := client.New(nc).Pool("web")
	testkit.CheckFor(t, 10*time.Second, 100*time.Millisecond, func() error {
		got, err := p.GetContainer(ctx(t), "orphan")
		if err != nil {
			return err
		}
		if got.Node != a.ID() || got.Endpoint == l.Endpoint {
			return fmt.Errorf("got %+v", got)
		}
		return nil
	})
}

// TestNewSessionsGoWhereTheWarmContainersAre: with warmTarget 1 over two
// nodes, sessions that land on a node with nothing warm are served by the
// node with the warm container, not by a cold start.
func TestNewSessionsGoWhereTheWarmContainersAre(t *testing.T) {
	web := testkit.DemoPool("web", 300*time.Millisecond)
	web.WarmTarget, web.MaxInstances = 1, 10
	a, b := twoNodes(t, web, 50*time.Millisecond, 500*time.Millisecond)
	// b may have warmed a container before it heard of a (a node alone
	// holds the whole share): empty it, so that only a has a warm one.
	if _, err := b.Pool("web").ShutdownAll(ctx(t)); err != nil {
		t.Fatal(err)
	}
	// a holds the warm containers; b knows it from a's heartbeats, which
	// lag by up to one interval: placement goes by what b last heard.
	aIsWarm := func() {
		testkit.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
			for _, m := range b.Members() {
				if m.Node == a.ID() && m.Pools["web"].Warm >= 1 {
					return nil
				}
			}
			return fmt.Errorf("b sees %+v", b.Members())
		})
	}
	nc, err := nats.Connect(a.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	p := client.New(nc).Pool("web")
	for i := range 12 {
		id := fmt.Sprintf("s%d", i)
		aIsWarm()
		l, err := p.GetContainer(ctx(t), id)
		if err != nil {
			t.Fatal(err)
		}
		if l.Cold {
			t.Fatalf("session %s waited for a cold start on %s while a warm container was free", id, l.Node)
		}
		if _, err := p.ReleaseContainer(ctx(t), id); err != nil {
			t.Fatal(err)
		}
	}
	if st, _ := b.Pool("web").Stats(ctx(t)); st.Total != 0 {
		t.Fatalf("b runs %d containers; every session had a warm one on a", st.Total)
	}
}

// TestDrainNode: a drained node takes no new session, keeps serving its
// sessions until they end, then is drained; its share goes to the other.
func TestDrainNode(t *testing.T) {
	web := testkit.DemoPool("web", 0)
	web.WarmTarget, web.MaxInstances = 2, 20
	a, b := twoNodes(t, web, 50*time.Millisecond, 500*time.Millisecond)
	nc, err := nats.Connect(a.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c := client.New(nc)
	p := c.Pool("web")
	testkit.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if len(a.Members()) != 2 {
			return fmt.Errorf("members %v", a.Members())
		}
		return nil
	})
	onB := map[string]messages.Lease{}
	for i := 0; i < 40 && len(onB) < 3; i++ {
		l, err := p.GetContainer(ctx(t), fmt.Sprintf("s%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if l.Node == b.ID() {
			onB[l.ID] = l
		}
	}
	if len(onB) == 0 {
		t.Fatal("no session landed on b")
	}
	rep, err := c.Drain(ctx(t), b.ID())
	if err != nil || rep.Node != b.ID() || rep.Acquired < len(onB) {
		t.Fatalf("drain = %+v, %v", rep, err)
	}
	// a takes the whole share; new sessions all go to a.
	testkit.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		st, _ := a.Pool("web").Stats(ctx(t))
		if st.Share.WarmTarget != 2 || st.Share.MaxInstances != 20 {
			return fmt.Errorf("a's share %+v", st.Share)
		}
		return nil
	})
	for i := range 10 {
		l, err := p.GetContainer(ctx(t), fmt.Sprintf("new%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if l.Node != a.ID() {
			t.Fatalf("new session %s went to the draining node", l.ID)
		}
	}
	// b's sessions are still served by b, until they end.
	for id, was := range onB {
		l, err := p.GetContainer(ctx(t), id)
		if err != nil || l.Endpoint != was.Endpoint {
			t.Fatalf("%s on the draining node = %+v, %v", id, l, err)
		}
		select {
		case <-b.Drained():
			t.Fatal("drained while sessions remain")
		default:
		}
		if _, err := p.ReleaseContainer(ctx(t), id); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-b.Drained():
	case <-time.After(10 * time.Second):
		t.Fatal("b not drained after its last session ended")
	}
}

// twoNodes starts nodes a and b of pool web on one NATS system: a embeds the
// server, b joins it. Cleanup stops b, then a, and fails the test if a
// child process is left.
func twoNodes(t *testing.T, web messages.PoolConfig, heartbeat, deadAfter time.Duration) (a, b *cluster.Node) {
	t.Helper()
	dir := t.TempDir()
	var nodes []*cluster.Node
	for i, name := range []string{"a", "b"} {
		o := cluster.Options{
			NodeID: fmt.Sprintf("%s-%d", name, time.Now().UnixNano()), DataDir: filepath.Join(dir, name),
			Pools: []messages.PoolConfig{web}, Logger: testkit.Logger(t), OnExit: actors.ExitStop,
			HeartbeatInterval: heartbeat, DeadAfter: deadAfter,
		}
		if i == 0 {
			o.NATSListen = "127.0.0.1:-1"
		} else {
			o.NATSURL = nodes[0].ClientURL()
		}
		n, err := cluster.Start(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = nodes[1].Shutdown(c) // b first (if still up): it uses a's NATS server
		_ = nodes[0].Shutdown(c)
		if kids := testkit.Children(); len(kids) > 0 {
			t.Errorf("processes left: %v", kids)
		}
	})
	return nodes[0], nodes[1]
}

// TestPlacementServesOnlyFromWarm: an acquire another node sends here for
// a warm container (Warmpool-Placement: warm) is served from one, and when
// none is left (the heartbeat that named this node was old) it is answered
// with Warmpool-Placement: none and starts nothing, so that the sender
// serves the session itself.
func TestPlacementServesOnlyFromWarm(t *testing.T) {
	web := testkit.DemoPool("web", time.Second) // a refill stays warming a while
	web.WarmTarget, web.MaxInstances = 1, 10
	node, nc := testkit.StartNode(t, web)
	testkit.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if st, _ := node.Pool("web").Stats(ctx(t)); st.Warm != 1 {
			return fmt.Errorf("warm %d", st.Warm)
		}
		return nil
	})
	place := func(id string) *nats.Msg {
		t.Helper()
		req := &nats.Msg{Subject: "warmpool.v1.node." + node.ID() + ".web.acquire", Data: []byte(`{"id":"` + id + `"}`), Header: nats.Header{}}
		req.Header.Set("Warmpool-Hops", "1")
		req.Header.Set("Warmpool-Placement", "warm")
		msg, err := nc.RequestMsgWithContext(ctx(t), req)
		if err != nil {
			t.Fatal(err)
		}
		return msg
	}
	if msg := place("first"); msg.Header.Get(micro.ErrorCodeHeader) != "" || msg.Header.Get("Warmpool-Placement") != "" {
		t.Fatalf("placed with a warm container free: %v %s", msg.Header, msg.Data)
	}
	msg := place("second")
	if msg.Header.Get("Warmpool-Placement") != "none" || msg.Header.Get(micro.ErrorCodeHeader) != "503" {
		t.Fatalf("placed with nothing warm: %v %s; want 503 and Warmpool-Placement: none", msg.Header, msg.Data)
	}
	st, err := node.Pool("web").Stats(ctx(t))
	if err != nil || st.Acquired != 1 || st.Waiting != 0 || st.Warming != 1 {
		t.Fatalf("stats %+v %v; want the first session only, and the refill warming unclaimed", st, err)
	}
}
