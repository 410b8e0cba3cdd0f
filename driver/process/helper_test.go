package process

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
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
)

// Helper modes.
const (
	modeListen     = "listen"      // serve HTTP on $PORT; die on SIGTERM
	modeExit       = "exit"        // print some output, exit 3
	modeIgnoreTerm = "ignore-term" // serve HTTP on $PORT, ignore SIGTERM
	modeGrandchild = "grandchild"  // spawn a SIGTERM-ignoring grandchild, then serve or exit
	modeSleep      = "sleep"       // the grandchild: ignore SIGTERM and sleep
	modeFlood      = "flood"       // write megabytes of output, then serve
)

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
			"HELPER_EXTRA":  os.Getenv("HELPER_EXTRA"),
			"PID":           strconv.Itoa(os.Getpid()),
		})
	})
	fail(http.Serve(l, mux))
}

func duration(key string) time.Duration {
	d, _ := time.ParseDuration(os.Getenv(key))
	return d
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "helper:", err)
	os.Exit(2)
}
