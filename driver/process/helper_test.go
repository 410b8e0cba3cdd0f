package process

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/warmpool/warmpool/driver"
	"github.com/warmpool/warmpool/messages"
)

// The test binary doubles as the containers the tests start: with
// WARMPOOL_TEST_HELPER set it runs the helper named there instead of the
// tests. That gives real processes without building anything.
func TestMain(m *testing.M) {
	if mode := os.Getenv("WARMPOOL_TEST_HELPER"); mode != "" {
		runHelper(mode)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// Helper settings, passed in the template's Env.
const (
	envHelper       = "WARMPOOL_TEST_HELPER"
	envListenAfter  = "HELPER_LISTEN_AFTER"  // delay before listening on $PORT
	envHealthyAfter = "HELPER_HEALTHY_AFTER" // /healthz answers 503 until then
	envPIDFile      = "HELPER_PID_FILE"      // where "grandchild" writes the grandchild's pid
	envThen         = "HELPER_THEN"          // "exit": "grandchild" exits once it has spawned
	envOwnGroup     = "HELPER_OWN_GROUP"     // "1": "grandchild" puts the grandchild in a group of its own
	envNodeName     = "HELPER_NODE"          // the node name "node" starts its container for
	envChildMode    = "HELPER_CHILD_MODE"    // the helper mode of the container "node" starts
	envHandleFile   = "HELPER_HANDLE_FILE"   // where "node" writes the container's handle as JSON
)

// Helper modes.
const (
	modeListen     = "listen"      // serve HTTP on $PORT; die on SIGTERM
	modeExit       = "exit"        // print some output, exit 3
	modeIgnoreTerm = "ignore-term" // serve HTTP on $PORT, ignore SIGTERM
	modeGrandchild = "grandchild"  // spawn a SIGTERM-ignoring grandchild, then serve or exit
	modeSleep      = "sleep"       // the grandchild: ignore SIGTERM and sleep
	modeFlood      = "flood"       // write megabytes of output, then serve
	modeChatty     = "chatty"      // serve, and write a line to stdout and stderr every few ms
	modeNode       = "node"        // a node: start a container with a Driver, then wait to be killed
)

// ticks counts the lines a chatty helper wrote; GET /ticks answers it.
var ticks atomic.Int64

// helperLifetime bounds every helper, so that a failing test cannot leave one
// behind for long.
const helperLifetime = time.Minute

func runHelper(mode string) {
	time.AfterFunc(helperLifetime, func() { os.Exit(99) })
	switch mode {
	case modeListen:
		serve()
	case modeExit:
		fmt.Println("helper: starting")
		fmt.Fprintln(os.Stderr, "helper: boom, cannot open the thing")
		os.Exit(3)
	case modeIgnoreTerm:
		signal.Ignore(syscall.SIGTERM)
		serve()
	case modeGrandchild:
		exe, err := os.Executable()
		if err != nil {
			fail(err)
		}
		c := exec.Command(exe)
		c.Env = append(os.Environ(), envHelper+"="+modeSleep)
		if os.Getenv(envOwnGroup) == "1" {
			c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		}
		// The grandchild inherits the output pipe, as real ones do.
		c.Stdout, c.Stderr = os.Stdout, os.Stderr
		if err := c.Start(); err != nil {
			fail(err)
		}
		if err := os.WriteFile(os.Getenv(envPIDFile), []byte(strconv.Itoa(c.Process.Pid)), 0o600); err != nil {
			fail(err)
		}
		if os.Getenv(envThen) == "exit" {
			os.Exit(0)
		}
		serve()
	case modeSleep:
		signal.Ignore(syscall.SIGTERM)
		time.Sleep(helperLifetime)
	case modeFlood:
		line := strings.Repeat("x", 1000) + "\n"
		for range 4000 {
			os.Stdout.WriteString(line)
		}
		// A last line without a newline, as from a crash.
		os.Stdout.WriteString(strings.Repeat("y", 5000))
		serve()
	case modeChatty:
		go func() {
			for i := 0; ; i++ {
				// With its output a pipe whose reader died, the first of
				// these would kill the helper with SIGPIPE.
				fmt.Printf("tick %d\n", i)
				fmt.Fprintf(os.Stderr, "tick %d on stderr\n", i)
				ticks.Add(1)
				time.Sleep(2 * time.Millisecond)
			}
		}()
		serve()
	case modeNode:
		runNode()
	default:
		fail(fmt.Errorf("unknown helper mode %q", mode))
	}
}

// serve answers GET /healthz and GET / (the environment it got) on $PORT.
func serve() {
	start := time.Now()
	if d := duration(envListenAfter); d > 0 {
		time.Sleep(d)
	}
	healthyAfter := duration(envHealthyAfter)
	l, err := net.Listen("tcp", "127.0.0.1:"+os.Getenv("PORT"))
	if err != nil {
		fail(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if time.Since(start) < healthyAfter {
			http.Error(w, "warming up", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]string{
			"PORT":          os.Getenv("PORT"),
			"WARMPOOL_SLOT": os.Getenv("WARMPOOL_SLOT"),
			"WARMPOOL_POOL": os.Getenv("WARMPOOL_POOL"),
			"WARMPOOL_NODE": os.Getenv("WARMPOOL_NODE"),
			"HELPER_EXTRA":  os.Getenv("HELPER_EXTRA"),
			"PID":           strconv.Itoa(os.Getpid()),
		})
	})
	mux.HandleFunc("GET /ticks", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, ticks.Load())
	})
	fail(http.Serve(l, mux))
}

// runNode plays a warmpool node: it starts one container for the node named
// in $HELPER_NODE, writes its handle to $HELPER_HANDLE_FILE, and waits for
// the test to kill it.
func runNode() {
	exe, err := os.Executable()
	if err != nil {
		fail(err)
	}
	d := New(nil)
	hd, err := d.Start(context.Background(), driver.Spec{
		Pool: "orphans",
		Slot: "orphans-1",
		Node: os.Getenv(envNodeName),
		Template: messages.Template{
			Driver:  messages.DriverProcess,
			Command: []string{exe},
			Env:     map[string]string{envHelper: os.Getenv(envChildMode), "GORACE": "atexit_sleep_ms=0"},
		},
	})
	if err != nil {
		fail(err)
	}
	b, err := json.Marshal(hd)
	if err != nil {
		fail(err)
	}
	// Renamed into place, so the test never reads half a file.
	path := os.Getenv(envHandleFile)
	if err := os.WriteFile(path+".tmp", b, 0o600); err != nil {
		fail(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		fail(err)
	}
	time.Sleep(helperLifetime)
}

func duration(key string) time.Duration {
	d, _ := time.ParseDuration(os.Getenv(key))
	return d
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "helper:", err)
	os.Exit(2)
}
