package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/warmpool/warmpool/client"
	"github.com/warmpool/warmpool/driver/process"
	"github.com/warmpool/warmpool/messages"
	"github.com/warmpool/warmpool/testkit"
)

// nodeProc is a warmpool node running as a real child process of the test
// (the test binary in serve mode), so that it can be killed with SIGKILL.
type nodeProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	log    *testkit.Buffer
	done   chan struct{}
	url    string
	dir    string
	cfg    string
	nodeID string
}

func startNodeProc(t *testing.T, dir, cfg, nodeID, listen string, extra ...string) *nodeProc {
	t.Helper()
	n := &nodeProc{t: t, log: &testkit.Buffer{}, done: make(chan struct{}), url: "nats://" + listen, dir: dir, cfg: cfg, nodeID: nodeID}
	args := []string{"serve", "--data-dir", dir, "--config", cfg, "--node-id", nodeID, "--log-level", "debug"}
	if strings.HasPrefix(listen, "nats://") {
		n.url = listen
		args = append(args, "--nats-url", listen)
	} else {
		args = append(args, "--nats-listen", listen)
	}
	n.cmd = exec.Command(os.Args[0], append(args, extra...)...)
	n.cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	n.cmd.Stdout, n.cmd.Stderr = n.log, n.log
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = n.cmd.Wait(); close(n.done) }()
	t.Cleanup(func() { n.kill() })
	testkit.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		select {
		case <-n.done:
			t.Fatalf("node exited at start; log:\n%s", n.log.String())
		default:
		}
		nc, err := nats.Connect(n.url)
		if err != nil {
			return err
		}
		defer nc.Close()
		_, err = client.New(nc).Pool("web").Stats(context.Background())
		return err
	})
	return n
}

func (n *nodeProc) kill() {
	_ = n.cmd.Process.Signal(syscall.SIGKILL)
	<-n.done
}

// terminate stops the node gracefully, as systemd or a terminal would.
func (n *nodeProc) terminate() {
	n.t.Helper()
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(60 * time.Second):
		n.t.Fatalf("node did not stop after SIGTERM; log:\n%s", n.log.String())
	}
	if code := n.cmd.ProcessState.ExitCode(); code != 0 {
		n.t.Fatalf("node exited %d after SIGTERM; log:\n%s", code, n.log.String())
	}
}

// containers lists the live demo processes that carry nodeID, as the node's
// own recovery would find them.
func containers(t *testing.T, nodeID string) []string {
	t.Helper()
	found, err := process.New(nil).List(context.Background(), nodeID)
	if err != nil {
		t.Fatal(err)
	}
	var slots []string
	for _, f := range found {
		slots = append(slots, f.Slot)
	}
	sort.Strings(slots)
	return slots
}

// killContainers stops what a node left behind, whatever the test's outcome.
func killContainers(nodeID string) {
	d := process.New(nil)
	found, _ := d.List(context.Background(), nodeID)
	for _, f := range found {
		if d.Adopt(context.Background(), f.Handle) == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_ = d.Stop(ctx, f.Handle, 0)
			cancel()
		}
	}
}

func pidOf(t *testing.T, endpoint string) int {
	t.Helper()
	pid := pidOfOK(endpoint)
	if pid <= 0 {
		t.Fatalf("GET %s: no pid", endpoint)
	}
	return pid
}

func writeRecoverConfig(t *testing.T, dir string) string {
	t.Helper()
	cfg := fmt.Sprintf(`pools:
  web:
    command: [%q, "demo-app", "--startup-delay", "0s"]
    env: {GORACE: "atexit_sleep_ms=0"}
    readyPath: /healthz
    warmTarget: 2
    maxInstances: 60
    acquireTimeout: 5m
    stopGrace: 2s
  short:
    command: [%q, "demo-app", "--startup-delay", "0s"]
    env: {GORACE: "atexit_sleep_ms=0"}
    readyPath: /healthz
    warmTarget: 0
    maxInstances: 5
    acquireTimeout: 2s
    refreshInterval: 1h
    stopGrace: 2s
`, os.Args[0], os.Args[0])
	path := filepath.Join(dir, "pools.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestNodeRecoversAfterSIGKILLAndGracefulRestart is the durability check: a
// node process is killed with SIGKILL while acquires are in flight, started
// again on the same data dir, then restarted gracefully. Every session that
// got a reply keeps its container; expired leases are released; the live
// containers are exactly those the pool owns.
func TestNodeRecoversAfterSIGKILLAndGracefulRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real node processes")
	}
	dir := t.TempDir()
	cfg := writeRecoverConfig(t, dir)
	// Unique on this machine: the node adopts or stops whatever carries its id.
	nodeID := fmt.Sprintf("recover-%d-%d", os.Getpid(), time.Now().UnixNano())
	t.Cleanup(func() { killContainers(nodeID) })
	listen := fmt.Sprintf("127.0.0.1:%d", testkit.FreePorts(t, 1)[0])
	node := startNodeProc(t, filepath.Join(dir, "data"), cfg, nodeID, listen)

	nc, err := nats.Connect(node.url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c := client.New(nc, client.WithTimeout(10*time.Second))
	web, short := c.Pool("web"), c.Pool("short")
	ctx := context.Background()

	// Sessions acquired before the crash, with the process behind each.
	held := map[string]messages.Lease{}
	for i := range 8 {
		id := fmt.Sprintf("user-%d", i)
		l, err := web.GetContainer(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		held[id] = l
	}
	pids := map[string]int{}
	for id, l := range held {
		pids[id] = pidOf(t, l.Endpoint)
	}
	for _, id := range []string{"brief-1", "brief-2"} {
		if _, err := short.GetContainer(ctx, id); err != nil {
			t.Fatal(err)
		}
	}

	// Acquires in flight while the node is killed: each one that got a
	// reply must be honoured after recovery.
	var mu sync.Mutex
	replied := map[string]messages.Lease{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("inflight-%d-%d", w, i)
				rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				l, err := web.GetContainer(rctx, id)
				cancel()
				if err == nil {
					mu.Lock()
					replied[id] = l
					mu.Unlock()
				} else if errors.Is(err, client.ErrExhausted) {
					return
				}
			}
		}()
	}
	testkit.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(replied) < 4 {
			return fmt.Errorf("%d in-flight acquires answered", len(replied))
		}
		return nil
	})
	node.kill()
	close(stop)
	wg.Wait()
	for id, l := range replied {
		held[id] = l
	}
	t.Logf("%d sessions held at the crash, %d of them acquired while it happened", len(held), len(replied))

	time.Sleep(2 * time.Second) // the short pool's leases expire while the node is down
	node = startNodeProc(t, filepath.Join(dir, "data"), cfg, nodeID, listen)
	check := func(when string) {
		t.Helper()
		for id, want := range held {
			l, err := web.GetContainer(ctx, id)
			if err != nil {
				t.Fatalf("%s: acquire %s: %v", when, id, err)
			}
			if l.Endpoint != want.Endpoint || l.Slot != want.Slot || l.Cold {
				t.Fatalf("%s: %s got %s (slot %s); before it held %s (slot %s)", when, id, l.Endpoint, l.Slot, want.Endpoint, want.Slot)
			}
			if pid, ok := pids[id]; ok && pidOfOK(l.Endpoint) != pid {
				t.Fatalf("%s: %s's endpoint is served by another process", when, id)
			}
		}
		for _, id := range []string{"brief-1", "brief-2"} {
			if _, err := short.Renew(ctx, id); !errors.Is(err, client.ErrUnknownLease) {
				t.Fatalf("%s: renew of expired %s: %v; want ErrUnknownLease", when, id, err)
			}
		}
		// No orphan, no duplicate: the live containers are the pools' own.
		testkit.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
			ws, err := web.Stats(ctx)
			if err != nil {
				return err
			}
			ss, err := short.Stats(ctx)
			if err != nil {
				return err
			}
			live := containers(t, nodeID)
			if ws.Warming+ws.Draining+ss.Warming+ss.Draining != 0 {
				return fmt.Errorf("still settling: web %+v short %+v", ws, ss)
			}
			// At least: an acquire whose lease was written but whose reply
			// was lost in the crash holds a container too, until it expires.
			if ws.Acquired < len(held) {
				return fmt.Errorf("web has %d acquired; %d sessions are held", ws.Acquired, len(held))
			}
			if len(live) != ws.Total+ss.Total {
				return fmt.Errorf("%d live containers; the pools own %d", len(live), ws.Total+ss.Total)
			}
			for i := 1; i < len(live); i++ {
				if live[i] == live[i-1] {
					return fmt.Errorf("two containers for slot %s", live[i])
				}
			}
			return nil
		})
	}
	check("after SIGKILL")

	node.terminate() // default --on-exit leave: containers keep running
	if len(containers(t, nodeID)) == 0 {
		t.Fatal("a graceful exit stopped the containers; --on-exit leave keeps them")
	}
	node = startNodeProc(t, filepath.Join(dir, "data"), cfg, nodeID, listen)
	check("after a graceful restart")
	if !bytes.Contains([]byte(node.log.String()), []byte("recovered")) {
		t.Errorf("the node did not log its recovery:\n%s", node.log.String())
	}
}

// pidOfOK is the pid behind a demo endpoint, or -1.
func pidOfOK(endpoint string) int {
	resp, err := http.Get(endpoint + "/")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var info struct {
		PID int `json:"pid"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&info)
	return info.PID
}
