package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/warmpool/warmpool/actors"
	"github.com/warmpool/warmpool/client"
	"github.com/warmpool/warmpool/cluster"
	"github.com/warmpool/warmpool/messages"
	"github.com/warmpool/warmpool/testkit"
)

// lifeKinds are the events of a session that acquires a warm container
// and releases it.
var lifeKinds = []string{messages.EventSlotAcquired, messages.EventLeaseCreated, messages.EventLeaseReleased, messages.EventSlotReleased}

// eventsPool is a pool of demo apps that are this test binary (see
// TestMain), one kept warm.
func eventsPool(name string) messages.PoolConfig {
	c := testkit.DemoPool(name, 0)
	c.Command = []string{os.Args[0], "demo-app", "--startup-delay", "0s"}
	c.Env = map[string]string{"GORACE": "atexit_sleep_ms=0"}
	c.WarmTarget = 1
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// live acquires and releases the container of session id once one is warm.
func live(t *testing.T, nc *nats.Conn, pool, id string) messages.Lease {
	t.Helper()
	p := client.New(nc).Pool(pool)
	testkit.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		st, err := p.Stats(testCtx(t))
		if err != nil {
			return err
		}
		if st.Warm < 1 {
			return fmt.Errorf("warm = %d", st.Warm)
		}
		return nil
	})
	l, err := p.GetContainer(testCtx(t), id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.ReleaseContainer(testCtx(t), id); err != nil {
		t.Fatal(err)
	}
	return l
}

// lineKinds is the kind of each readable line, the fourth field.
func lineKinds(stdout string) []string {
	var kinds []string
	for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
		if f := strings.Fields(line); len(f) >= 4 {
			kinds = append(kinds, f[3])
		}
	}
	return kinds
}

func jsonEvents(t *testing.T, stdout string) []messages.Event {
	t.Helper()
	var events []messages.Event
	for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
		if line == "" {
			continue
		}
		var e messages.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		events = append(events, e)
	}
	return events
}

func eventKinds(events []messages.Event) []string {
	var kinds []string
	for _, e := range events {
		kinds = append(kinds, e.Kind)
	}
	return kinds
}

// waitLines runs the command until its output has the kinds want: a batch
// of events reaches the stream up to 50ms after them.
func waitLines(t *testing.T, env map[string]string, want []string, args ...string) string {
	t.Helper()
	var stdout string
	testkit.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		code, out, stderr := runCLI(env, args...)
		if code != exitOK {
			return fmt.Errorf("%q: exit %d: %s", args, code, stderr)
		}
		stdout = out
		got := lineKinds(out)
		if slices.Contains(args, "--json") {
			got = eventKinds(jsonEvents(t, out))
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("%q: kinds %v, want %v:\n%s", args, got, want, out)
		}
		return nil
	})
	return stdout
}

func TestEventsCommand(t *testing.T) {
	node, nc := testkit.StartNode(t, eventsPool("web"))
	env := map[string]string{"NATS_URL": node.ClientURL()}
	l := live(t, nc, "web", "alice")
	mid := time.Now()
	live(t, nc, "web", "bob")

	out := waitLines(t, env, lifeKinds, "events", "--session", "alice")
	for i, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if _, err := time.Parse(time.RFC3339, f[0]); err != nil || f[1] != "web" || f[2] != node.ID() || !strings.Contains(line, "slot="+l.Slot) {
			t.Errorf("line %d: %q; want time, pool, node, kind, slot", i, line)
		}
		if i < 3 && !strings.Contains(line, `session="alice"`) {
			t.Errorf("line %d: %q; want the session", i, line)
		}
	}

	out = waitLines(t, env, lifeKinds, "events", "--json", "--pool", "web", "--session", "alice")
	for i, e := range jsonEvents(t, out) {
		if e.Type != messages.TypeEvent || e.Pool != "web" || e.Node != node.ID() || e.Slot != l.Slot {
			t.Errorf("event %d: %+v", i, e)
		}
	}

	// --since: an RFC 3339 time, or a duration ago.
	// Events reach the stream in batches, within about 50 ms: poll.
	testkit.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		code, out, stderr := runCLI(env, "events", "--json", "--since", mid.Format(time.RFC3339Nano))
		if code != exitOK {
			return fmt.Errorf("--since: exit %d: %s", code, stderr)
		}
		var bob []string
		for _, e := range jsonEvents(t, out) {
			if e.Time.Before(mid) || e.Session == "alice" {
				t.Errorf("--since %s printed %+v", mid.Format(time.RFC3339Nano), e)
			}
			if e.Session == "bob" {
				bob = append(bob, e.Kind)
			}
		}
		if !slices.Equal(bob, lifeKinds[:3]) {
			return fmt.Errorf("bob's events since %s: %v", mid, bob)
		}
		return nil
	})
	waitLines(t, env, lifeKinds, "events", "--since", "1h", "--session", "alice")
	waitLines(t, env, nil, "events", "--since", "1h", "--session", "alice", "--pool", "nosuch")

	// The flag wins over the environment.
	waitLines(t, map[string]string{"NATS_URL": "nats://127.0.0.1:1"}, lifeKinds,
		"events", "--session", "alice", "--nats-url", node.ClientURL())
	if code, _, stderr := runCLI(map[string]string{"NATS_URL": "nats://127.0.0.1:1"}, "events"); code != exitFail || !strings.Contains(stderr, "cannot connect") {
		t.Errorf("no NATS: exit %d, %q", code, stderr)
	}
}

func TestEventsFromADataDir(t *testing.T) {
	dir := t.TempDir()
	opts := cluster.Options{
		NodeID: "test-" + uuid.NewString()[:8], DataDir: dir, NATSListen: "127.0.0.1:-1",
		Pools: []messages.PoolConfig{eventsPool("web")}, Logger: testkit.Logger(t), OnExit: actors.ExitStop,
	}
	node, err := cluster.Start(testCtx(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			node.Shutdown(context.Background())
		}
	})
	nc, err := nats.Connect(node.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	l := live(t, nc, "web", "alice")
	nc.Close()

	code, stdout, stderr := runCLI(nil, "events", "--data-dir", dir)
	if code != exitFail || !strings.Contains(stderr, "in use") || !strings.Contains(stderr, "--nats-url") || stdout != "" {
		t.Errorf("events --data-dir of a running node: exit %d, stdout %q, stderr %q; want it refused", code, stdout, stderr)
	}

	// Shutdown publishes the last events.
	if err := node.Shutdown(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	stopped = true
	out := waitLines(t, nil, lifeKinds, "events", "--data-dir", dir, "--session", "alice")
	if !strings.Contains(out, "slot="+l.Slot) {
		t.Errorf("output lacks slot %s:\n%s", l.Slot, out)
	}
	code, stdout, stderr = runCLI(nil, "events", "--data-dir", dir, "--json")
	if code != exitOK {
		t.Fatalf("events --data-dir --json: exit %d: %s", code, stderr)
	}
	all := eventKinds(jsonEvents(t, stdout))
	if len(all) < 6 || all[len(all)-1] != messages.EventSlotStopped {
		t.Errorf("the stopped node's events: %v; want its life to the last slot.stopped", all)
	}

	// The reader let go of the data dir, and left the store as it was: the
	// node starts again on it, with its events.
	node, err = cluster.Start(testCtx(t), opts)
	if err != nil {
		t.Fatalf("restarting the node on the data dir after reading: %v", err)
	}
	stopped = false
	waitLines(t, map[string]string{"NATS_URL": node.ClientURL()}, lifeKinds, "events", "--session", "alice")
	if err := node.Shutdown(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	stopped = true

	empty := t.TempDir()
	code, _, stderr = runCLI(nil, "events", "--data-dir", empty)
	if code != exitFail || !strings.Contains(stderr, "no JetStream store") {
		t.Errorf("events --data-dir of an empty dir: exit %d, %q", code, stderr)
	}
	if entries, _ := os.ReadDir(empty); len(entries) != 0 {
		t.Errorf("reading an empty dir left %v in it", entries)
	}
}

func TestEventsUsageErrors(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"events", "extra"},
		{"events", "--bogus"},
		{"events", "--since", "soon"},
		{"events", "--since", "-5m"},
		{"events", "--since", "2026-01-02"},
		{"events", "--pool", "a.b"},
		{"events", "--session", strings.Repeat("x", messages.MaxIDLength+1)},
		{"events", "--session", "\xff"},
		{"events", "--follow", "--data-dir", dir},
		{"events", "--data-dir", dir, "--nats-url", "nats://127.0.0.1:4222"},
		{"events", "--json=maybe"},
	} {
		code, stdout, stderr := runCLI(nil, args...)
		if code != exitUsage || stdout != "" || stderr == "" {
			t.Errorf("warmpool %q: exit %d, stdout %q, stderr %q; want exit %d and why", args, code, stdout, stderr, exitUsage)
		}
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	for _, tt := range []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"10m", now.Add(-10 * time.Minute), true},
		{"1h30m", now.Add(-90 * time.Minute), true},
		{"0s", now, true},
		{"2026-01-02T15:04:05Z", time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC), true},
		{"2026-01-02T15:04:05.25+02:00", time.Date(2026, 1, 2, 13, 4, 5, 250e6, time.UTC), true},
		{"-1m", time.Time{}, false},
		{"yesterday", time.Time{}, false},
		{"2026-01-02 15:04:05", time.Time{}, false},
		{"", time.Time{}, false},
	} {
		got, err := parseSince(tt.in, now)
		if (err == nil) != tt.ok || (tt.ok && !got.Equal(tt.want)) {
			t.Errorf("parseSince(%q) = %v, %v; want %v (ok %v)", tt.in, got, err, tt.want, tt.ok)
		}
	}
}
