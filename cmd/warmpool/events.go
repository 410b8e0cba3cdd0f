package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/warmpool/warmpool/cluster"
	"github.com/warmpool/warmpool/messages"
)

func (c *cli) events(args []string) int {
	fs := c.newFlagSet("events", "", "Print the events of the pools: what each decided and every slot's transitions, oldest first,\none per line. --session prints the life of a session (its events and its slot's until\nthe release), --slot a slot's. Reads a node's NATS system, or with --data-dir the store\nof a stopped node.")
	natsURL := fs.String("nats-url", "", "NATS server to connect to (default $NATS_URL, else "+defaultNATSURL+")")
	dataDir := fs.String("data-dir", "", "read the events from a stopped node's data dir instead of over NATS")
	pool := fs.String("pool", "", "only this pool's events (default: every pool)")
	session := fs.String("session", "", "only the life of session ID")
	slot := fs.String("slot", "", "only the events of slot S")
	since := fs.String("since", "", "only the events since T: a duration ago (10m) or an RFC 3339 time (2026-01-02T15:04:05Z)")
	follow := fs.Bool("follow", false, "keep printing new events until interrupted")
	asJSON := fs.Bool("json", false, "print each event as a JSON object")
	if _, code, ok := c.parse(fs, args, 0, 0); !ok {
		return code
	}
	q := cluster.EventQuery{Pool: *pool, Session: *session, Slot: *slot, Follow: *follow}
	if *pool != "" {
		if err := messages.ValidatePoolName(*pool); err != nil {
			return c.usageError(fs, "--pool: "+err.Error())
		}
	}
	if *session != "" {
		if err := messages.ValidateID(*session); err != nil {
			return c.usageError(fs, "--session: "+err.Error())
		}
	}
	if *since != "" {
		t, err := parseSince(*since, time.Now())
		if err != nil {
			return c.usageError(fs, "--since: "+err.Error())
		}
		q.Since = t
	}
	if *dataDir != "" && *follow {
		return c.usageError(fs, "--follow needs a running node: a data dir is read as it was when the node stopped")
	}
	if *dataDir != "" && *natsURL != "" {
		return c.usageError(fs, "--data-dir and --nats-url exclude each other")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var js jetstream.JetStream
	if *dataDir != "" {
		var closeStore func()
		var err error
		js, closeStore, err = openDataDir(*dataDir)
		if err != nil {
			return c.fail(err)
		}
		defer closeStore()
	} else {
		url := resolveNATSURL(*natsURL, c.env)
		nc, err := nats.Connect(url, nats.Name("warmpool-cli"))
		if err != nil {
			return c.fail(fmt.Errorf("cannot connect to NATS at %s: %w (set --nats-url or NATS_URL; is `warmpool serve` running? A stopped node's events are read with --data-dir)", cluster.RedactURLs(url), err))
		}
		defer nc.Close()
		if js, err = jetstream.New(nc); err != nil {
			return c.fail(err)
		}
	}

	out := bufio.NewWriter(c.stdout)
	err := cluster.ReadEvents(ctx, js, q, func(e messages.Event) error {
		if *asJSON {
			b, err := json.Marshal(e)
			if err != nil {
				return err
			}
			out.Write(append(b, '\n'))
		} else {
			out.WriteString(e.String() + "\n")
		}
		if *follow {
			return out.Flush()
		}
		return nil
	})
	if ferr := out.Flush(); ferr != nil && err == nil {
		err = ferr
	}
	switch {
	case errors.Is(err, cluster.ErrNoEventStream) && *dataDir != "":
		return c.fail(fmt.Errorf("no events in %s: %w", *dataDir, err))
	case err != nil && !*follow && ctx.Err() != nil:
		return c.fail(errors.New("interrupted"))
	case err != nil:
		return c.fail(err)
	}
	return exitOK
}

// parseSince reads --since: a duration before now, or an RFC 3339 time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("%q: the duration ago must not be negative", s)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither a duration ago (10m, 2h) nor an RFC 3339 time (2026-01-02T15:04:05Z)", s)
	}
	return t, nil
}

// openDataDir opens a stopped node's JetStream store with a private
// embedded server on a loopback port, and returns a JetStream on it and the
// function that stops the server. It holds the data dir's lock meanwhile, so
// that a node cannot start on the store while it is read.
func openDataDir(dir string) (jetstream.JetStream, func(), error) {
	store := filepath.Join(dir, "jetstream")
	if fi, err := os.Stat(store); err != nil || !fi.IsDir() {
		// Checked first: a server would create an empty store there.
		return nil, nil, fmt.Errorf("%s has no JetStream store (%s): is it the data dir of a node that embeds its NATS server?", dir, store)
	}
	unlock, err := cluster.LockDataDir(dir)
	if err != nil {
		if errors.Is(err, cluster.ErrDataDirInUse) {
			return nil, nil, fmt.Errorf("%w; while a node runs, read its events over NATS: warmpool events --nats-url URL", err)
		}
		return nil, nil, err
	}
	srv, err := server.NewServer(&server.Options{
		ServerName: "warmpool-events-reader",
		Host:       "127.0.0.1",
		Port:       -1,
		JetStream:  true,
		StoreDir:   store,
		NoSigs:     true,
		NoLog:      true,
	})
	if err != nil {
		unlock()
		return nil, nil, fmt.Errorf("opening the store in %s: %w", dir, err)
	}
	stopServer := func() {
		srv.Shutdown()
		srv.WaitForShutdown()
		unlock()
	}
	// Start returns once the server listens, or at once if JetStream could
	// not open the store.
	srv.Start()
	if !srv.JetStreamEnabled() || !srv.ReadyForConnections(10*time.Second) {
		stopServer()
		return nil, nil, fmt.Errorf("cannot open the JetStream store in %s", store)
	}
	nc, err := nats.Connect(srv.ClientURL(), nats.Name("warmpool-cli"), nats.InProcessServer(srv))
	if err != nil {
		stopServer()
		return nil, nil, fmt.Errorf("opening the store in %s: %w", dir, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		stopServer()
		return nil, nil, err
	}
	return js, func() { nc.Close(); stopServer() }, nil
}
