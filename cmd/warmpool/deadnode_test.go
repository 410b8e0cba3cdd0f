package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/warmpool/warmpool/actors"
	"github.com/warmpool/warmpool/client"
	"github.com/warmpool/warmpool/cluster"
	"github.com/warmpool/warmpool/messages"
	"github.com/warmpool/warmpool/testkit"
)

// TestDeadNodeSessionsMove: two nodes on one NATS server, one a real
// process. It is killed with SIGKILL: the other declares it dead within the
// configured time, takes its share, revokes its leases, and its sessions
// get new containers; the live node's sessions keep theirs.
func TestDeadNodeSessionsMove(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real node process")
	}
	a, b, bID, p := nodeAndProcess(t)
	held := map[string]messages.Lease{}
	onB, onA := 0, 0
	for i := 0; i < 40 && (onA < 3 || onB < 3); i++ {
		l, err := p.GetContainer(ctx(t), fmt.Sprintf("s%d", i))
		if err != nil {
			t.Fatal(err)
		}
		held[l.ID] = l
		if l.Node == bID {
			onB++
		} else {
			onA++
		}
	}
	if onA == 0 || onB == 0 {
		t.Fatalf("sessions on a: %d, on b: %d; want some on each", onA, onB)
	}

	killed := time.Now()
	b.kill()
	testkit.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if st, _ := a.Pool("web").Stats(ctx(t)); st.Share.Nodes != 1 || st.Share.WarmTarget != 4 {
			return fmt.Errorf("a's share %+v", st.Share)
		}
		return nil
	})
	detected := time.Since(killed)
	var servedAgain time.Duration
	for id, was := range held {
		l, err := p.GetContainer(ctx(t), id)
		for err != nil && time.Since(killed) < 20*time.Second {
			time.Sleep(50 * time.Millisecond) // not_ready until the revocation lands
			l, err = p.GetContainer(ctx(t), id)
		}
		if err != nil {
			t.Fatalf("%s after b died: %v", id, err)
		}
		if was.Node == a.ID() && l.Endpoint != was.Endpoint {
			t.Fatalf("%s lost its container on the live node", id)
		}
		if was.Node == bID {
			if l.Node != a.ID() || l.Endpoint == was.Endpoint {
				t.Fatalf("%s of the dead node got %+v", id, l)
			}
			servedAgain = max(servedAgain, time.Since(killed))
		}
	}
	t.Logf("dead node detected %s after SIGKILL (dead-after 1s); its %d sessions served again within %s",
		detected.Round(time.Millisecond), onB, servedAgain.Round(time.Millisecond))
}

// nodeAndProcess starts two nodes of the pool web on one NATS server: a in
// this process, embedding the server, and b as a real process that a test
// can kill or stop (heartbeat 100ms, dead after 1s). It waits until a sees
// b, and returns a client of web. Cleanup stops both and b's containers.
func nodeAndProcess(t *testing.T) (a *cluster.Node, b *nodeProc, bID string, web *client.Pool) {
	t.Helper()
	dir := t.TempDir()
	pool := testkit.DemoPool("web", 0)
	pool.WarmTarget, pool.MaxInstances = 4, 20
	a, err := cluster.Start(context.Background(), cluster.Options{
		NodeID: fmt.Sprintf("a-%d-%d", os.Getpid(), time.Now().UnixNano()), DataDir: filepath.Join(dir, "a"),
		NATSListen: "127.0.0.1:-1", Pools: []messages.PoolConfig{pool}, Logger: testkit.Logger(t), OnExit: actors.ExitStop,
		HeartbeatInterval: 100 * time.Millisecond, DeadAfter: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = a.Shutdown(c)
	})
	cfg := writeWebConfig(t, dir, 4, 20, "")
	bID = fmt.Sprintf("b-%d-%d", os.Getpid(), time.Now().UnixNano())
	t.Cleanup(func() { killContainers(bID) })
	b = startNodeProc(t, filepath.Join(dir, "b"), cfg, bID, a.ClientURL(), "--heartbeat", "100ms", "--dead-after", "1s")
	nc, err := nats.Connect(a.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	testkit.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if len(a.Members()) != 2 {
			return fmt.Errorf("a sees %d members", len(a.Members()))
		}
		return nil
	})
	return a, b, bID, client.New(nc).Pool("web")
}

// writeWebConfig writes a config of one pool, web, of demo-app containers
// (this test binary), and returns its path; extra is more of web's keys.
func writeWebConfig(t *testing.T, dir string, warmTarget, maxInstances int, extra string) string {
	t.Helper()
	cfg := filepath.Join(dir, "pools.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`pools:
  web:
    command: [%q, "demo-app"]
    env: {GORACE: "atexit_sleep_ms=0"}
    readyPath: /healthz
    warmTarget: %d
    maxInstances: %d
    stopGrace: 1s
%s`, os.Args[0], warmTarget, maxInstances, extra)), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// TestNodeBackFromTheDead: a node that only stalled (SIGSTOP) is declared
// dead, its leases are revoked and its sessions get new containers on the
// live node. When it runs again (SIGCONT) it still holds those sessions in
// memory, but it never hands out their old containers: every acquire of
// them, whichever node the queue group picks, gets the new container, and
// the stalled node drops the stale sessions and stops their containers.
func TestNodeBackFromTheDead(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real node process")
	}
	a, b, bID, p := nodeAndProcess(t)
	onB := map[string]messages.Lease{}
	for i := 0; i < 40 && len(onB) < 3; i++ {
		l, err := p.GetContainer(ctx(t), fmt.Sprintf("s%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if l.Node == bID {
			onB[l.ID] = l
		}
	}
	if len(onB) == 0 {
		t.Fatal("no session on b")
	}
	// Every try is short: a request the queue group gives the stalled node
	// goes unanswered until it runs again.
	acquire := func(id string) (messages.Lease, error) {
		var l messages.Lease
		err := errors.New("not tried")
		for start := time.Now(); err != nil && time.Since(start) < 20*time.Second; {
			c, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			l, err = p.GetContainer(c, id)
			cancel()
		}
		return l, err
	}

	if err := b.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	defer func() {
		if stopped {
			_ = b.cmd.Process.Signal(syscall.SIGCONT)
		}
	}()
	moved := map[string]messages.Lease{}
	for id, was := range onB {
		l, err := acquire(id)
		if err != nil || l.Node != a.ID() || l.Endpoint == was.Endpoint {
			t.Fatalf("%s while b is stalled: %+v %v", id, l, err)
		}
		moved[id] = l
	}
	if err := b.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	stopped = false
	testkit.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if len(a.Members()) != 2 {
			return fmt.Errorf("a sees %d members", len(a.Members()))
		}
		return nil
	})
	// b is back and in the queue group again: it gets about half of these
	// (all 20 rounds of an id miss it one time in a million).
	for round := range 20 {
		for id, now := range moved {
			l, err := acquire(id)
			if err != nil || l.Endpoint != now.Endpoint {
				t.Fatalf("%s after b came back (round %d): %+v %v; want %s", id, round, l, err, now.Endpoint)
			}
		}
	}
	// b dropped the stale sessions once asked, and stopped their containers.
	testkit.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		for id, was := range onB {
			if pidOfOK(was.Endpoint) > 0 {
				return fmt.Errorf("%s's old container %s still answers", id, was.Endpoint)
			}
		}
		return nil
	})
}
