package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/warmpool/warmpool/bench"
	"github.com/warmpool/warmpool/driver/docker"
	"github.com/warmpool/warmpool/messages"
)

func (c *cli) bench(args []string) int {
	fs := c.newFlagSet("bench", "", `Measure acquire latency and throughput against a floor measured in the same run on the
same NATS server (a bare request-reply round trip plus a bare KV create), and the time to
a first HTTP response from a warm container against a cold start.

Without --nats-url it starts a node of its own for each sync setting (embedded NATS on a
free loopback port, a temporary data dir) with a pool of this binary's demo-app, and
removes everything after. With --nats-url it measures --pool of the node(s) there; it
shuts that pool down for the cold starts, so it refuses a pool with acquired sessions.
The quick run takes about half a minute, the full one a few minutes. Progress goes to
stderr; the table, or with --json one JSON object, to stdout.`)
	// Not read from $NATS_URL: without the flag the bench starts its own node.
	natsURL := fs.String("nats-url", "", "measure the node(s) on this NATS server instead of starting one")
	pool := fs.String("pool", bench.DefaultPool, "with --nats-url: the pool to measure")
	quick := fs.Bool("quick", false, "fewer samples and shorter runs (demo-app startup delay 500ms instead of 2s)")
	asJSON := fs.Bool("json", false, "print one JSON object instead of the table")
	svgPath := fs.String("svg", "", "also write an SVG plot of the latency distributions and the throughput to `FILE`")
	syncMode := fs.String("sync", "both", "self-started node's NATS fsync: always, periodic, or both (one run each)")
	dockerImage := fs.String("docker-image", "auto", "self-started node: also time first responses of Docker containers of `IMAGE` (this binary's image, e.g. warmpool:dev); auto: warmpool:dev when the engine runs and has it; none: not at all")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run (clients, and a self-started node and server) to `FILE`, for go tool pprof")
	if _, code, ok := c.parse(fs, args, 0, 0); !ok {
		return code
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	o := bench.Options{Quick: *quick, Progress: c.stderr}
	if *natsURL != "" {
		if set["sync"] {
			return c.usageError(fs, "--sync applies to a self-started node; with --nats-url the server's own setting holds")
		}
		if set["docker-image"] {
			return c.usageError(fs, "--docker-image applies to a self-started node; with --nats-url the pool's own template holds")
		}
		if err := messages.ValidatePoolName(*pool); err != nil {
			return c.usageError(fs, "--pool: "+err.Error())
		}
		o.NATSURL, o.Pool = *natsURL, *pool
	} else {
		if set["pool"] {
			return c.usageError(fs, "--pool applies with --nats-url; a self-started node's pool is \""+bench.SelfPool+"\"")
		}
		switch *syncMode {
		case "both":
			o.Syncs = []string{bench.SyncAlways, bench.SyncPeriodic}
		case bench.SyncAlways, bench.SyncPeriodic:
			o.Syncs = []string{*syncMode}
		default:
			return c.usageError(fs, fmt.Sprintf("--sync %q must be always, periodic or both", *syncMode))
		}
		self, err := os.Executable()
		if err != nil {
			return c.fail(fmt.Errorf("find this binary for the demo-app pool: %w", err))
		}
		o.DemoApp = func(delay time.Duration) messages.Template {
			return messages.Template{
				Driver:    messages.DriverProcess,
				Command:   []string{self, "demo-app", "--startup-delay", delay.String()},
				ReadyPath: "/healthz",
				StopGrace: messages.Duration(5 * time.Second),
			}
		}
		switch img := *dockerImage; img {
		case "none":
		case "auto", "":
			if err := dockerImagePresent(defaultImage); err != nil {
				o.DockerSkipped = err.Error()
				fmt.Fprintf(c.stderr, "bench: Docker containers not measured: %v\n", err)
				break
			}
			o.DockerDemo = dockerDemo(defaultImage)
		default:
			if err := dockerImagePresent(img); err != nil {
				return c.fail(fmt.Errorf("--docker-image: %w", err))
			}
			o.DockerDemo = dockerDemo(img)
		}
		// The node's warnings only: a start that failed, a write that did.
		o.Logger = slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}

	// Created now, so that a path that cannot be written fails before the
	// run rather than after it.
	var svg *os.File
	if *svgPath != "" {
		f, err := os.Create(*svgPath)
		if err != nil {
			return c.fail(fmt.Errorf("svg: %w", err))
		}
		svg = f
	}

	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return c.fail(fmt.Errorf("cpuprofile: %w", err))
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return c.fail(fmt.Errorf("cpuprofile: %w", err))
		}
		defer pprof.StopCPUProfile()
	}

	// A signal ends the run early; the node and its containers are removed
	// all the same.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	report, err := bench.Run(ctx, o)
	if err != nil {
		if svg != nil {
			svg.Close()
			_ = os.Remove(*svgPath)
		}
		if errors.Is(err, context.Canceled) {
			err = fmt.Errorf("interrupted: %w", err)
		}
		return c.fail(fmt.Errorf("bench: %w", err))
	}
	if svg != nil {
		if err := writeSVG(svg, report); err != nil {
			return c.fail(err)
		}
	}
	if *asJSON {
		err = report.WriteJSON(c.stdout)
	} else {
		err = report.WriteTable(c.stdout)
	}
	if err != nil {
		return c.fail(err)
	}
	return exitOK
}

// defaultImage is the image `make image` builds.
const defaultImage = "warmpool:dev"

func dockerImagePresent(image string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return docker.ImagePresent(ctx, image)
}

// dockerDemo runs the demo app of image (this binary's image) with the
// startup delay, as the process pools run it.
func dockerDemo(image string) func(time.Duration) messages.Template {
	return func(delay time.Duration) messages.Template {
		return messages.Template{
			Driver:    messages.DriverDocker,
			StopGrace: messages.Duration(2 * time.Second),
			Docker: &messages.DockerTemplate{
				Image: image, Port: 8080,
				Command: []string{"demo-app", "--startup-delay", delay.String()},
			},
		}
	}
}

func writeSVG(f *os.File, r *bench.Report) error {
	if err := r.WriteSVG(f); err != nil {
		f.Close()
		return fmt.Errorf("svg %s: %w", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("svg %s: %w", f.Name(), err)
	}
	return nil
}
