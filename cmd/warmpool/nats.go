package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/warmpool/warmpool/cluster"
)

// natsServer runs a nats-server with JetStream on its own: one server of
// the NATS cluster that pool nodes join with --nats-url, where no other
// NATS image or binary is at hand.
func (c *cli) natsServer(args []string) int {
	fs := c.newFlagSet("nats", "", "Run a NATS server with JetStream until SIGINT or SIGTERM: one server of a NATS cluster\n(--cluster-listen and --routes) that pool nodes join with serve --nats-url and --replicas 3.")
	name := fs.String("name", "", "server name, unique in the cluster (default: the host name)")
	listen := fs.String("listen", cluster.DefaultNATSListen, "HOST:PORT to take clients on")
	dataDir := fs.String("data-dir", "./nats-data", "directory of the JetStream store")
	clusterListen := fs.String("cluster-listen", "", "HOST:PORT to take routes from the cluster's other servers on (empty: a single server)")
	clusterName := fs.String("cluster-name", cluster.DefaultClusterName, "the cluster's name, the same on every server")
	routes := fs.String("routes", "", "comma-separated route URLs of the cluster's servers, nats://HOST:PORT (this one may be listed)")
	syncMode := fs.String("sync", "always", "fsync of JetStream writes: always or periodic (see serve --sync)")
	buildLogger := c.logFlags(fs)
	if _, code, ok := c.parse(fs, args, 0, 0); !ok {
		return code
	}
	logger, err := buildLogger()
	if err != nil {
		return c.usageError(fs, err.Error())
	}
	if *syncMode != "always" && *syncMode != "periodic" {
		return c.usageError(fs, fmt.Sprintf("--sync %q must be always or periodic", *syncMode))
	}
	routeList, err := cluster.ParseRoutes(*routes)
	if err != nil {
		return c.usageError(fs, err.Error())
	}
	if *name == "" {
		if *name, err = os.Hostname(); err != nil {
			return c.usageError(fs, "--name is needed: "+err.Error())
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv, err := cluster.StartServer(ctx, cluster.ServerOptions{
		Name: *name, Listen: *listen, StoreDir: filepath.Join(*dataDir, "jetstream"), SyncPeriodic: *syncMode == "periodic",
		ClusterListen: *clusterListen, ClusterName: *clusterName, Routes: routeList,
	})
	if err != nil {
		return c.fail(err)
	}
	logger.Info("NATS server running", "name", *name, "clients", srv.ClientURL(), "cluster", *clusterListen, "routes", len(routeList))
	<-ctx.Done()
	stop()
	logger.Info("NATS server shutting down")
	srv.Shutdown()
	srv.WaitForShutdown()
	return exitOK
}
