// Command demo is the program in the docker driver's test images: a static
// HTTP server on $PORT that answers GET / and GET /healthz, and its own
// healthcheck client for the image variant with a HEALTHCHECK.
//
//	demo                      serve until SIGTERM or SIGINT
//	demo healthcheck [URL]    GET URL (default http://127.0.0.1:$PORT/healthz); exit 0 on 2xx, else 1
//
// Environment, for the tests' failure cases:
//
//	DEMO_EXIT=N            print DEMO_LINES numbered lines ("line 1" ...) and exit with status N
//	DEMO_LINES=N           how many lines DEMO_EXIT prints (default 30)
//	DEMO_LISTEN_DELAY=D    wait D (a Go duration) before listening
//	DEMO_UNHEALTHY_FOR=D   answer /healthz with 503 for D after the start
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" {
		os.Exit(healthcheck(os.Args[2:]))
	}
	if err := serve(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func healthcheck(args []string) int {
	url := "http://127.0.0.1:" + os.Getenv("PORT") + "/healthz"
	if len(args) > 0 {
		url = args[0]
	}
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		fmt.Fprintln(os.Stderr, "healthcheck:", err)
		return 1
	}
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		fmt.Fprintln(os.Stderr, "healthcheck:", resp.Status)
		return 1
	}
	return 0
}

func serve() error {
	start := time.Now()
	if s := os.Getenv("DEMO_EXIT"); s != "" {
		code, err := strconv.Atoi(s)
		if err != nil {
			return fmt.Errorf("DEMO_EXIT: %w", err)
		}
		n := 30
		if s := os.Getenv("DEMO_LINES"); s != "" {
			if n, err = strconv.Atoi(s); err != nil {
				return fmt.Errorf("DEMO_LINES: %w", err)
			}
		}
		for i := 1; i <= n; i++ {
			// Alternate streams: the driver must demultiplex both.
			w := os.Stdout
			if i%2 == 0 {
				w = os.Stderr
			}
			fmt.Fprintf(w, "line %d\n", i)
		}
		os.Exit(code)
	}
	delay, err := durationEnv("DEMO_LISTEN_DELAY")
	if err != nil {
		return err
	}
	unhealthyFor, err := durationEnv("DEMO_UNHEALTHY_FOR")
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	select {
	case <-time.After(delay):
	case <-ctx.Done():
		return nil
	}
	l, err := net.Listen("tcp", ":"+os.Getenv("PORT"))
	if err != nil {
		return err
	}
	fmt.Println("listening on", l.Addr())
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "demo slot=%s pool=%s node=%s\n", os.Getenv("WARMPOOL_SLOT"), os.Getenv("WARMPOOL_POOL"), os.Getenv("WARMPOOL_NODE"))
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if time.Since(start) < unhealthyFor {
			http.Error(w, "warming", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		fmt.Println("stopping")
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func durationEnv(name string) (time.Duration, error) {
	s := os.Getenv(name)
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	return d, nil
}
