package process

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/warmpool/warmpool/driver"
	"github.com/warmpool/warmpool/messages"
)

// harness is a driver for one test, and the pids the test must see gone.
type harness struct {
	t    *testing.T
	d    *Driver
	exe  string
	mu   sync.Mutex
	pids []int
}

// newHarness returns a driver that is closed when the test ends, after which
// the test fails if any process it started, or registered with track, runs.
func newHarness(t *testing.T) *harness {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, d: New(nil), exe: exe}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := h.d.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
		if n := h.d.Running(); n != 0 {
			t.Errorf("Running() = %d after Close, want 0", n)
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, pid := range h.pids {
			waitFor(t, 5*time.Second, func() error {
				if !processGone(pid) {
					return fmt.Errorf("process %d still exists", pid)
				}
				return nil
			})
		}
	})
	return h
}

func (h *harness) track(pid int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.pids = append(h.pids, pid)
}

// spec is a template that runs the test binary as helper mode, with env
// added to the template's Env.
func (h *harness) spec(mode string, env ...string) driver.Spec {
	e := map[string]string{
		envHelper: mode,
		// A -race binary sleeps a second at a clean exit, waiting for
		// reports; helpers have none to wait for.
		"GORACE": "atexit_sleep_ms=0",
	}
	for i := 0; i+1 < len(env); i += 2 {
		e[env[i]] = env[i+1]
	}
	return driver.Spec{
		Pool: "web",
		Slot: "web-1",
		Node: "n1",
		Template: messages.Template{
			Driver:  messages.DriverProcess,
			Command: []string{h.exe},
			Env:     e,
		},
	}
}

func (h *harness) start(spec driver.Spec) driver.Handle {
	h.t.Helper()
	hd, err := h.d.Start(ctx(h.t, 5*time.Second), spec)
	if err != nil {
		h.t.Fatalf("Start: %v", err)
	}
	h.track(hd.PID)
	return hd
}

func (h *harness) ready(hd driver.Handle) {
	h.t.Helper()
	if err := h.d.Ready(ctx(h.t, 10*time.Second), hd); err != nil {
		h.t.Fatalf("Ready: %v", err)
	}
}

func ctx(t *testing.T, d time.Duration) context.Context {
	c, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return c
}

// waitFor polls f until it returns nil, failing the test after total.
func waitFor(t *testing.T, total time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", total, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// processGone reports whether pid no longer runs. A zombie counts as gone: an
// orphaned grandchild is reaped by init, which in some sandboxes never reaps.
func processGone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return errors.Is(err, os.ErrNotExist)
	}
	// The state follows the parenthesised command name, which may hold ')'.
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] == 'Z'
}

func readPIDFile(t *testing.T, path string) int {
	t.Helper()
	var pid int
	waitFor(t, 5*time.Second, func() error {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		pid, err = strconv.Atoi(string(b))
		return err
	})
	return pid
}

func TestStartReadyTCP(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	hd := h.start(h.spec(modeListen, envListenAfter, "150ms", "HELPER_EXTRA", "from-template"))

	if hd.ID != strconv.Itoa(hd.PID) || hd.PID <= 0 {
		t.Errorf("handle ID %q, PID %d: want the pid as ID", hd.ID, hd.PID)
	}
	if want := "http://127.0.0.1:" + strconv.Itoa(hd.Port); hd.Endpoint != want || hd.Port <= 0 {
		t.Errorf("endpoint %q, port %d: want %q", hd.Endpoint, hd.Port, want)
	}
	if hd.StartedAt.IsZero() {
		t.Error("StartedAt is zero")
	}
	if id, err := startIDOf(hd.PID); err != nil || hd.StartID != id || (procfsSupported && id == "") {
		t.Errorf("StartID %q, want the start time %q (%v)", hd.StartID, id, err)
	}
	if h.d.Running() != 1 {
		t.Errorf("Running() = %d, want 1", h.d.Running())
	}
	h.ready(hd)

	resp, err := http.Get(hd.Endpoint + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"PORT": strconv.Itoa(hd.Port), "WARMPOOL_SLOT": "web-1", "WARMPOOL_POOL": "web",
		"WARMPOOL_NODE": "n1", "HELPER_EXTRA": "from-template", "PID": hd.ID,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("child's %s = %q, want %q", k, got[k], v)
		}
	}

	if err := h.d.Stop(ctx(t, 5*time.Second), hd, 5*time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if !processGone(hd.PID) {
		t.Errorf("process %d exists after Stop", hd.PID)
	}
	if h.d.Running() != 0 {
		t.Errorf("Running() = %d after Stop, want 0", h.d.Running())
	}
	if _, err := h.d.Wait(ctx(t, time.Second), hd); !errors.Is(err, driver.ErrUnknownContainer) {
		t.Errorf("Wait after Stop: %v, want ErrUnknownContainer", err)
	}
	if err := h.d.Stop(ctx(t, time.Second), hd, time.Second); err != nil {
		t.Errorf("second Stop: %v, want nil", err)
	}
}

func TestReadyHTTPPath(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	const healthyAfter = 300 * time.Millisecond
	spec := h.spec(modeListen, envHealthyAfter, healthyAfter.String())
	spec.Template.ReadyPath = "/healthz"
	hd := h.start(spec)

	// The port answers at once; only the HTTP probe can tell that the
	// process is not ready yet.
	h.ready(hd)
	if since := time.Since(hd.StartedAt); since < healthyAfter {
		t.Errorf("ready after %s, before /healthz answered 2xx (%s)", since, healthyAfter)
	}
}

func TestReadyReportsExit(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	hd := h.start(h.spec(modeExit))

	err := h.d.Ready(ctx(t, 10*time.Second), hd)
	if !errors.Is(err, driver.ErrExited) {
		t.Fatalf("Ready: %v, want ErrExited", err)
	}
	for _, want := range []string{"exited with status 3", "helper: starting", "boom, cannot open the thing"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Ready error %q does not contain %q", err, want)
		}
	}

	exit, err := h.d.Wait(ctx(t, 5*time.Second), hd)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if exit.Code != 3 || !strings.HasPrefix(exit.Reason, "exited with status 3; last output:\n") ||
		!strings.Contains(exit.Reason, "boom") {
		t.Errorf("Wait = %+v, want code 3 with the output", exit)
	}
	if h.d.Running() != 0 {
		t.Errorf("Running() = %d after the exit, want 0", h.d.Running())
	}
	// Stopping an exited process is not an error.
	if err := h.d.Stop(ctx(t, time.Second), hd, time.Second); err != nil {
		t.Errorf("Stop after exit: %v", err)
	}
}

func TestWaitHonoursContext(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	hd := h.start(h.spec(modeListen))
	if _, err := h.d.Wait(ctx(t, 100*time.Millisecond), hd); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait on a running process: %v, want DeadlineExceeded", err)
	}
}

// exitOf returns where hd's exit will come. It looks the process up now:
// a Wait that only started once Stop had forgotten the handle would find
// no container.
func (h *harness) exitOf(hd driver.Handle) <-chan driver.Exit {
	h.t.Helper()
	p := h.d.lookup(hd.ID)
	if p == nil {
		h.t.Fatalf("no process %s", hd.ID)
	}
	exits := make(chan driver.Exit, 1)
	go func() {
		exit, _ := h.d.wait(ctx(h.t, 10*time.Second), p)
		exits <- exit
	}()
	return exits
}

func TestStopGraceful(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	hd := h.start(h.spec(modeListen))
	h.ready(hd)

	exits := h.exitOf(hd)
	begin := time.Now()
	if err := h.d.Stop(ctx(t, 10*time.Second), hd, 10*time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	// The helper dies of SIGTERM at once; Stop must not sit out the grace.
	if took := time.Since(begin); took > 3*time.Second {
		t.Errorf("Stop took %s for a process that stops on SIGTERM", took)
	}
	if exit := <-exits; exit.Code != -1 || !strings.HasPrefix(exit.Reason, "killed by signal 15") {
		t.Errorf("exit = %+v, want killed by signal 15", exit)
	}
}

func TestStopEscalatesToKill(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	hd := h.start(h.spec(modeIgnoreTerm))
	// Ready also makes sure the helper ignores SIGTERM before it gets one.
	h.ready(hd)

	exits := h.exitOf(hd)
	const grace = 200 * time.Millisecond
	begin := time.Now()
	if err := h.d.Stop(ctx(t, 10*time.Second), hd, grace); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if took := time.Since(begin); took < grace || took > 3*time.Second {
		t.Errorf("Stop took %s, want the grace %s and then a prompt kill", took, grace)
	}
	if exit := <-exits; exit.Code != -1 || !strings.HasPrefix(exit.Reason, "killed by signal 9") {
		t.Errorf("exit = %+v, want killed by signal 9", exit)
	}
	if !processGone(hd.PID) {
		t.Errorf("process %d exists after Stop", hd.PID)
	}
}

func TestStopWithoutGraceKills(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	hd := h.start(h.spec(modeIgnoreTerm))
	h.ready(hd)
	if err := h.d.Stop(ctx(t, 10*time.Second), hd, 0); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if !processGone(hd.PID) {
		t.Errorf("process %d exists after Stop", hd.PID)
	}
}

func TestStopInterruptedByContextKills(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	hd := h.start(h.spec(modeIgnoreTerm))
	h.ready(hd)
	begin := time.Now()
	if err := h.d.Stop(ctx(t, 200*time.Millisecond), hd, time.Minute); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if took := time.Since(begin); took > 3*time.Second {
		t.Errorf("Stop took %s; ctx should cut the grace short", took)
	}
	if !processGone(hd.PID) {
		t.Errorf("process %d exists after Stop", hd.PID)
	}
}

func TestStopKillsGrandchildren(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	pidFile := filepath.Join(t.TempDir(), "grandchild.pid")
	hd := h.start(h.spec(modeGrandchild, envPIDFile, pidFile))
	h.ready(hd)
	grandchild := readPIDFile(t, pidFile)
	h.track(grandchild)
	if processGone(grandchild) {
		t.Fatalf("grandchild %d is not running", grandchild)
	}

	// The leader dies of SIGTERM; the grandchild ignores it and must be
	// killed with the group.
	if err := h.d.Stop(ctx(t, 10*time.Second), hd, 5*time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	waitFor(t, 5*time.Second, func() error {
		if !processGone(grandchild) {
			return fmt.Errorf("grandchild %d still runs", grandchild)
		}
		return nil
	})
}

func TestLeaderExitKillsGroup(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	pidFile := filepath.Join(t.TempDir(), "grandchild.pid")
	hd := h.start(h.spec(modeGrandchild, envPIDFile, pidFile, envThen, "exit"))
	grandchild := readPIDFile(t, pidFile)
	h.track(grandchild)

	// The grandchild holds the output pipe; Wait must not wait for it.
	begin := time.Now()
	exit, err := h.d.Wait(ctx(t, 10*time.Second), hd)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if exit.Code != 0 || exit.Reason != "exited with status 0" {
		t.Errorf("exit = %+v, want status 0 and no output", exit)
	}
	if took := time.Since(begin); took > 3*time.Second {
		t.Errorf("Wait took %s", took)
	}
	waitFor(t, 5*time.Second, func() error {
		if !processGone(grandchild) {
			return fmt.Errorf("grandchild %d outlived its leader", grandchild)
		}
		return nil
	})
}

func TestReadyHonoursContext(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	hd := h.start(h.spec(modeListen, envListenAfter, "30s"))
	begin := time.Now()
	err := h.d.Ready(ctx(t, 200*time.Millisecond), hd)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Ready: %v, want DeadlineExceeded", err)
	}
	if took := time.Since(begin); took > 2*time.Second {
		t.Errorf("Ready took %s with a 200ms context", took)
	}
}

func TestOutputFloodDoesNotBlock(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	hd := h.start(h.spec(modeFlood))
	h.ready(hd)
}

func TestStartErrors(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	missing := filepath.Join(t.TempDir(), "warmpool-no-such-binary")
	tests := []struct {
		name string
		tmpl messages.Template
		want string
	}{
		{"missing binary", messages.Template{Command: []string{missing, "--flag"}}, missing},
		{"missing in PATH", messages.Template{Command: []string{"warmpool-no-such-binary-in-path"}}, "warmpool-no-such-binary-in-path"},
		{"no command", messages.Template{}, "no command"},
		{"empty command", messages.Template{Command: []string{""}}, "no command"},
		{"bad env name", messages.Template{Command: []string{h.exe}, Env: map[string]string{"A=B": "c"}}, "A=B"},
		{"bad ready path", messages.Template{Command: []string{h.exe}, ReadyPath: "@evil.example/x"}, "readyPath"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := h.d.Start(ctx(t, 5*time.Second), driver.Spec{Pool: "p", Slot: "s", Template: tt.tmpl})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Start: %v, want an error naming %q", err, tt.want)
			}
		})
	}
	if n := h.d.Running(); n != 0 {
		t.Errorf("Running() = %d after failed starts", n)
	}
	if len(h.d.ports) != 0 {
		t.Errorf("failed starts left ports reserved: %v", h.d.ports)
	}
}

func TestStartWithEndedContext(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := h.d.Start(c, h.spec(modeListen)); !errors.Is(err, context.Canceled) {
		t.Errorf("Start: %v, want context.Canceled", err)
	}
}

func TestUnknownHandle(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	for _, hd := range []driver.Handle{{}, {ID: "999999999"}, {ID: "not a pid"}} {
		if err := h.d.Ready(ctx(t, time.Second), hd); !errors.Is(err, driver.ErrUnknownContainer) {
			t.Errorf("Ready(%q): %v, want ErrUnknownContainer", hd.ID, err)
		}
		if _, err := h.d.Wait(ctx(t, time.Second), hd); !errors.Is(err, driver.ErrUnknownContainer) {
			t.Errorf("Wait(%q): %v, want ErrUnknownContainer", hd.ID, err)
		}
		if err := h.d.Stop(ctx(t, time.Second), hd, time.Second); err != nil {
			t.Errorf("Stop(%q): %v, want nil", hd.ID, err)
		}
	}
}

func TestCloseStopsEverything(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	var handles []driver.Handle
	for _, mode := range []string{modeListen, modeListen, modeIgnoreTerm} {
		hd := h.start(h.spec(mode))
		h.ready(hd)
		handles = append(handles, hd)
	}
	if n := h.d.Running(); n != 3 {
		t.Fatalf("Running() = %d, want 3", n)
	}
	if len(h.d.ports) != 3 {
		t.Errorf("ports reserved: %v, want 3", h.d.ports)
	}
	// The SIGTERM-ignoring one holds Close up until ctx ends and it is killed.
	begin := time.Now()
	if err := h.d.Close(ctx(t, 300*time.Millisecond)); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if took := time.Since(begin); took > 3*time.Second {
		t.Errorf("Close took %s with a 300ms context", took)
	}
	if n := h.d.Running(); n != 0 {
		t.Errorf("Running() = %d after Close", n)
	}
	for _, hd := range handles {
		if !processGone(hd.PID) {
			t.Errorf("process %d exists after Close", hd.PID)
		}
	}
	if _, err := h.d.Start(ctx(t, time.Second), h.spec(modeListen)); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close: %v, want ErrClosed", err)
	}
}

func TestConcurrentStartsGetDistinctPorts(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	const n = 8
	handles := make([]driver.Handle, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			hd, err := h.d.Start(ctx(t, 5*time.Second), h.spec(modeListen))
			if err != nil {
				t.Errorf("Start: %v", err)
				return
			}
			h.track(hd.PID)
			handles[i] = hd
		})
	}
	wg.Wait()
	seen := map[int]bool{}
	for _, hd := range handles {
		if seen[hd.Port] {
			t.Errorf("port %d given twice", hd.Port)
		}
		seen[hd.Port] = true
	}
	// Concurrent Ready, Wait and Stop on the same handles, for -race.
	for _, hd := range handles {
		wg.Go(func() { _ = h.d.Ready(ctx(t, 10*time.Second), hd) })
		wg.Go(func() { _, _ = h.d.Wait(ctx(t, 10*time.Second), hd) })
		wg.Go(func() { _ = h.d.Stop(ctx(t, 10*time.Second), hd, time.Second) })
		wg.Go(func() { _ = h.d.Stop(ctx(t, 10*time.Second), hd, 0) })
	}
	wg.Wait()
	if n := h.d.Running(); n != 0 {
		t.Errorf("Running() = %d after stopping all", n)
	}
}

func TestDescribeExitWithoutState(t *testing.T) {
	t.Parallel()
	e := describeExit(nil, errors.New("no child"), []string{"last"})
	if e.Code != -1 || e.Reason != "could not be waited for: no child; last output:\nlast" {
		t.Errorf("describeExit = %+v", e)
	}
}
