package cluster_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/warmpool/warmpool/client"
	"github.com/warmpool/warmpool/cluster"
	"github.com/warmpool/warmpool/messages"
	"github.com/warmpool/warmpool/testkit"
)

func TestMain(m *testing.M) {
	testkit.RunDemoAppIfChild()
	code := m.Run()
	testkit.RemoveProjectImage()
	os.Exit(code)
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// demoInfo is what the demo app answers on GET /.
type demoInfo struct {
	Slot     string `json:"slot"`
	Pool     string `json:"pool"`
	PID      int    `json:"pid"`
	Requests int    `json:"requests"`
}

func get(t *testing.T, endpoint string) demoInfo {
	t.Helper()
	resp, err := http.Get(endpoint + "/")
	if err != nil {
		t.Fatalf("GET %s: %v", endpoint, err)
	}
	defer resp.Body.Close()
	var info demoInfo
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		t.Fatalf("GET %s: %v", endpoint, err)
	}
	return info
}

func waitStats(t *testing.T, p *client.Pool, f func(messages.Stats) error) messages.Stats {
	t.Helper()
	var st messages.Stats
	testkit.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		var err error
		if st, err = p.Stats(ctx(t)); err != nil {
			return err
		}
		return f(st)
	})
	return st
}

func warmIs(n int) func(messages.Stats) error {
	return func(st messages.Stats) error {
		if st.Warm != n || st.Warming != 0 || st.Draining != 0 {
			return fmt.Errorf("warm=%d warming=%d draining=%d; want %d warm", st.Warm, st.Warming, st.Draining, n)
		}
		return nil
	}
}

func TestAcquireStickyReleaseOverNATS(t *testing.T) {
	node, nc := testkit.StartNode(t, testkit.DemoPool("web", 200*time.Millisecond))
	p := client.New(nc).Pool("web")
	waitStats(t, p, warmIs(1))

	l, err := p.GetContainer(ctx(t), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if l.Cold || l.Pool != "web" || l.ID != "alice" || l.Node != node.ID() || !strings.HasPrefix(l.Endpoint, "http://127.0.0.1:") {
		t.Fatalf("lease = %+v", l)
	}
	waitStats(t, p, func(st messages.Stats) error {
		if st.Warm != 1 || st.Acquired != 1 {
			return fmt.Errorf("warm=%d acquired=%d; want the refill warm", st.Warm, st.Acquired)
		}
		return nil
	})
	info := get(t, l.Endpoint)
	if info.Slot != l.Slot || info.Pool != "web" {
		t.Fatalf("the endpoint is slot %q of pool %q; the lease says %q", info.Slot, info.Pool, l.Slot)
	}
	again, err := p.GetContainer(ctx(t), "alice")
	if err != nil || again.Endpoint != l.Endpoint || !again.ExpiresAt.After(l.ExpiresAt) {
		t.Fatalf("re-acquire = %+v, %v; want the same endpoint, later expiry", again, err)
	}
	if r, err := p.Renew(ctx(t), "alice"); err != nil || r.Slot != l.Slot {
		t.Fatalf("renew = %+v, %v", r, err)
	}
	if get(t, again.Endpoint).PID != info.PID {
		t.Fatal("the sticky endpoint is served by another process")
	}
	rel, err := p.ReleaseContainer(ctx(t), "alice")
	if err != nil || rel.Replaced {
		t.Fatalf("release = %+v, %v", rel, err)
	}
	waitStats(t, p, warmIs(2)) // reuse: the released container is warm again
	bob, err := p.GetContainer(ctx(t), "bob")
	if err != nil {
		t.Fatal(err)
	}
	if bob.Slot == l.Slot {
		// FIFO: the older warm container goes first; alice's went to the back.
		t.Fatal("bob got the container alice just released while an older one was warm")
	}
	if _, err := p.ReleaseContainer(ctx(t), "alice"); !errors.Is(err, client.ErrUnknownLease) {
		t.Fatalf("second release: %v; want ErrUnknownLease", err)
	}
}

func TestConcurrentAcquiresOfOneIDGetOneContainer(t *testing.T) {
	_, nc := testkit.StartNode(t, func() messages.PoolConfig {
		c := testkit.DemoPool("web", 500*time.Millisecond)
		c.WarmTarget = 0
		return c
	}())
	p := client.New(nc).Pool("web")
	const n = 32
	var wg sync.WaitGroup
	leases := make([]messages.Lease, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			leases[i], errs[i] = p.GetContainer(ctx(t), "same-session")
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if leases[i].Endpoint != leases[0].Endpoint {
			t.Fatalf("acquire %d got %s, acquire 0 got %s", i, leases[i].Endpoint, leases[0].Endpoint)
		}
	}
	st, _ := p.Stats(ctx(t))
	if st.Total != 1 || st.Acquired != 1 {
		t.Fatalf("stats after concurrent acquires: %+v", st)
	}
	cold := 0
	for _, l := range leases {
		if l.Cold {
			cold++
		}
	}
	if cold == 0 {
		t.Fatal("no acquire was marked cold, but no container was warm")
	}
}

func TestOnReleaseReplace(t *testing.T) {
	cfg := testkit.DemoPool("sandbox", 100*time.Millisecond)
	cfg.OnRelease = messages.OnReleaseReplace
	_, nc := testkit.StartNode(t, cfg)
	p := client.New(nc).Pool("sandbox")
	waitStats(t, p, warmIs(1))
	l, err := p.GetContainer(ctx(t), "user-1")
	if err != nil {
		t.Fatal(err)
	}
	pid := get(t, l.Endpoint).PID
	rel, err := p.ReleaseContainer(ctx(t), "user-1")
	if err != nil || !rel.Replaced {
		t.Fatalf("release = %+v, %v", rel, err)
	}
	testkit.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if syscall.Kill(pid, 0) == nil {
			return fmt.Errorf("released process %d still runs", pid)
		}
		return nil
	})
	waitStats(t, p, warmIs(1))
	l2, err := p.GetContainer(ctx(t), "user-2")
	if err != nil {
		t.Fatal(err)
	}
	if get(t, l2.Endpoint).PID == pid || l2.Slot == l.Slot {
		t.Fatal("a replaced container was handed out again")
	}
}

func TestLeaseAutoReleasedAfterAcquireTimeout(t *testing.T) {
	cfg := testkit.DemoPool("web", 0)
	cfg.AcquireTimeout = messages.Duration(time.Second)
	cfg.RefreshInterval = messages.Duration(100 * time.Millisecond)
	_, nc := testkit.StartNode(t, cfg)
	p := client.New(nc).Pool("web")
	waitStats(t, p, warmIs(1))
	if _, err := p.GetContainer(ctx(t), "short"); err != nil {
		t.Fatal(err)
	}
	waitStats(t, p, func(st messages.Stats) error {
		if st.Acquired != 0 || st.Warm != 2 {
			return fmt.Errorf("acquired=%d warm=%d; want the lease reaped", st.Acquired, st.Warm)
		}
		return nil
	})
	if _, err := p.Renew(ctx(t), "short"); !errors.Is(err, client.ErrUnknownLease) {
		t.Fatalf("renew after expiry: %v; want ErrUnknownLease", err)
	}
}

func TestExhaustedAtMaxInstances(t *testing.T) {
	cfg := testkit.DemoPool("small", 0)
	cfg.WarmTarget, cfg.MaxInstances = 1, 2
	_, nc := testkit.StartNode(t, cfg)
	p := client.New(nc).Pool("small")
	waitStats(t, p, warmIs(1))
	for _, id := range []string{"a", "b"} {
		if _, err := p.GetContainer(ctx(t), id); err != nil {
			t.Fatal(err)
		}
	}
	_, err := p.GetContainer(ctx(t), "c")
	if !errors.Is(err, client.ErrExhausted) || !client.IsRetryable(err) {
		t.Fatalf("third acquire: %v; want a retryable ErrExhausted", err)
	}
	var we *messages.WireError
	if !errors.As(err, &we) || we.Body.Status != 503 || we.Body.Code != messages.CodeExhausted {
		t.Fatalf("wire error = %#v", err)
	}
}

func TestWarmContainerThatDiesIsReplaced(t *testing.T) {
	_, nc := testkit.StartNode(t, testkit.DemoPool("web", 0))
	p := client.New(nc).Pool("web")
	waitStats(t, p, warmIs(1))
	// The pool's only container is this test's only child process.
	kids := testkit.Children()
	if len(kids) != 1 {
		t.Fatalf("child processes %v; want the one warm container", kids)
	}
	victim := kids[0]
	if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitStats(t, p, func(st messages.Stats) error {
		if st.Died != 1 || st.Warm != 1 || st.Total != 1 || st.Started != 2 {
			return fmt.Errorf("died=%d warm=%d total=%d started=%d; want the dead one replaced",
				st.Died, st.Warm, st.Total, st.Started)
		}
		return nil
	})
	l, err := p.GetContainer(ctx(t), "x")
	if err != nil {
		t.Fatal(err)
	}
	if l.Cold {
		t.Fatal("the replacement was not warm")
	}
	if pid := get(t, l.Endpoint).PID; pid == victim {
		t.Fatal("the killed container was handed out")
	}
}

func TestAcquiredContainerThatDiesGivesTheSessionANewOne(t *testing.T) {
	_, nc := testkit.StartNode(t, testkit.DemoPool("web", 0))
	p := client.New(nc).Pool("web")
	waitStats(t, p, warmIs(1))
	l, err := p.GetContainer(ctx(t), "s")
	if err != nil {
		t.Fatal(err)
	}
	pid := get(t, l.Endpoint).PID
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitStats(t, p, func(st messages.Stats) error {
		if st.Acquired != 0 {
			return fmt.Errorf("acquired=%d; the dead container still counts", st.Acquired)
		}
		return nil
	})
	l2, err := p.GetContainer(ctx(t), "s")
	if err != nil {
		t.Fatal(err)
	}
	if l2.Slot == l.Slot || get(t, l2.Endpoint).PID == pid {
		t.Fatal("the session kept its dead container")
	}
}

func TestTemplateThatNeverGetsReady(t *testing.T) {
	cfg := testkit.DemoPool("broken", time.Hour) // listens only after an hour
	cfg.WarmTarget = 1
	cfg.StartTimeout = messages.Duration(500 * time.Millisecond)
	_, nc := testkit.StartNode(t, cfg)
	p := client.New(nc).Pool("broken")
	st := waitStats(t, p, func(st messages.Stats) error {
		if st.StartFailures < 1 || st.LastError == "" {
			return fmt.Errorf("start_failures=%d last_error=%q", st.StartFailures, st.LastError)
		}
		return nil
	})
	if !strings.Contains(st.LastError, "startTimeout") {
		t.Fatalf("last_error %q does not say why", st.LastError)
	}
	_, err := p.GetContainer(ctx(t), "anyone")
	if !errors.Is(err, client.ErrNotReady) || !client.IsRetryable(err) {
		t.Fatalf("acquire from a broken template: %v; want a retryable ErrNotReady", err)
	}
}

func TestTemplateThatExitsAtOnce(t *testing.T) {
	cfg := messages.DefaultPoolConfig("crashy")
	cfg.Command = []string{os.Args[0], "-test.run=^$", "-no-such-flag"}
	cfg.WarmTarget = 0
	_, nc := testkit.StartNode(t, cfg)
	p := client.New(nc).Pool("crashy")
	_, err := p.GetContainer(ctx(t), "x")
	if !errors.Is(err, client.ErrNotReady) || !strings.Contains(err.Error(), "exit") {
		t.Fatalf("acquire: %v; want ErrNotReady naming the exit", err)
	}
}

func TestShutdownAllOverNATS(t *testing.T) {
	cfg := testkit.DemoPool("web", 0)
	cfg.WarmTarget = 2
	_, nc := testkit.StartNode(t, cfg)
	p := client.New(nc).Pool("web")
	waitStats(t, p, warmIs(2))
	l, err := p.GetContainer(ctx(t), "a")
	if err != nil {
		t.Fatal(err)
	}
	pid := get(t, l.Endpoint).PID
	rep, err := p.ShutdownAll(ctx(t))
	if err != nil || rep.Stopped != 3 || rep.LeasesEnded != 1 {
		t.Fatalf("shutdown = %+v, %v", rep, err)
	}
	st := waitStats(t, p, func(st messages.Stats) error {
		if st.Total != 0 {
			return fmt.Errorf("total=%d after shutdown", st.Total)
		}
		return nil
	})
	if !st.Paused {
		t.Fatal("the pool is not paused after shutdown")
	}
	if syscall.Kill(pid, 0) == nil {
		t.Fatal("a container survived shutdown")
	}
	// The next acquire resumes the pool with a cold start.
	l2, err := p.GetContainer(ctx(t), "a")
	if err != nil || !l2.Cold {
		t.Fatalf("acquire after shutdown = %+v, %v; want a cold start", l2, err)
	}
	wu, err := p.Warmup(ctx(t), 2)
	if err != nil || wu.Started != 2 {
		t.Fatalf("warmup = %+v, %v", wu, err)
	}
}

// TestBadInput sends raw requests, as a client in any language would, and
// checks the stable code and that the node keeps serving.
func TestBadInput(t *testing.T) {
	_, nc := testkit.StartNode(t, testkit.DemoPool("web", 0))
	huge, _ := json.Marshal(messages.SessionRequest{ID: strings.Repeat("x", 257)})
	cases := []struct {
		subject, body string
		status        string
		code          string
	}{
		{"warmpool.v1.web.acquire", `{"id":`, "400", messages.CodeBadRequest},
		{"warmpool.v1.web.acquire", ``, "400", messages.CodeBadRequest},
		{"warmpool.v1.web.acquire", `[1,2]`, "400", messages.CodeBadRequest},
		{"warmpool.v1.web.acquire", `{"id":"a"} trailing`, "400", messages.CodeBadRequest},
		{"warmpool.v1.web.acquire", `{"id":""}`, "400", messages.CodeInvalidID},
		{"warmpool.v1.web.acquire", `{"id":42}`, "400", messages.CodeBadRequest},
		{"warmpool.v1.web.acquire", string(huge), "400", messages.CodeInvalidID},
		{"warmpool.v1.nosuch.acquire", `{"id":"a"}`, "404", messages.CodeUnknownPool},
		{"warmpool.v1.nosuch.stats", `{}`, "404", messages.CodeUnknownPool},
		{"warmpool.v1.web.release", `{"id":"nobody"}`, "404", messages.CodeUnknownLease},
		{"warmpool.v1.web.renew", `{"id":"nobody"}`, "404", messages.CodeUnknownLease},
		{"warmpool.v1.web.warmup", `{"count":-1}`, "400", messages.CodeBadRequest},
		{"warmpool.v1.web.warmup", `{}`, "400", messages.CodeBadRequest},
		{"warmpool.v1.web.warmup", `{"count":"two"}`, "400", messages.CodeBadRequest},
	}
	for _, c := range cases {
		t.Run(c.subject+" "+c.body, func(t *testing.T) {
			msg, err := nc.RequestWithContext(ctx(t), c.subject, []byte(c.body))
			if err != nil {
				t.Fatal(err)
			}
			if got := msg.Header.Get(micro.ErrorCodeHeader); got != c.status {
				t.Fatalf("status header %q; want %s (body %s)", got, c.status, msg.Data)
			}
			if msg.Header.Get(micro.ErrorHeader) == "" {
				t.Fatal("no error description header")
			}
			var body messages.ErrorBody
			if err := json.Unmarshal(msg.Data, &body); err != nil || body.Code != c.code || body.Message == "" || body.Type != messages.TypeError {
				t.Fatalf("error body %s; want code %s", msg.Data, c.code)
			}
		})
	}
	// Nothing was lost: the node still serves.
	p := client.New(nc).Pool("web")
	if _, err := p.GetContainer(ctx(t), "after-bad-input"); err != nil {
		t.Fatal(err)
	}
}

// TestCallerDeadline: a request whose caller has stopped waiting (its
// Warmpool-Timeout header is spent) does nothing; one with time left, or
// with a header that is not a number, is served as usual.
func TestCallerDeadline(t *testing.T) {
	node, nc := testkit.StartNode(t, testkit.DemoPool("web", 0))
	ask := func(timeout, id string) *nats.Msg {
		t.Helper()
		req := &nats.Msg{Subject: "warmpool.v1.web.acquire", Data: []byte(`{"id":"` + id + `"}`), Header: nats.Header{}}
		req.Header.Set(messages.TimeoutHeader, timeout)
		msg, err := nc.RequestMsgWithContext(ctx(t), req)
		if err != nil {
			t.Fatal(err)
		}
		return msg
	}
	for _, spent := range []string{"0", "-20"} {
		if msg := ask(spent, "late"); msg.Header.Get(micro.ErrorCodeHeader) != "503" {
			t.Fatalf("timeout %s: status %q, body %s; want 503", spent, msg.Header.Get(micro.ErrorCodeHeader), msg.Data)
		}
	}
	if st, _ := node.Pool("web").Stats(ctx(t)); st.Acquired != 0 || st.Waiting != 0 {
		t.Fatalf("a request its caller gave up on made a session: %+v", st)
	}
	for i, ok := range []string{"5000", "soon", "9223372036854775807", "99999999999999999999"} {
		if msg := ask(ok, fmt.Sprint("on-time-", i)); msg.Header.Get(micro.ErrorCodeHeader) != "" {
			t.Fatalf("timeout %s: %s", ok, msg.Data)
		}
	}
}

// TestServiceDiscovery is what `nats micro ls` and `nats micro info` ask.
func TestServiceDiscovery(t *testing.T) {
	node, nc := testkit.StartNode(t, testkit.DemoPool("web", 0))
	msg, err := nc.RequestWithContext(ctx(t), "$SRV.INFO.warmpool", nil)
	if err != nil {
		t.Fatal(err)
	}
	var info micro.Info
	if err := json.Unmarshal(msg.Data, &info); err != nil {
		t.Fatal(err)
	}
	// One shared endpoint per verb, the node's own acquire, renew and
	// release, where other nodes forward a session's requests, ping and
	// drain.
	if info.Name != "warmpool" || len(info.Endpoints) != len(messages.Verbs)+5 {
		t.Fatalf("service info = %+v", info)
	}
	subjects := map[string]bool{}
	for _, e := range info.Endpoints {
		subjects[e.Subject] = true
	}
	for _, v := range messages.Verbs {
		if !subjects["warmpool.v1.*."+v] {
			t.Errorf("no endpoint for %s in %v", v, subjects)
		}
	}
	for _, v := range []string{"acquire", "renew", "release"} {
		if !subjects["warmpool.v1.node."+node.ID()+".*."+v] {
			t.Errorf("no node endpoint for %s in %v", v, subjects)
		}
	}
	if !subjects[messages.DrainSubject(node.ID())] {
		t.Errorf("no drain endpoint in %v", subjects)
	}
	if _, err := nc.Request("$SRV.PING.warmpool", nil, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	var _ = nats.ErrNoResponders
}

// TestStartFailsCleanly: a node that cannot start says why and leaves
// nothing running (no panic on the error path).
func TestStartFailsCleanly(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for name, o := range map[string]cluster.Options{
		"port in use":    {NATSListen: l.Addr().String(), Pools: []messages.PoolConfig{testkit.DemoPool("web", 0)}},
		"no such NATS":   {NATSURL: "nats://127.0.0.1:1", Pools: []messages.PoolConfig{testkit.DemoPool("web", 0)}},
		"bad pool":       {NATSListen: "127.0.0.1:-1", Pools: []messages.PoolConfig{{Name: "web"}}},
		"no pool":        {NATSListen: "127.0.0.1:-1"},
		"bad node id":    {NATSListen: "127.0.0.1:-1", NodeID: "a.b", Pools: []messages.PoolConfig{testkit.DemoPool("web", 0)}},
		"no such driver": {NATSListen: "127.0.0.1:-1", Pools: []messages.PoolConfig{{Name: "web", Template: messages.Template{Driver: messages.DriverFake}}}},
		"bad on-exit":    {NATSListen: "127.0.0.1:-1", OnExit: "explode", Pools: []messages.PoolConfig{testkit.DemoPool("web", 0)}},
	} {
		t.Run(name, func(t *testing.T) {
			o.DataDir = t.TempDir()
			o.Logger = testkit.Logger(t)
			node, err := cluster.Start(ctx(t), o)
			if err == nil || node != nil {
				t.Fatalf("Start = %v, %v; want an error", node, err)
			}
			if kids := testkit.Children(); len(kids) > 0 {
				t.Fatalf("processes left after a failed start: %v", kids)
			}
		})
	}
}
