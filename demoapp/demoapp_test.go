package demoapp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// freePort returns a port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// runApp runs Run in the background; stop cancels it and returns its result.
func runApp(t *testing.T, o Options) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, o) }()
	stopped := false
	var result error
	stop = func() error {
		if stopped {
			return result
		}
		stopped = true
		cancel()
		select {
		case result = <-done:
		case <-time.After(5 * time.Second):
			result = errors.New("Run did not return 5s after cancel")
		}
		return result
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func dial(port int) error {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
	if err != nil {
		return err
	}
	return c.Close()
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
		time.Sleep(5 * time.Millisecond)
	}
}

func getInfo(t *testing.T, port int) Info {
	t.Helper()
	resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /: %s, %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	var info Info
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		t.Fatal(err)
	}
	return info
}

// Not parallel: it sets the environment.
func TestRunServesAfterStartupDelay(t *testing.T) {
	t.Setenv(EnvSlot, "web-3")
	t.Setenv(EnvPool, "web")
	port := freePort(t)
	const delay = 300 * time.Millisecond
	begin := time.Now()
	stop := runApp(t, Options{Port: port, StartupDelay: delay})

	// Nothing answers while the app boots.
	if err := dial(port); err == nil && time.Since(begin) < delay {
		t.Fatalf("port %d answered %s after start, before the %s delay", port, time.Since(begin), delay)
	}
	waitFor(t, 5*time.Second, func() error { return dial(port) })
	if took := time.Since(begin); took < delay {
		t.Errorf("port answered after %s, before the %s delay", took, delay)
	}

	first := getInfo(t, port)
	second := getInfo(t, port)
	if first.Slot != "web-3" || first.Pool != "web" || first.PID != os.Getpid() {
		t.Errorf("GET / = %+v, want slot web-3, pool web, pid %d", first, os.Getpid())
	}
	if first.Requests != 1 || second.Requests != 2 {
		t.Errorf("requests = %d then %d, want 1 then 2", first.Requests, second.Requests)
	}
	if first.UptimeMS < delay.Milliseconds() || first.StartedAt.Before(begin) {
		t.Errorf("uptime %dms, started %s: want the startup delay counted", first.UptimeMS, first.StartedAt)
	}

	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", port))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "ok" {
		t.Errorf("GET /healthz = %s %q, want 200 ok", resp.Status, body)
	}
	// Health probes do not count as requests.
	if third := getInfo(t, port); third.Requests != 3 {
		t.Errorf("requests = %d after a probe, want 3", third.Requests)
	}
	resp, err = http.Get(fmt.Sprintf("http://127.0.0.1:%d/nope", port))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /nope = %s, want 404", resp.Status)
	}

	if err := stop(); err != nil {
		t.Fatalf("Run after cancel: %v, want nil", err)
	}
	if err := dial(port); err == nil {
		t.Errorf("port %d still answers after Run returned", port)
	}
}

func TestRunCancelledDuringStartup(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	stop := runApp(t, Options{Port: port, StartupDelay: time.Minute})
	begin := time.Now()
	if err := stop(); err != nil {
		t.Fatalf("Run: %v, want nil", err)
	}
	if took := time.Since(begin); took > 2*time.Second {
		t.Errorf("Run took %s to return after cancel during startup", took)
	}
	if err := dial(port); err == nil {
		t.Errorf("port %d answers though the app never finished starting", port)
	}
}

// Not parallel: it sets the environment.
func TestRunPortFromEnv(t *testing.T) {
	port := freePort(t)
	t.Setenv(EnvPort, strconv.Itoa(port))
	stop := runApp(t, Options{})
	waitFor(t, 5*time.Second, func() error { return dial(port) })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// Not parallel: it sets the environment.
func TestRunRejectsBadPorts(t *testing.T) {
	tests := []struct {
		name string
		port int
		env  string
		want string
	}{
		{"negative", -1, "", "out of range"},
		{"too big", 70000, "", "out of range"},
		{"no port", 0, "", "no port"},
		{"env not a number", 0, "http", `"http" is not a port`},
		{"env zero", 0, "0", `"0" is not a port`},
		{"env too big", 0, "65536", `"65536" is not a port`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(EnvPort, tt.env)
			err := Run(t.Context(), Options{Port: tt.port, StartupDelay: time.Hour})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Run: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestRunPortInUse(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	err = Run(ctx, Options{Port: l.Addr().(*net.TCPAddr).Port})
	if err == nil || !strings.Contains(err.Error(), "listen") {
		t.Errorf("Run on a taken port: %v, want a listen error", err)
	}
}

// Not parallel: it sets the environment.
func TestListenHost(t *testing.T) {
	for env, want := range map[string]string{"": "127.0.0.1", "0": "127.0.0.1", "1": "0.0.0.0"} {
		t.Setenv(EnvListenAll, env)
		if got := listenHost(); got != want {
			t.Errorf("%s=%q: host %s, want %s", EnvListenAll, env, got, want)
		}
	}
}
