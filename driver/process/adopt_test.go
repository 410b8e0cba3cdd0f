//go:build linux

package process

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/warmpool/warmpool/driver"
)

// nodeSeq makes node names unique: List finds every process on the machine
// that names the node, including those of parallel tests and other runs.
var nodeSeq atomic.Int64

func testNode(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), nodeSeq.Add(1))
}

// syncBuffer is a bytes.Buffer for a logger that goroutines share.
type syncBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newDriver returns a driver that plays a restarted node. It is closed when
// the test ends, which stops whatever it still tracks.
func newDriver(t *testing.T) *Driver {
	t.Helper()
	d := New(nil)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := d.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
		if n := d.Running(); n != 0 {
			t.Errorf("Running() = %d after Close, want 0", n)
		}
	})
	return d
}

func list(t *testing.T, d *Driver, node string) []driver.Found {
	t.Helper()
	found, err := d.List(ctx(t, 5*time.Second), node)
	if err != nil {
		t.Fatalf("List(%q): %v", node, err)
	}
	return found
}

func listOne(t *testing.T, d *Driver, node string) driver.Found {
	t.Helper()
	found := list(t, d, node)
	if len(found) != 1 {
		t.Fatalf("List(%q) = %+v, want one process", node, found)
	}
	return found[0]
}

// killGroupIfSame kills the group that pid leads, if pid still is the
// process that started at startID: a cleanup must not hit a reused pid.
func killGroupIfSame(pid int, startID string) {
	if st, err := readStat(pid); err == nil && st.startID == startID {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	waitFor(t, 5*time.Second, func() error {
		if !processGone(pid) {
			return fmt.Errorf("process %d still runs", pid)
		}
		return nil
	})
}

// checkFound compares what List found with the handle Start returned.
func checkFound(t *testing.T, f driver.Found, hd driver.Handle, pool, slot, node string) {
	t.Helper()
	if f.Handle.ID != hd.ID || f.Handle.PID != hd.PID || f.Handle.Port != hd.Port ||
		f.Handle.Endpoint != hd.Endpoint || f.Handle.StartID != hd.StartID || hd.StartID == "" {
		t.Errorf("List found handle %+v, want %+v", f.Handle, hd)
	}
	if d := f.Handle.StartedAt.Sub(hd.StartedAt); d < -time.Second || d > time.Second {
		t.Errorf("List's StartedAt %v is %s off Start's %v", f.Handle.StartedAt, d, hd.StartedAt)
	}
	if f.Pool != pool || f.Slot != slot || f.Node != node {
		t.Errorf("List found pool %q slot %q node %q, want %q %q %q", f.Pool, f.Slot, f.Node, pool, slot, node)
	}
}

// A restarted node, in the form of a second driver, finds what the first
// started, adopts it, probes it and stops it.
func TestAdoptFromAnotherDriver(t *testing.T) {
	t.Parallel()
	a := newHarness(t)
	node := testNode("n1")
	spec := a.spec(modeListen)
	spec.Node = node
	hd := a.start(spec)

	b := newDriver(t)
	f := listOne(t, b, node)
	checkFound(t, f, hd, "web", "web-1", node)

	if err := b.Adopt(ctx(t, time.Second), f.Handle); err != nil {
		t.Fatalf("Adopt: %v", err)
	}
	// Idempotent, with List's handle or Start's.
	for _, h := range []driver.Handle{f.Handle, hd} {
		if err := b.Adopt(ctx(t, time.Second), h); err != nil {
			t.Errorf("second Adopt: %v, want nil", err)
		}
	}
	if n := b.Running(); n != 1 {
		t.Errorf("Running() = %d after Adopt, want 1", n)
	}
	b.mu.Lock()
	if b.ports[hd.Port] != 1 {
		t.Errorf("adopted port %d not reserved: %v", hd.Port, b.ports)
	}
	b.mu.Unlock()
	if err := b.Ready(ctx(t, 10*time.Second), f.Handle); err != nil {
		t.Fatalf("Ready: %v", err)
	}

	aExit := make(chan driver.Exit, 1)
	go func() {
		exit, _ := a.d.Wait(ctx(t, 10*time.Second), hd)
		aExit <- exit
	}()
	if err := b.Stop(ctx(t, 10*time.Second), f.Handle, 5*time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if !processGone(hd.PID) {
		t.Errorf("process %d exists after Stop", hd.PID)
	}
	if n := b.Running(); n != 0 {
		t.Errorf("Running() = %d after Stop, want 0", n)
	}
	if _, err := b.Wait(ctx(t, time.Second), f.Handle); !errors.Is(err, driver.ErrUnknownContainer) {
		t.Errorf("Wait after Stop: %v, want ErrUnknownContainer", err)
	}
	// The process was still a's child: a saw it die of b's SIGTERM.
	if exit := <-aExit; !strings.HasPrefix(exit.Reason, "killed by signal 15") {
		t.Errorf("a's Wait = %+v, want killed by signal 15", exit)
	}
	if found := list(t, b, node); len(found) != 0 {
		t.Errorf("List after Stop = %+v", found)
	}
}

// A node is killed with SIGKILL and leaves its container behind, reparented
// and logging into the void; the next node adopts it.
func TestAdoptOrphanOfKilledNode(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name    string
		noPidfd bool
	}{{"pidfd", false}, {"polling", true}} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			testAdoptOrphan(t, tt.noPidfd)
		})
	}
}

func testAdoptOrphan(t *testing.T, noPidfd bool) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	node := testNode("n2")
	handleFile := filepath.Join(t.TempDir(), "handle.json")
	nodeCmd := exec.Command(exe)
	nodeCmd.Env = append(os.Environ(),
		envHelper+"="+modeNode, envNodeName+"="+node, envChildMode+"="+modeChatty,
		envHandleFile+"="+handleFile, "GORACE=atexit_sleep_ms=0")
	if err := nodeCmd.Start(); err != nil {
		t.Fatal(err)
	}
	nodeWaited := false
	t.Cleanup(func() {
		if !nodeWaited {
			_ = nodeCmd.Process.Kill()
			_ = nodeCmd.Wait()
		}
	})

	var started driver.Handle
	waitFor(t, 10*time.Second, func() error {
		b, err := os.ReadFile(handleFile)
		if err != nil {
			return err
		}
		return json.Unmarshal(b, &started)
	})
	t.Cleanup(func() {
		killGroupIfSame(started.PID, started.StartID)
		waitGone(t, started.PID)
	})

	if err := nodeCmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = nodeCmd.Wait()
	nodeWaited = true
	waitFor(t, 5*time.Second, func() error {
		st, err := readStat(started.PID)
		if err != nil {
			return err
		}
		if st.ppid == nodeCmd.Process.Pid {
			return fmt.Errorf("process %d not reparented yet", started.PID)
		}
		return nil
	})

	d := newDriver(t)
	d.noPidfd = noPidfd
	var logs syncBuffer
	d.log = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f := listOne(t, d, node)
	checkFound(t, f, started, "orphans", "orphans-1", node)
	if err := d.Adopt(ctx(t, time.Second), f.Handle); err != nil {
		t.Fatalf("Adopt: %v", err)
	}
	if err := d.Ready(ctx(t, 10*time.Second), f.Handle); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	if got := d.lookup(f.Handle.ID).pidfd != nil; got == noPidfd {
		t.Errorf("watching with a pidfd: %v, want %v", got, !noPidfd)
	}

	// It keeps writing with its node dead; through a pipe without a reader
	// the first line would have killed it.
	getTicks := func() (int64, error) {
		resp, err := http.Get(f.Handle.Endpoint + "/ticks")
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return 0, err
		}
		return strconv.ParseInt(string(b), 10, 64)
	}
	first, err := getTicks()
	if err != nil {
		t.Fatalf("ticks: %v", err)
	}
	waitFor(t, 5*time.Second, func() error {
		n, err := getTicks()
		if err != nil {
			return err
		}
		if n < first+20 {
			return fmt.Errorf("%d ticks, want %d", n, first+20)
		}
		return nil
	})

	exits := make(chan driver.Exit, 1)
	go func() {
		exit, err := d.Wait(ctx(t, 10*time.Second), f.Handle)
		if err != nil {
			t.Errorf("Wait: %v", err)
		}
		exits <- exit
	}()
	// Killed from outside, as by the OOM killer.
	killed := time.Now()
	killGroupIfSame(started.PID, started.StartID)
	exit := <-exits
	if took := time.Since(killed); took > 2*time.Second {
		t.Errorf("Wait noticed the exit after %s", took)
	}
	if !noPidfd && strings.Contains(logs.String(), "polling") {
		t.Errorf("fell back to polling with a pidfd; log:\n%s", logs.String())
	}
	if exit.Code != -1 || !strings.HasPrefix(exit.Reason, "adopted process exited; last output:\n") ||
		!strings.Contains(exit.Reason, "tick") {
		t.Errorf("Wait = %+v, want code -1, the adopted reason and the output", exit)
	}
	if n := d.Running(); n != 0 {
		t.Errorf("Running() = %d after the exit, want 0", n)
	}
	if err := d.Stop(ctx(t, time.Second), f.Handle, time.Second); err != nil {
		t.Errorf("Stop after the exit: %v", err)
	}
	waitGone(t, started.PID)
}

// List finds group leaders of its node only, and Adopt refuses what is not
// the process its handle describes.
func TestListAndAdoptCheck(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	node, other := testNode("n4"), testNode("n4-other")

	spec := h.spec(modeListen)
	spec.Node = node
	leader := h.start(spec)

	// A leader with a child in its group and a child with a group of its
	// own: neither child is a container.
	pidFile := filepath.Join(t.TempDir(), "grandchild.pid")
	spec = h.spec(modeGrandchild, envPIDFile, pidFile)
	spec.Node, spec.Slot = node, "web-2"
	withChild := h.start(spec)
	child := readPIDFile(t, pidFile)
	h.track(child)
	pidFile = filepath.Join(t.TempDir(), "grandchild.pid")
	spec = h.spec(modeGrandchild, envPIDFile, pidFile, envOwnGroup, "1")
	spec.Node, spec.Slot = node, "web-3"
	withLeaderChild := h.start(spec)
	leaderChild := readPIDFile(t, pidFile)
	h.track(leaderChild)
	t.Cleanup(func() { _ = syscall.Kill(-leaderChild, syscall.SIGKILL) })

	spec = h.spec(modeListen)
	spec.Node, spec.Slot = other, "web-4"
	otherNode := h.start(spec)

	// A group leader without WARMPOOL_NODE.
	plain := exec.Command(h.exe)
	plain.Env = append(os.Environ(), envHelper+"="+modeSleep, "GORACE=atexit_sleep_ms=0")
	plain.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := plain.Start(); err != nil {
		t.Fatal(err)
	}
	h.track(plain.Process.Pid)
	t.Cleanup(func() {
		_ = plain.Process.Kill()
		_ = plain.Wait()
	})

	stopped := h.start(h.spec(modeListen))
	if err := h.d.Stop(ctx(t, 5*time.Second), stopped, 0); err != nil {
		t.Fatal(err)
	}

	d := newDriver(t)
	found := list(t, d, node)
	var pids []int
	for _, f := range found {
		pids = append(pids, f.Handle.PID)
	}
	want := []int{leader.PID, withChild.PID, withLeaderChild.PID}
	slices.Sort(want)
	if !slices.Equal(pids, want) {
		t.Errorf("List(%q) found pids %v, want %v (children %d, %d not)", node, pids, want, child, leaderChild)
	}
	if f := listOne(t, d, other); f.Handle.PID != otherNode.PID || f.Slot != "web-4" {
		t.Errorf("List(%q) = %+v", other, f)
	}
	if _, err := d.List(ctx(t, time.Second), ""); err == nil {
		t.Error("List of an empty node name succeeded")
	}

	startID := func(pid int) string {
		id, err := startIDOf(pid)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	withID := func(hd driver.Handle, f func(*driver.Handle)) driver.Handle {
		f(&hd)
		return hd
	}
	tests := []struct {
		name string
		h    driver.Handle
		want error
	}{
		{"wrong start", withID(leader, func(h *driver.Handle) { h.StartID = "1" }), driver.ErrNotSame},
		{"no start", withID(leader, func(h *driver.Handle) { h.StartID = "" }), driver.ErrNotSame},
		{"pid differs from id", withID(leader, func(h *driver.Handle) { h.PID++ }), driver.ErrNotSame},
		{"port differs", withID(leader, func(h *driver.Handle) { h.Port++ }), driver.ErrNotSame},
		{"not a pid", driver.Handle{ID: "web-1", StartID: "1"}, driver.ErrUnknownContainer},
		{"exited", stopped, driver.ErrUnknownContainer},
		{"not a group leader", driver.Handle{ID: strconv.Itoa(child), StartID: startID(child)}, driver.ErrNotSame},
		{"no node", driver.Handle{ID: strconv.Itoa(plain.Process.Pid), StartID: startID(plain.Process.Pid)}, driver.ErrNotSame},
	}
	for _, tt := range tests {
		if err := d.Adopt(ctx(t, time.Second), tt.h); !errors.Is(err, tt.want) {
			t.Errorf("Adopt %s: %v, want %v", tt.name, err, tt.want)
		}
	}
	if n := d.Running(); n != 0 || len(d.ports) != 0 {
		t.Errorf("refused adoptions left Running() = %d, ports %v", n, d.ports)
	}

	// The leader of its own group, once its parent is gone, is an escapee
	// that List reports so that the node stops it.
	if err := h.d.Stop(ctx(t, 5*time.Second), withLeaderChild, 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() error {
		for _, f := range list(t, d, node) {
			if f.Handle.PID == leaderChild {
				return nil
			}
		}
		return fmt.Errorf("List does not find the orphaned group leader %d", leaderChild)
	})
}

// A node that detaches leaves its processes running; the next one adopts
// them, and may detach again.
func TestDetach(t *testing.T) {
	t.Parallel()
	a := newHarness(t)
	node := testNode("n3")
	spec := a.spec(modeChatty)
	spec.Node = node
	hd := a.start(spec)
	a.ready(hd)

	// A Wait in flight: it has found its process, and blocks.
	detachedWait := func(d *Driver, h driver.Handle) <-chan error {
		p := d.lookup(h.ID)
		if p == nil {
			t.Fatalf("handle %q is not tracked", h.ID)
		}
		errs := make(chan error, 1)
		go func() {
			_, err := d.wait(ctx(t, 10*time.Second), p)
			errs <- err
		}()
		return errs
	}
	alive := func(what string) {
		t.Helper()
		if processGone(hd.PID) {
			t.Fatalf("process %d gone %s", hd.PID, what)
		}
	}

	waited := detachedWait(a.d, hd)
	a.d.Detach()
	if err := <-waited; !errors.Is(err, ErrClosed) {
		t.Errorf("Wait in flight during Detach: %v, want ErrClosed", err)
	}
	alive("after Detach")
	if n := a.d.Running(); n != 0 {
		t.Errorf("Running() = %d after Detach, want 0", n)
	}
	if _, err := a.d.Start(ctx(t, time.Second), spec); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Detach: %v, want ErrClosed", err)
	}
	if err := a.d.Adopt(ctx(t, time.Second), hd); !errors.Is(err, ErrClosed) {
		t.Errorf("Adopt after Detach: %v, want ErrClosed", err)
	}
	if _, err := a.d.Wait(ctx(t, time.Second), hd); !errors.Is(err, driver.ErrUnknownContainer) {
		t.Errorf("Wait after Detach: %v, want ErrUnknownContainer", err)
	}
	a.d.Detach() // twice is harmless

	b := newDriver(t)
	f := listOne(t, b, node)
	if err := b.Adopt(ctx(t, time.Second), f.Handle); err != nil {
		t.Fatalf("Adopt: %v", err)
	}
	waited = detachedWait(b, f.Handle)
	b.Detach()
	if err := <-waited; !errors.Is(err, ErrClosed) {
		t.Errorf("Wait in flight during the second Detach: %v, want ErrClosed", err)
	}
	alive("after the second Detach")
	if n := b.Running(); n != 0 {
		t.Errorf("Running() = %d after Detach, want 0", n)
	}

	c := newDriver(t)
	if err := c.Adopt(ctx(t, time.Second), f.Handle); err != nil {
		t.Fatalf("Adopt by the third driver: %v", err)
	}
	if err := c.Ready(ctx(t, 10*time.Second), f.Handle); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	if err := c.Stop(ctx(t, 10*time.Second), f.Handle, 5*time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	waitGone(t, hd.PID)
	if n := c.Running(); n != 0 {
		t.Errorf("Running() = %d after Stop, want 0", n)
	}
}

func TestParseStat(t *testing.T) {
	t.Parallel()
	tail := " 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 4242 99 100\n"
	tests := []struct {
		name, in string
		want     procStat
		err      bool
	}{
		{"plain", "42 (sleep) S 7 42" + tail, procStat{state: 'S', ppid: 7, pgrp: 42, startID: "4242"}, false},
		{"name with ') ' in it", "42 (a) b (c) Z 1 9" + tail, procStat{state: 'Z', ppid: 1, pgrp: 9, startID: "4242"}, false},
		{"no name", "42 sleep S 7 42" + tail, procStat{}, true},
		{"short", "42 (sleep) S 7 42 1 2", procStat{}, true},
		{"bad start", "42 (sleep) S 7 42 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 x", procStat{}, true},
	}
	for _, tt := range tests {
		got, err := parseStat([]byte(tt.in))
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("%s: parseStat = %+v, %v; want %+v, error %v", tt.name, got, err, tt.want, tt.err)
		}
	}
	if !(procStat{state: 'Z'}).gone() || (procStat{state: 'S'}).gone() {
		t.Error("gone() is wrong for Z or S")
	}
}
