package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/warmpool/warmpool/cluster"
	"github.com/warmpool/warmpool/messages"
	"github.com/warmpool/warmpool/testkit"
)

// TestMain lets the test binary be the demo app: serve's default pool runs
// os.Executable() demo-app, which under go test is this binary.
func TestMain(m *testing.M) {
	testkit.RunDemoAppIfChild() // for pools made with testkit.DemoPool
	// The test binary stands in for the warmpool binary: as a pool's demo
	// container, and as a node process that a test can SIGKILL.
	if len(os.Args) > 1 && (os.Args[1] == "demo-app" || os.Args[1] == "serve" || os.Args[1] == "nats") {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
	}
	code := m.Run()
	testkit.RemoveProjectImage()
	os.Exit(code)
}

// runCLI runs the command line with the given environment and returns the
// exit code and what was printed.
func runCLI(env map[string]string, args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut, func(k string) string { return env[k] })
	return code, out.String(), errOut.String()
}

func TestParse(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		min, max int
		wantPos  []string
		wantPool string
		wantCode int
		// wantPool is the --pool parsed; "" when parse should stop the command.
	}{
		{"flags first", []string{"--pool", "web", "ID"}, 1, 1, []string{"ID"}, "web", exitOK},
		{"flags last", []string{"ID", "--pool", "web"}, 1, 1, []string{"ID"}, "web", exitOK},
		{"flags both sides", []string{"-pool=a", "ID", "--timeout", "2s", "--pool=web"}, 1, 1, []string{"ID"}, "web", exitOK},
		{"dash id after --", []string{"--pool", "web", "--", "-odd"}, 1, 1, []string{"-odd"}, "web", exitOK},
		{"-- then flags are args", []string{"--", "a", "--pool", "x"}, 0, 5, []string{"a", "--pool", "x"}, "default", exitOK},
		{"no args wanted", nil, 0, 0, nil, "default", exitOK},
		{"missing", []string{"--pool", "web"}, 1, 1, nil, "", exitUsage},
		{"extra", []string{"a", "b"}, 1, 1, nil, "", exitUsage},
		{"extra after flags", []string{"a", "--pool", "web", "b"}, 1, 1, nil, "", exitUsage},
		{"unknown flag", []string{"a", "--bogus"}, 1, 1, nil, "", exitUsage},
		{"flag without value", []string{"a", "--pool"}, 1, 1, nil, "", exitUsage},
		{"help", []string{"-h"}, 1, 1, nil, "", exitOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			c := &cli{stdout: &bytes.Buffer{}, stderr: &stderr, env: func(string) string { return "" }}
			fs, cf := c.clientFlagSet("test", "ID", "test")
			pos, code, ok := c.parse(fs, tt.args, tt.min, tt.max)
			if code != tt.wantCode {
				t.Fatalf("code = %d, want %d; stderr:\n%s", code, tt.wantCode, stderr.String())
			}
			if wantOK := tt.wantPool != ""; ok != wantOK {
				t.Fatalf("ok = %v, want %v", ok, wantOK)
			}
			if !ok {
				if stderr.Len() == 0 {
					t.Error("a rejected command line printed nothing")
				}
				return
			}
			if !reflect.DeepEqual(pos, tt.wantPos) {
				t.Errorf("positional = %q, want %q", pos, tt.wantPos)
			}
			if cf.pool != tt.wantPool {
				t.Errorf("pool = %q, want %q", cf.pool, tt.wantPool)
			}
		})
	}
}

func TestUsageErrors(t *testing.T) {
	tests := [][]string{
		{},
		{"bogus"},
		{"acquire"},
		{"acquire", "a", "b"},
		{"acquire", ""},
		{"acquire", strings.Repeat("x", messages.MaxIDLength+1)},
		{"acquire", "a", "--pool", "a.b"},
		{"acquire", "a", "--timeout", "0s"},
		{"acquire", "a", "--timeout", "soon"},
		{"release"},
		{"renew", "a", "b"},
		{"stats", "extra"},
		{"shutdown", "extra"},
		{"warmup"},
		{"warmup", "many"},
		{"warmup", "1.5"},
		{"warmup", "--", "-1"},
		{"warmup", "1", "2"},
		{"serve", "extra"},
		{"serve", "--log-level", "loud"},
		{"serve", "--log-format", "xml"},
		{"serve", "--replicas", "0"},
		{"serve", "--replicas", "6"},
		{"serve", "--nats-routes", "127.0.0.1:6222"},
		{"serve", "--nats-url", "nats://127.0.0.1:4222", "--nats-cluster-listen", "127.0.0.1:6222"},
		{"nats", "extra"},
		{"nats", "--routes", "http://a:1"},
		{"nats", "--routes", "nats://nohost"},
		{"nats", "--sync", "sometimes"},
		{"demo-app", "extra"},
		{"demo-app", "--port", "70000"},
		{"demo-app", "--startup-delay", "-1s"},
		{"help", "bogus"},
		{"help", "a", "b"},
		{"version", "extra"},
	}
	for _, args := range tests {
		code, stdout, stderr := runCLI(nil, args...)
		if code != exitUsage {
			t.Errorf("warmpool %q: exit %d, want %d; stderr:\n%s", args, code, exitUsage, stderr)
		}
		if stdout != "" {
			t.Errorf("warmpool %q printed to stdout: %q", args, stdout)
		}
		if stderr == "" {
			t.Errorf("warmpool %q: nothing on stderr", args)
		}
	}
}

func TestHelpAndVersion(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"--help"}, {"-h"}} {
		code, stdout, _ := runCLI(nil, args...)
		if code != exitOK {
			t.Errorf("warmpool %q: exit %d", args, code)
		}
		for _, cmd := range commands {
			if !strings.Contains(stdout, "\n  "+cmd.name+" ") {
				t.Errorf("warmpool %q does not list %s:\n%s", args, cmd.name, stdout)
			}
		}
	}
	for _, cmd := range commands {
		code, stdout, stderr := runCLI(nil, "help", cmd.name)
		if code != exitOK || stdout == "" || stderr != "" {
			t.Errorf("warmpool help %s: exit %d, stdout %q, stderr %q", cmd.name, code, stdout, stderr)
		}
	}
	code, _, stderr := runCLI(nil, "acquire", "-h")
	if code != exitOK || !strings.Contains(stderr, "warmpool acquire [flags] ID") {
		t.Errorf("acquire -h: exit %d, stderr %q", code, stderr)
	}
	code, stdout, _ := runCLI(nil, "version")
	if code != exitOK || !strings.HasPrefix(stdout, "warmpool ") {
		t.Errorf("version: exit %d, %q", code, stdout)
	}
}

func TestResolveNATSURL(t *testing.T) {
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "NATS_URL" {
				return v
			}
			return ""
		}
	}
	tests := []struct{ flag, env, want string }{
		{"nats://flag:1", "nats://env:2", "nats://flag:1"},
		{"", "nats://env:2", "nats://env:2"},
		{"", "", defaultNATSURL},
	}
	for _, tt := range tests {
		if got := resolveNATSURL(tt.flag, env(tt.env)); got != tt.want {
			t.Errorf("resolveNATSURL(%q, NATS_URL=%q) = %q, want %q", tt.flag, tt.env, got, tt.want)
		}
	}
}

func TestRedactURLs(t *testing.T) {
	got := cluster.RedactURLs("nats://user:secret@h:1, nats://token@h:2,nats://h:3")
	if strings.Contains(got, "secret") || strings.Contains(got, "token") || !strings.Contains(got, "nats://h:3") {
		t.Errorf("RedactURLs = %q", got)
	}
}

// startServer runs an embedded nats-server on a random port for one test.
func startServer(t *testing.T) *server.Server { return testkit.StartNATS(t) }

// fakeNode stands in for a warmpool node: the real service name and subjects,
// canned answers. Pool "full" answers acquire with ErrExhausted; pool "slow"
// never answers; every other pool succeeds.
type fakeNode struct {
	mu       sync.Mutex
	subjects []string
	bodies   []string
}

func (f *fakeNode) last() (subject, body string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.subjects) == 0 {
		return "", ""
	}
	return f.subjects[len(f.subjects)-1], f.bodies[len(f.bodies)-1]
}

func startFake(t *testing.T, srv *server.Server) *fakeNode {
	t.Helper()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	svc, err := micro.AddService(nc, micro.Config{Name: messages.ServiceName, Version: messages.ServiceVersion})
	if err != nil {
		t.Fatalf("add service: %v", err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	f := &fakeNode{}
	for _, verb := range messages.Verbs {
		err := svc.AddEndpoint(verb, micro.HandlerFunc(func(req micro.Request) {
			pool := strings.Split(req.Subject(), ".")[2]
			f.mu.Lock()
			f.subjects = append(f.subjects, req.Subject())
			f.bodies = append(f.bodies, string(req.Data()))
			f.mu.Unlock()
			f.answer(pool, verb, req)
		}), micro.WithEndpointSubject(messages.Subject("*", verb)))
		if err != nil {
			t.Fatalf("add endpoint: %v", err)
		}
	}
	// Make sure the server has the subscriptions before the CLI sends.
	if err := nc.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	return f
}

func (f *fakeNode) answer(pool, verb string, req micro.Request) {
	var s messages.SessionRequest
	_ = json.Unmarshal(req.Data(), &s)
	switch {
	case pool == "slow":
		return
	case pool == "full":
		b := messages.NewErrorBody(fmt.Errorf("%w: pool full runs 3 of 3 containers", messages.ErrExhausted))
		data, _ := json.Marshal(b)
		_ = req.Error(strconv.Itoa(b.Status), b.Message, data)
	case verb == messages.VerbAcquire || verb == messages.VerbRenew:
		_ = req.RespondJSON(messages.Lease{Type: messages.TypeLease, Pool: pool, ID: s.ID, Slot: "slot-1",
			Endpoint: "http://127.0.0.1:40001", Node: "n1", ExpiresAt: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)})
	case verb == messages.VerbRelease:
		_ = req.RespondJSON(messages.Released{Type: messages.TypeReleased, Pool: pool, ID: s.ID, Slot: "slot-1"})
	case verb == messages.VerbStats:
		_ = req.RespondJSON(messages.Stats{Type: messages.TypeStats, Pool: pool, Warm: 2, Total: 2, Config: messages.DefaultPoolConfig(pool)})
	case verb == messages.VerbWarmup:
		var w messages.WarmupRequest
		_ = json.Unmarshal(req.Data(), &w)
		_ = req.RespondJSON(messages.WarmupReply{Type: messages.TypeWarmup, Pool: pool, Requested: w.Count, Started: w.Count})
	case verb == messages.VerbShutdown:
		_ = req.RespondJSON(messages.ShutdownReply{Type: messages.TypeShutdown, Pool: pool, Stopped: 2})
	}
}

func TestClientCommands(t *testing.T) {
	srv := startServer(t)
	fake := startFake(t, srv)
	env := map[string]string{"NATS_URL": srv.ClientURL()}

	tests := []struct {
		args        []string
		wantSubject string
		wantBody    string
		out         any // decoded from stdout
		check       func(any) bool
		oneLine     bool
	}{
		{[]string{"acquire", "--pool", "web", "s1"}, "warmpool.v1.web.acquire", `{"id":"s1"}`, &messages.Lease{},
			func(v any) bool {
				l := v.(*messages.Lease)
				return l.ID == "s1" && l.Pool == "web" && l.Slot == "slot-1"
			}, true},
		{[]string{"acquire", "s 2", "--pool", "web"}, "warmpool.v1.web.acquire", `{"id":"s 2"}`, &messages.Lease{},
			func(v any) bool { return v.(*messages.Lease).ID == "s 2" }, true},
		{[]string{"acquire", "--", "-dash"}, "warmpool.v1.default.acquire", `{"id":"-dash"}`, &messages.Lease{},
			func(v any) bool { return v.(*messages.Lease).ID == "-dash" }, true},
		{[]string{"renew", "s1", "--pool=web"}, "warmpool.v1.web.renew", `{"id":"s1"}`, &messages.Lease{},
			func(v any) bool { return v.(*messages.Lease).Type == messages.TypeLease }, true},
		{[]string{"release", "s1"}, "warmpool.v1.default.release", `{"id":"s1"}`, &messages.Released{},
			func(v any) bool { return v.(*messages.Released).ID == "s1" }, true},
		{[]string{"stats", "--pool", "web"}, "warmpool.v1.web.stats", `{}`, &messages.Stats{},
			func(v any) bool { s := v.(*messages.Stats); return s.Warm == 2 && s.Config.Name == "web" }, false},
		{[]string{"warmup", "3", "--pool", "web"}, "warmpool.v1.web.warmup", `{"count":3}`, &messages.WarmupReply{},
			func(v any) bool { return v.(*messages.WarmupReply).Started == 3 }, true},
		{[]string{"shutdown", "--pool", "web"}, "warmpool.v1.web.shutdown", `{}`, &messages.ShutdownReply{},
			func(v any) bool { return v.(*messages.ShutdownReply).Stopped == 2 }, true},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, stdout, stderr := runCLI(env, tt.args...)
			if code != exitOK {
				t.Fatalf("exit %d; stderr:\n%s", code, stderr)
			}
			if subject, body := fake.last(); subject != tt.wantSubject || body != tt.wantBody {
				t.Errorf("sent %s %s, want %s %s", subject, body, tt.wantSubject, tt.wantBody)
			}
			if err := json.Unmarshal([]byte(stdout), tt.out); err != nil {
				t.Fatalf("stdout %q is not the reply: %v", stdout, err)
			}
			if !tt.check(tt.out) {
				t.Errorf("stdout %q is not the expected reply", stdout)
			}
			if tt.oneLine && strings.Count(stdout, "\n") != 1 {
				t.Errorf("stdout %q is not one line", stdout)
			}
		})
	}
}

func TestClientCommandErrors(t *testing.T) {
	srv := startServer(t)
	startFake(t, srv)
	empty := startServer(t) // no node behind it

	// A port nobody listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "nats://" + l.Addr().String()
	l.Close()

	tests := []struct {
		name   string
		env    map[string]string
		args   []string
		stderr []string // substrings
	}{
		{"exhausted", map[string]string{"NATS_URL": srv.ClientURL()}, []string{"acquire", "s1", "--pool", "full"},
			[]string{"warmpool: ", "pool exhausted"}},
		{"no node", map[string]string{"NATS_URL": empty.ClientURL()}, []string{"acquire", "s1"},
			[]string{"warmpool: ", "no warmpool node answers on warmpool.v1.default.acquire", "warmpool serve"}},
		{"timeout", map[string]string{"NATS_URL": srv.ClientURL()}, []string{"stats", "--pool", "slow", "--timeout", "100ms"},
			[]string{"warmpool: ", "deadline exceeded"}},
		{"cannot connect", nil, []string{"stats", "--nats-url", deadURL},
			[]string{"warmpool: ", "cannot connect to NATS at " + deadURL}},
		{"cannot connect via env", map[string]string{"NATS_URL": deadURL}, []string{"stats"},
			[]string{"cannot connect to NATS at " + deadURL}},
		// The flag wins over the environment: a dead NATS_URL does not matter.
		{"flag over env", map[string]string{"NATS_URL": deadURL}, []string{"acquire", "s1", "--pool", "full", "--nats-url", srv.ClientURL()},
			[]string{"pool exhausted"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(tt.env, tt.args...)
			if code != exitFail {
				t.Errorf("exit %d, want %d", code, exitFail)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
			if !strings.HasPrefix(stderr, "warmpool: ") || strings.Count(stderr, "\n") != 1 {
				t.Errorf("stderr %q is not one `warmpool: ` line", stderr)
			}
			for _, s := range tt.stderr {
				if !strings.Contains(stderr, s) {
					t.Errorf("stderr %q lacks %q", stderr, s)
				}
			}
		})
	}
}

// TestServeEndToEnd runs `warmpool serve` with the default config (one pool
// of demo apps, which are this test binary) and drives it with the client
// commands, then stops it with SIGTERM as a terminal or systemd would.
func TestServeEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	listen := fmt.Sprintf("127.0.0.1:%d", testkit.FreePorts(t, 1)[0])
	env := map[string]string{"NATS_URL": "nats://" + listen}
	var serveErr testkit.Buffer
	done := make(chan int, 1)
	recording := filepath.Join(t.TempDir(), "run.jsonl")
	go func() {
		done <- run([]string{"serve", "--data-dir", t.TempDir(), "--nats-listen", listen, "--log-level", "debug", "--on-exit", "stop", "--record", recording},
			&bytes.Buffer{}, &serveErr, func(string) string { return "" })
	}()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
			<-done
		}
	})

	// The node answers stats once it serves; serve has caught signals by then.
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, _, stderr := runCLI(env, "stats", "--timeout", "1s")
		if code == exitOK {
			break
		}
		select {
		case code := <-done:
			stopped = true
			t.Fatalf("serve exited %d early; log:\n%s", code, serveErr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("node not serving after 20s: %s\nlog:\n%s", stderr, serveErr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	code, stdout, stderr := runCLI(env, "acquire", "e2e-1")
	if code != exitOK {
		t.Fatalf("acquire: exit %d: %s\nlog:\n%s", code, stderr, serveErr.String())
	}
	var lease messages.Lease
	if err := json.Unmarshal([]byte(stdout), &lease); err != nil || lease.ID != "e2e-1" || lease.Endpoint == "" {
		t.Fatalf("acquire printed %q (%v)", stdout, err)
	}
	code, stdout, _ = runCLI(env, "acquire", "e2e-1")
	var again messages.Lease
	if code != exitOK || json.Unmarshal([]byte(stdout), &again) != nil || again.Slot != lease.Slot {
		t.Errorf("second acquire of the same id: exit %d, %q; want slot %s", code, stdout, lease.Slot)
	}
	if code, _, stderr := runCLI(env, "release", "e2e-1"); code != exitOK {
		t.Errorf("release: exit %d: %s", code, stderr)
	}
	code, _, stderr = runCLI(env, "release", "e2e-1")
	if code != exitFail || !strings.Contains(stderr, "unknown lease") {
		t.Errorf("second release: exit %d, %q; want unknown lease", code, stderr)
	}

	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		stopped = true
		if code != exitOK {
			t.Errorf("serve exited %d after SIGTERM; log:\n%s", code, serveErr.String())
		}
	case <-time.After(40 * time.Second):
		t.Fatalf("serve did not stop after SIGTERM; log:\n%s", serveErr.String())
	}
	if log := serveErr.String(); !strings.Contains(log, "warmpool serving") || !strings.Contains(log, "warmpool shutting down") {
		t.Errorf("log lacks the serving and shutting down lines:\n%s", log)
	}
	if kids := testkit.Children(); len(kids) > 0 {
		t.Errorf("processes left after serve stopped: %v", kids)
	}

	// The recording of the run replays to the same events.
	code, stdout, stderr = runCLI(nil, "replay", recording)
	if code != exitOK || !strings.Contains(stdout, "reproduced the recorded events exactly") {
		t.Errorf("replay: exit %d\n%s%s", code, stdout, stderr)
	}
	data, err := os.ReadFile(recording)
	if err != nil {
		t.Fatal(err)
	}
	tampered := filepath.Join(t.TempDir(), "tampered.jsonl")
	if err := os.WriteFile(tampered, []byte(strings.Replace(string(data), `"id":"e2e-1"`, `"id":"e2e-2"`, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, stdout, _ := runCLI(nil, "replay", tampered); code != exitFail || !strings.Contains(stdout, "DIVERGED") {
		t.Errorf("replay of a tampered recording: exit %d\n%s", code, stdout)
	}
}

// TestBenchRefusesBadFlags: bench checks its flags before it starts
// anything.
func TestBenchRefusesBadFlags(t *testing.T) {
	for _, tt := range []struct {
		args     []string
		code     int
		inStderr string
	}{
		{[]string{"bench", "--sync", "sometimes"}, exitUsage, "--sync"},
		{[]string{"bench", "--pool", "web"}, exitUsage, "--pool applies with --nats-url"},
		{[]string{"bench", "--nats-url", "nats://127.0.0.1:1", "--sync", "always"}, exitUsage, "--sync applies"},
		{[]string{"bench", "--cpuprofile", filepath.Join(t.TempDir(), "no", "such", "dir", "cpu.prof")}, exitFail, "cpuprofile"},
		{[]string{"bench", "--nats-url", "nats://127.0.0.1:1", "--docker-image", "warmpool:dev"}, exitUsage, "--docker-image applies"},
		// Missing image or no engine: refused before anything starts.
		{[]string{"bench", "--docker-image", "warmpool-no-such-image:none"}, exitFail, "--docker-image"},
	} {
		code, stdout, stderr := runCLI(nil, tt.args...)
		if code != tt.code || !strings.Contains(stderr, tt.inStderr) || stdout != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit %d mentioning %q", tt.args, code, stdout, stderr, tt.code, tt.inStderr)
		}
	}
}

// TestNATSStartFailures: `warmpool nats` that cannot start says why and
// exits 1, leaving nothing running.
func TestNATSStartFailures(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"nats", "--listen", l.Addr().String(), "--data-dir", t.TempDir()}, "cannot listen on " + l.Addr().String()},
		{[]string{"nats", "--listen", "127.0.0.1:-1", "--cluster-listen", l.Addr().String(), "--data-dir", t.TempDir()}, "cannot listen on " + l.Addr().String()},
		{[]string{"nats", "--listen", "nowhere", "--data-dir", t.TempDir()}, "nats listen address"},
		{[]string{"nats", "--name", "a.b", "--listen", "127.0.0.1:-1", "--data-dir", t.TempDir()}, "server name"},
	} {
		code, stdout, stderr := runCLI(nil, tt.args...)
		if code != exitFail || !strings.Contains(stderr, tt.want) || stdout != "" {
			t.Errorf("%v: exit %d, stderr %q; want exit 1 mentioning %q", tt.args, code, stderr, tt.want)
		}
	}
}
