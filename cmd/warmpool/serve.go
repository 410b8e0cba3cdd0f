package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/warmpool/warmpool/actors"
	"github.com/warmpool/warmpool/cluster"
	"github.com/warmpool/warmpool/config"
)

// shutdownTimeout bounds the node's ordered shutdown after a signal.
const shutdownTimeout = 30 * time.Second

func (c *cli) serve(args []string) int {
	fs := c.newFlagSet("serve", "", "Run a warmpool node until SIGINT or SIGTERM. Without --config it runs one pool, \"default\",\nwhose containers are this binary's demo-app. Without --nats-url it embeds a NATS server\nlistening on --nats-listen; clients connect there.")
	configPath := fs.String("config", "", "pools config file (YAML); default: one pool running this binary's demo-app")
	dataDir := fs.String("data-dir", cluster.DefaultDataDir, "directory of the node's state: its id and the embedded server's JetStream store")
	// Not read from $NATS_URL: that variable points the client commands at a
	// node, and a node that followed it would stop embedding its own server.
	natsURL := fs.String("nats-url", "", "join this NATS server instead of embedding one")
	natsWait := fs.Duration("nats-wait", time.Minute, "how long to wait for --nats-url to answer at start (a NATS cluster that starts at the same time)")
	natsListen := fs.String("nats-listen", cluster.DefaultNATSListen, "HOST:PORT the embedded NATS server listens on (port -1: any free port)")
	clusterListen := fs.String("nats-cluster-listen", "", "HOST:PORT on which the embedded NATS server takes routes: it joins a NATS cluster (see --nats-routes)")
	clusterName := fs.String("nats-cluster-name", cluster.DefaultClusterName, "name of the NATS cluster, the same on every server of it")
	routes := fs.String("nats-routes", "", "comma-separated route URLs, nats://HOST:PORT, of the NATS cluster's servers")
	replicas := fs.Int("replicas", 1, "replicas of the lease and snapshot buckets and the event stream, 1 to 5 (3 on a three-server NATS cluster)")
	nodeID := fs.String("node-id", "", "this node's id, unique in the cluster (default: the id kept in the data dir, made on first start)")
	onExit := fs.String("on-exit", string(actors.ExitLeave), "what to do with the containers on exit: leave (running, with their leases, for the next start to adopt) or stop")
	syncMode := fs.String("sync", "always", "embedded NATS fsync: always (every lease write survives a machine crash) or periodic (faster; may lose recent writes on a crash)")
	eventsMaxAge := fs.Duration("events-max-age", 24*time.Hour, "how long the event stream keeps events")
	eventsMaxBytes := fs.Int64("events-max-bytes", -1, "size cap of the event stream in bytes, oldest first (-1: none; a cap is reserved on disk)")
	heartbeat := fs.Duration("heartbeat", time.Second, "how often the node tells the others it is alive")
	deadAfter := fs.Duration("dead-after", 5*time.Second, "how long a silent node counts as live (more than twice --heartbeat)")
	record := fs.String("record", "", "record every pool's inputs to this file (JSON lines) for `warmpool replay`")
	buildLogger := c.logFlags(fs)
	if _, code, ok := c.parse(fs, args, 0, 0); !ok {
		return code
	}
	logger, err := buildLogger()
	if err != nil {
		return c.usageError(fs, err.Error())
	}
	if *onExit != string(actors.ExitLeave) && *onExit != string(actors.ExitStop) {
		return c.usageError(fs, fmt.Sprintf("--on-exit %q must be leave or stop", *onExit))
	}
	if *syncMode != "always" && *syncMode != "periodic" {
		return c.usageError(fs, fmt.Sprintf("--sync %q must be always or periodic", *syncMode))
	}

	routeList, err := cluster.ParseRoutes(*routes)
	if err != nil {
		return c.usageError(fs, err.Error())
	}
	if *natsURL != "" && (*clusterListen != "" || len(routeList) > 0) {
		return c.usageError(fs, "--nats-cluster-listen and --nats-routes configure the embedded server; with --nats-url there is none")
	}
	if *replicas < 1 || *replicas > 5 {
		return c.usageError(fs, fmt.Sprintf("--replicas %d must be 1 to 5", *replicas))
	}

	var file config.File
	if *configPath != "" {
		if file, err = config.Load(*configPath); err != nil {
			return c.fail(err)
		}
	} else {
		self, err := os.Executable()
		if err != nil {
			return c.fail(fmt.Errorf("find this binary for the default pool's command: %w", err))
		}
		file = config.Default(self)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	node, err := cluster.Start(ctx, cluster.Options{
		NodeID:            *nodeID,
		DataDir:           *dataDir,
		NATSURL:           *natsURL,
		NATSWait:          *natsWait,
		NATSListen:        *natsListen,
		NATSClusterListen: *clusterListen,
		NATSClusterName:   *clusterName,
		NATSRoutes:        routeList,
		Replicas:          *replicas,
		Pools:             file.Pools,
		Logger:            logger,
		OnExit:            actors.OnExit(*onExit),
		Record:            *record,
		EventsMaxAge:      *eventsMaxAge,
		HeartbeatInterval: *heartbeat,
		DeadAfter:         *deadAfter,
		EventsMaxBytes:    *eventsMaxBytes,
		SyncPeriodic:      *syncMode == "periodic",
	})
	if err != nil {
		return c.fail(fmt.Errorf("start the node: %w", err))
	}
	// The node logs "warmpool serving" with its client URL and pools.
	// SIGUSR1 drains it: no new sessions, exit when the last lease ends.
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-usr1:
			node.Drain()
		case <-node.Drained():
			logger.Info("drained; exiting")
			done = true
		}
	}
	// From here a second signal kills the process at once: the way out of a
	// shutdown that hangs.
	stop()
	logger.Info("warmpool shutting down", "timeout", shutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := node.Shutdown(sctx); err != nil {
		return c.fail(fmt.Errorf("shutdown: %w", err))
	}
	return exitOK
}

// logFlags adds --log-level and --log-format to fs; the func it returns
// builds the logger, writing to stderr, once fs is parsed.
func (c *cli) logFlags(fs *flag.FlagSet) func() (*slog.Logger, error) {
	level := fs.String("log-level", "info", "debug, info, warn or error")
	format := fs.String("log-format", "text", "text or json")
	return func() (*slog.Logger, error) { return newLogger(c.stderr, *level, *format) }
}

// newLogger builds the node's one logger, writing to w.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	switch level {
	case "debug":
		lvl = slog.LevelDebug
	case "info":
		lvl = slog.LevelInfo
	case "warn":
		lvl = slog.LevelWarn
	case "error":
		lvl = slog.LevelError
	default:
		return nil, fmt.Errorf("--log-level %q must be debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format %q must be text or json", format)
	}
}
