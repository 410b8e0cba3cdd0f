package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/warmpool/warmpool/demoapp"
)

func (c *cli) demoApp(args []string) int {
	fs := c.newFlagSet("demo-app", "", "Run the demo HTTP app: it waits --startup-delay (a slow cold start), then serves\nGET / (which slot and process answered) and GET /healthz until SIGINT or SIGTERM.\nThe process driver starts it with $PORT set.")
	port := fs.Int("port", 0, "port to listen on (default $PORT)")
	delay := fs.Duration("startup-delay", 0, "how long to wait before listening")
	if _, code, ok := c.parse(fs, args, 0, 0); !ok {
		return code
	}
	if *port < 0 || *port > 65535 {
		return c.usageError(fs, "--port must be in 0..65535")
	}
	if *delay < 0 {
		return c.usageError(fs, "--startup-delay must not be negative")
	}

	// SIGTERM is how the process driver stops a container.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := slog.New(slog.NewTextHandler(c.stderr, nil))
	if err := demoapp.Run(ctx, demoapp.Options{Port: *port, StartupDelay: *delay, Logger: logger}); err != nil {
		return c.fail(err)
	}
	return exitOK
}
