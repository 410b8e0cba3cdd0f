package testkit

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/warmpool/warmpool/cluster"
)

// FreePorts returns n TCP ports on 127.0.0.1 that were free a moment ago.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, n)
	var ls []net.Listener
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("free port: %v", err)
		}
		ls = append(ls, l)
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// NATSClusterAddrs are the addresses of an n-server NATS cluster on
// loopback: client and route listen addresses, and the routes (every
// server's) that each server is given.
type NATSClusterAddrs struct {
	Client, Cluster []string
	Routes          []string
}

// NewNATSClusterAddrs picks free ports for an n-server cluster.
func NewNATSClusterAddrs(t testing.TB, n int) NATSClusterAddrs {
	ports := FreePorts(t, 2*n)
	var a NATSClusterAddrs
	for i := range n {
		a.Client = append(a.Client, fmt.Sprintf("127.0.0.1:%d", ports[2*i]))
		a.Cluster = append(a.Cluster, fmt.Sprintf("127.0.0.1:%d", ports[2*i+1]))
		a.Routes = append(a.Routes, fmt.Sprintf("nats://127.0.0.1:%d", ports[2*i+1]))
	}
	return a
}

// URLs is every server's client URL, comma-separated, as nats.Connect
// takes them.
func (a NATSClusterAddrs) URLs() string {
	urls := make([]string, len(a.Client))
	for i, c := range a.Client {
		urls[i] = "nats://" + c
	}
	return strings.Join(urls, ",")
}

// StartNATSCluster runs an n-server NATS cluster with JetStream in this
// process, named s1..sn, and waits until JetStream has a leader. Cleanup
// shuts the servers down.
func StartNATSCluster(t testing.TB, n int) []*server.Server {
	t.Helper()
	a := NewNATSClusterAddrs(t, n)
	dir := t.TempDir()
	srvs := make([]*server.Server, n)
	for i := range n {
		srv, err := cluster.StartServer(context.Background(), cluster.ServerOptions{
			Name: fmt.Sprintf("s%d", i+1), Listen: a.Client[i], StoreDir: filepath.Join(dir, fmt.Sprintf("s%d", i+1)),
			ClusterListen: a.Cluster[i], Routes: a.Routes,
		})
		if err != nil {
			t.Fatalf("NATS server s%d: %v", i+1, err)
		}
		t.Cleanup(srv.Shutdown)
		srvs[i] = srv
	}
	CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		for _, s := range srvs {
			// Only the meta leader lists the peers that are up.
			if s.JetStreamIsLeader() {
				if peers := len(s.JetStreamClusterPeers()); peers != n {
					return fmt.Errorf("JetStream leader %s sees %d peers of %d", s.Name(), peers, n)
				}
				return nil
			}
		}
		return fmt.Errorf("JetStream has no leader yet")
	})
	return srvs
}
