package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/warmpool/warmpool/messages"
)

// DefaultClusterName names the NATS cluster that embedded servers form when
// they are given a cluster listen address.
const DefaultClusterName = "warmpool"

// ServerOptions configure an embedded nats-server with JetStream: the one a
// node embeds, or one run on its own (`warmpool nats`).
type ServerOptions struct {
	// Name is the server's name, unique in the cluster; it shows in a
	// stream's cluster info as its leader or a replica.
	Name string
	// Listen is where the server takes clients, host:port; a port of -1
	// picks a free one.
	Listen string
	// StoreDir holds the JetStream store.
	StoreDir string
	// SyncPeriodic turns off the fsync of every write (see
	// Options.SyncPeriodic).
	SyncPeriodic bool
	// ClusterListen, host:port, makes the server one of a NATS cluster: it
	// takes routes from the other servers there. Empty: a single server.
	ClusterListen string
	// ClusterName names the cluster; every server of it must give the same.
	// Default DefaultClusterName.
	ClusterName string
	// Routes are the cluster's servers' route URLs (nats://host:port, the
	// others' ClusterListen); listing every server, this one included, is
	// fine: a server skips the route to itself. Routes to servers not yet
	// up are retried.
	Routes []string
}

// ParseRoutes splits a comma-separated list of route URLs and checks each.
func ParseRoutes(s string) ([]string, error) {
	var out []string
	for _, r := range strings.Split(s, ",") {
		if r = strings.TrimSpace(r); r == "" {
			continue
		}
		if _, err := parseRoute(r); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

func parseRoute(r string) (*url.URL, error) {
	u, err := url.Parse(r)
	if err != nil || (u.Scheme != "nats" && u.Scheme != "nats-route") || u.Hostname() == "" || u.Port() == "" {
		return nil, fmt.Errorf("%w: route %q must be nats://HOST:PORT", messages.ErrConfigValidation, r)
	}
	return u, nil
}

// hostPort splits a listen address; what names the flag goes in errors.
func hostPort(what, addr string) (string, int, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%w: %s address %q: %v", messages.ErrConfigValidation, what, addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < -1 || port > 65535 {
		return "", 0, fmt.Errorf("%w: %s address %q: bad port", messages.ErrConfigValidation, what, addr)
	}
	return host, port, nil
}

// StartServer starts an embedded nats-server with JetStream and waits until
// it takes clients. A clustered server takes clients before the cluster has
// elected its JetStream leader; OpenStores waits for that.
func StartServer(ctx context.Context, o ServerOptions) (*server.Server, error) {
	if err := validName("server", o.Name); err != nil {
		return nil, fmt.Errorf("%w: server name: %v", messages.ErrConfigValidation, err)
	}
	host, port, err := hostPort("nats listen", o.Listen)
	if err != nil {
		return nil, err
	}
	sopts := &server.Options{
		ServerName: o.Name,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   o.StoreDir,
		NoSigs:     true,
		NoLog:      true,
		// Every lease write is fsynced before it is acknowledged: a lease
		// the node replied with survives a machine crash.
		SyncAlways: !o.SyncPeriodic,
	}
	// The server only logs a port it cannot bind, and would leave us
	// waiting: find out first, with a clear message.
	listens := []string{o.Listen}
	if o.ClusterListen != "" {
		chost, cport, err := hostPort("nats cluster listen", o.ClusterListen)
		if err != nil {
			return nil, err
		}
		name := o.ClusterName
		if name == "" {
			name = DefaultClusterName
		}
		sopts.Cluster = server.ClusterOpts{Name: name, Host: chost, Port: cport}
		for _, r := range o.Routes {
			u, err := parseRoute(r)
			if err != nil {
				return nil, err
			}
			sopts.Routes = append(sopts.Routes, u)
		}
		listens = append(listens, o.ClusterListen)
	} else if len(o.Routes) > 0 {
		return nil, fmt.Errorf("%w: routes need a cluster listen address", messages.ErrConfigValidation)
	}
	for _, addr := range listens {
		if strings.HasSuffix(addr, ":-1") || strings.HasSuffix(addr, ":0") {
			continue
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("embedded NATS server cannot listen on %s: %w", addr, err)
		}
		l.Close()
	}
	srv, err := server.NewServer(sopts)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS server: %w", err)
	}
	go srv.Start()
	wait := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
		wait = time.Until(dl)
	}
	if !srv.ReadyForConnections(wait) {
		srv.Shutdown()
		return nil, fmt.Errorf("embedded NATS server did not start on %s (is the port in use?)", o.Listen)
	}
	return srv, nil
}

// jsReadyTimeout bounds how long a starting node waits for JetStream: a
// clustered server takes clients before its cluster has a leader, or every
// peer that an R3 bucket needs.
const jsReadyTimeout = 2 * time.Minute

// untilJetStream runs f until it succeeds, fails for another reason than
// JetStream not being ready yet, or jsReadyTimeout (or ctx) ends.
func untilJetStream(ctx context.Context, what string, f func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, jsReadyTimeout)
	defer cancel()
	wait := 100 * time.Millisecond
	for {
		actx, acancel := context.WithTimeout(ctx, 5*time.Second)
		err := f(actx)
		acancel()
		if err == nil || !jsNotReady(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: JetStream is not ready (a NATS cluster without a quorum, or fewer servers than the replicas asked for?): %w", what, err)
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// jsNotReady tells the errors of a JetStream that is there but not ready
// (no leader yet, too few peers) from the ones that will not go away.
func jsNotReady(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case 10005, // no suitable peers for placement
			10008, // JetStream cluster not available
			10023: // insufficient resources
			return true
		}
		return apiErr.Code == 503
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrJetStreamNotEnabled)
}
