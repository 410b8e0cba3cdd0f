package testkit

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/warmpool/warmpool/actors"
	"github.com/warmpool/warmpool/cluster"
	"github.com/warmpool/warmpool/demoapp"
	"github.com/warmpool/warmpool/messages"
)

// Environment of a test binary re-executed as the demo app.
const (
	envRole  = "WARMPOOL_TESTKIT_ROLE"
	envDelay = "WARMPOOL_TESTKIT_STARTUP_DELAY"
	roleDemo = "demo-app"
)

// RunDemoAppIfChild must be called first in TestMain of a package that uses
// DemoPool: when the test binary was started as a pool's container, it runs
// the demo app instead of the tests and exits.
func RunDemoAppIfChild() {
	if os.Getenv(envRole) != roleDemo {
		return
	}
	delay, _ := time.ParseDuration(os.Getenv(envDelay))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	err := demoapp.Run(ctx, demoapp.Options{StartupDelay: delay})
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo-app:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// DemoPool is a process-driver pool whose containers are the running test
// binary re-executed as the demo app (see RunDemoAppIfChild), ready when
// /healthz answers after startupDelay. Other settings take the defaults.
func DemoPool(name string, startupDelay time.Duration) messages.PoolConfig {
	c := messages.DefaultPoolConfig(name)
	c.Command = []string{os.Args[0], "-test.run=^$"}
	// A -race binary sleeps a second at exit unless told not to; the stop
	// of every container would wait for it.
	c.Env = map[string]string{envRole: roleDemo, envDelay: startupDelay.String(), "GORACE": "atexit_sleep_ms=0"}
	c.ReadyPath = "/healthz"
	c.StartTimeout = messages.Duration(20 * time.Second)
	c.StopGrace = messages.Duration(5 * time.Second)
	return c
}

// StartNode starts a node with the embedded NATS server on a free port and a
// fresh data dir, and a client connection to it. The node stops its
// containers when it shuts down (OnExit stop). Cleanup shuts both down and
// fails the test if a child process of the test is left behind.
func StartNode(t testing.TB, pools ...messages.PoolConfig) (*cluster.Node, *nats.Conn) {
	t.Helper()
	node, err := cluster.Start(context.Background(), cluster.Options{
		// Unique: a node adopts or stops every process that carries its id,
		// and other tests' nodes may run on this machine at the same time.
		NodeID:     "test-" + uuid.NewString()[:8],
		DataDir:    t.TempDir(),
		NATSListen: "127.0.0.1:-1",
		Pools:      pools,
		Logger:     Logger(t),
		OnExit:     actors.ExitStop,
	})
	if err != nil {
		t.Fatalf("starting a node: %v", err)
	}
	nc, err := nats.Connect(node.ClientURL())
	if err != nil {
		t.Fatalf("connecting to the node: %v", err)
	}
	t.Cleanup(func() {
		nc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := node.Shutdown(ctx); err != nil {
			t.Errorf("node shutdown: %v", err)
		}
		if kids := Children(); len(kids) > 0 {
			t.Errorf("child processes left after shutdown: %v", kids)
		}
	})
	return node, nc
}

// Logger returns a logger that writes through t.Log with -v, else nowhere.
func Logger(t testing.TB) *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

var _ io.Writer = tWriter{}

// Children lists the live (not zombie) child processes of this process, from
// /proc; empty where /proc does not exist.
func Children() []int {
	self := os.Getpid()
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var kids []int
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		s := string(b)
		end := strings.LastIndexByte(s, ')')
		if end < 0 {
			continue
		}
		fields := strings.Fields(s[end+1:])
		if len(fields) < 2 || fields[0] == "Z" {
			continue
		}
		if ppid, _ := strconv.Atoi(fields[1]); ppid == self {
			pid, _ := strconv.Atoi(strings.Fields(s)[0])
			kids = append(kids, pid)
		}
	}
	return kids
}
