package demoapp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"time"
)

// Environment variables the demo reads.
const (
	// EnvPort is the port to listen on when Options.Port is 0.
	EnvPort = "PORT"
	// EnvSlot and EnvPool name the slot and pool, set by the process driver.
	EnvSlot = "WARMPOOL_SLOT"
	EnvPool = "WARMPOOL_POOL"
	// EnvListenAll set to "1" listens on every interface instead of loopback.
	EnvListenAll = "WARMPOOL_DEMO_LISTEN_ALL"
)

// shutdownTimeout bounds the drain of in-flight requests on stop: the demo's
// requests are instant, and the driver's stop grace must not be spent here.
const shutdownTimeout = 2 * time.Second

// Options configure Run.
type Options struct {
	// Port to listen on; 0 means $PORT.
	Port int
	// StartupDelay is how long the app "boots" before it listens: the port
	// refuses connections until then, as a slow container's would.
	StartupDelay time.Duration
	// Logger receives the app's few log lines; nil discards them.
	Logger *slog.Logger
}

// Info is the JSON body of GET /.
type Info struct {
	// Slot and Pool are $WARMPOOL_SLOT and $WARMPOOL_POOL.
	Slot string `json:"slot"`
	Pool string `json:"pool"`
	// PID is the serving process's id.
	PID int `json:"pid"`
	// Requests counts the GET / requests served, this one included; health
	// probes are not counted, so the number shows the clients' traffic.
	Requests int64 `json:"requests"`
	// StartedAt is when Run was called, before the startup delay.
	StartedAt time.Time `json:"started_at"`
	// UptimeMS is the time since StartedAt in milliseconds.
	UptimeMS int64 `json:"uptime_ms"`
}

// Run sleeps the startup delay, then serves HTTP until ctx ends, then shuts
// down gracefully and returns nil. It returns an error when the port is
// missing or invalid, or when it cannot listen. Ending ctx during the delay
// returns nil at once.
func Run(ctx context.Context, o Options) error {
	started := time.Now()
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	port, err := o.port()
	if err != nil {
		return err
	}
	a := &app{
		slot:    os.Getenv(EnvSlot),
		pool:    os.Getenv(EnvPool),
		pid:     os.Getpid(),
		started: started,
	}
	log = log.With("pool", a.pool, "slot", a.slot, "port", port)

	if o.StartupDelay > 0 {
		log.Info("demo app warming up", "delay", o.StartupDelay)
		t := time.NewTimer(o.StartupDelay)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}

	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", net.JoinHostPort(listenHost(), strconv.Itoa(port)))
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("demoapp: listen: %w", err)
	}
	srv := &http.Server{Handler: a.routes(), ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	log.Info("demo app listening", "addr", l.Addr().String(), "startup", time.Since(started))

	select {
	case err := <-served:
		return fmt.Errorf("demoapp: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("demo app did not drain in time", "err", err)
		_ = srv.Close()
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("demoapp: serve: %w", err)
	}
	log.Info("demo app stopped")
	return nil
}

// port resolves Options.Port or $PORT.
func (o Options) port() (int, error) {
	if o.Port < 0 || o.Port > 65535 {
		return 0, fmt.Errorf("demoapp: port %d is out of range 1..65535", o.Port)
	}
	if o.Port != 0 {
		return o.Port, nil
	}
	s := os.Getenv(EnvPort)
	if s == "" {
		return 0, fmt.Errorf("demoapp: no port: pass --port or set $%s", EnvPort)
	}
	p, err := strconv.Atoi(s)
	if err != nil || p < 1 || p > 65535 {
		return 0, fmt.Errorf("demoapp: $%s=%q is not a port 1..65535", EnvPort, s)
	}
	return p, nil
}

// listenHost is loopback, so a demo on a laptop is not reachable from the
// network, unless EnvListenAll asks for every interface.
func listenHost() string {
	if os.Getenv(EnvListenAll) == "1" {
		return "0.0.0.0"
	}
	return "127.0.0.1"
}

// app holds the state the handlers share.
type app struct {
	slot, pool string
	pid        int
	started    time.Time
	requests   atomic.Int64
}

func (a *app) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", a.info)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok"))
	})
	return mux
}

func (a *app) info(w http.ResponseWriter, _ *http.Request) {
	now := time.Now()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(Info{
		Slot:      a.slot,
		Pool:      a.pool,
		PID:       a.pid,
		Requests:  a.requests.Add(1),
		StartedAt: a.started,
		UptimeMS:  now.Sub(a.started).Milliseconds(),
	})
}
