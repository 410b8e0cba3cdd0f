package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/warmpool/warmpool/client"
	"github.com/warmpool/warmpool/cluster"
	"github.com/warmpool/warmpool/messages"
)

// defaultNATSURL is where the client commands look for a node when neither
// --nats-url nor $NATS_URL says otherwise: where `warmpool serve` listens by
// default.
const defaultNATSURL = "nats://127.0.0.1:4222"

// clientFlags are the flags every client command takes.
type clientFlags struct {
	natsURL string
	pool    string
	timeout time.Duration
}

func (c *cli) clientFlagSet(name, argsUsage, summary string) (*flag.FlagSet, *clientFlags) {
	fs := c.newFlagSet(name, argsUsage, summary)
	cf := &clientFlags{}
	fs.StringVar(&cf.natsURL, "nats-url", "", "NATS server to connect to (default $NATS_URL, else "+defaultNATSURL+")")
	fs.StringVar(&cf.pool, "pool", "default", "pool name")
	// Long by default: acquire may wait for a cold start.
	fs.DurationVar(&cf.timeout, "timeout", client.DefaultTimeout, "how long to wait for the reply")
	return fs, cf
}

// check validates the flags after parsing; a bad value is a usage error.
func (c *cli) checkClientFlags(fs *flag.FlagSet, cf *clientFlags) (int, bool) {
	if cf.timeout <= 0 {
		return c.usageError(fs, fmt.Sprintf("--timeout %s must be positive", cf.timeout)), false
	}
	if err := messages.ValidatePoolName(cf.pool); err != nil {
		return c.usageError(fs, "--pool: "+err.Error()), false
	}
	return exitOK, true
}

// resolveNATSURL applies the precedence flag, then $NATS_URL, then the default.
func resolveNATSURL(flagValue string, env func(string) string) string {
	if flagValue != "" {
		return flagValue
	}
	if v := env("NATS_URL"); v != "" {
		return v
	}
	return defaultNATSURL
}

// sessionCommand runs acquire, release or renew: one ID argument.
func (c *cli) sessionCommand(name, summary string, args []string, call func(ctx context.Context, p *client.Pool, id string) (any, error)) int {
	fs, cf := c.clientFlagSet(name, "ID", summary)
	pos, code, ok := c.parse(fs, args, 1, 1)
	if !ok {
		return code
	}
	if code, ok := c.checkClientFlags(fs, cf); !ok {
		return code
	}
	id := pos[0]
	if err := messages.ValidateID(id); err != nil {
		return c.usageError(fs, err.Error())
	}
	return c.callPool(cf, false, func(ctx context.Context, p *client.Pool) (any, error) { return call(ctx, p, id) })
}

func (c *cli) acquire(args []string) int {
	return c.sessionCommand("acquire", "Acquire the container of session ID and print the lease as one JSON line. The same ID\ngets the same container until it is released or its lease expires; with no warm\ncontainer the command waits for a cold start.", args,
		func(ctx context.Context, p *client.Pool, id string) (any, error) { return p.GetContainer(ctx, id) })
}

func (c *cli) release(args []string) int {
	return c.sessionCommand("release", "Release the container of session ID and print the result as one JSON line.", args,
		func(ctx context.Context, p *client.Pool, id string) (any, error) { return p.ReleaseContainer(ctx, id) })
}

func (c *cli) renew(args []string) int {
	return c.sessionCommand("renew", "Extend the lease of session ID by the pool's acquireTimeout and print the lease as\none JSON line.", args,
		func(ctx context.Context, p *client.Pool, id string) (any, error) { return p.Renew(ctx, id) })
}

func (c *cli) stats(args []string) int {
	fs, cf := c.clientFlagSet("stats", "", "Print the pool's counts (warm, acquired, warming, ...) and settings as JSON.")
	if _, code, ok := c.parse(fs, args, 0, 0); !ok {
		return code
	}
	if code, ok := c.checkClientFlags(fs, cf); !ok {
		return code
	}
	// Indented: stats is read by people more often than by scripts.
	return c.callPool(cf, true, func(ctx context.Context, p *client.Pool) (any, error) { return p.Stats(ctx) })
}

func (c *cli) warmup(args []string) int {
	fs, cf := c.clientFlagSet("warmup", "N", "Start N more containers in the pool (within maxInstances) and print how many started.")
	pos, code, ok := c.parse(fs, args, 1, 1)
	if !ok {
		return code
	}
	if code, ok := c.checkClientFlags(fs, cf); !ok {
		return code
	}
	n, err := strconv.Atoi(pos[0])
	if err != nil || n < 0 {
		return c.usageError(fs, fmt.Sprintf("N must be an integer 0 or more, not %q", pos[0]))
	}
	return c.callPool(cf, false, func(ctx context.Context, p *client.Pool) (any, error) { return p.Warmup(ctx, n) })
}

func (c *cli) shutdown(args []string) int {
	fs, cf := c.clientFlagSet("shutdown", "", "Stop every container of the pool and end every lease; print the counts.")
	if _, code, ok := c.parse(fs, args, 0, 0); !ok {
		return code
	}
	if code, ok := c.checkClientFlags(fs, cf); !ok {
		return code
	}
	return c.callPool(cf, false, func(ctx context.Context, p *client.Pool) (any, error) { return p.ShutdownAll(ctx) })
}

// callPool connects, makes one call and prints its reply as JSON.
func (c *cli) callPool(cf *clientFlags, indent bool, call func(context.Context, *client.Pool) (any, error)) int {
	natsURL := resolveNATSURL(cf.natsURL, c.env)
	nc, err := nats.Connect(natsURL, nats.Name("warmpool-cli"))
	if err != nil {
		return c.fail(fmt.Errorf("cannot connect to NATS at %s: %w (set --nats-url or NATS_URL; is `warmpool serve` running?)", cluster.RedactURLs(natsURL), err))
	}
	defer nc.Close()

	ctx, cancel := context.WithTimeout(context.Background(), cf.timeout)
	defer cancel()
	reply, err := call(ctx, client.New(nc).Pool(cf.pool))
	if err != nil {
		return c.fail(err)
	}
	var out []byte
	if indent {
		out, err = json.MarshalIndent(reply, "", "  ")
	} else {
		out, err = json.Marshal(reply)
	}
	if err != nil {
		return c.fail(fmt.Errorf("encode the reply: %w", err))
	}
	out = append(out, '\n')
	if _, err := c.stdout.Write(out); err != nil {
		return c.fail(err)
	}
	return exitOK
}

func (c *cli) drain(args []string) int {
	fs, cf := c.clientFlagSet("drain", "NODE", "Drain node NODE: it takes no new sessions, serves its sessions until their leases end,\nthen stops its containers and exits; its share of the pools goes to the other nodes.")
	pos, code, ok := c.parse(fs, args, 1, 1)
	if !ok {
		return code
	}
	if code, ok := c.checkClientFlags(fs, cf); !ok {
		return code
	}
	node := pos[0]
	return c.callPool(cf, false, func(ctx context.Context, p *client.Pool) (any, error) { return p.Client().Drain(ctx, node) })
}
