package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/warmpool/warmpool/actors"
	"github.com/warmpool/warmpool/client"
	"github.com/warmpool/warmpool/cluster"
	"github.com/warmpool/warmpool/messages"
	"github.com/warmpool/warmpool/testkit"
)

// dockerPool is a pool of warmpool's own image running the demo app.
func dockerPool(name, image string) messages.PoolConfig {
	c := messages.DefaultPoolConfig(name)
	c.Driver = messages.DriverDocker
	c.Docker = &messages.DockerTemplate{Image: image, Port: 8080}
	c.ReadyPath = "/healthz"
	c.StartTimeout = messages.Duration(30 * time.Second)
	c.StopGrace = messages.Duration(2 * time.Second)
	return c
}

// startDockerNode runs a node whose containers carry nodeID, on dir.
func startDockerNode(t *testing.T, dir, nodeID string, onExit actors.OnExit, pools ...messages.PoolConfig) (*cluster.Node, *nats.Conn) {
	t.Helper()
	node, err := cluster.Start(context.Background(), cluster.Options{
		NodeID: nodeID, DataDir: dir, NATSListen: "127.0.0.1:-1", Pools: pools, Logger: testkit.Logger(t), OnExit: onExit,
	})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(node.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	return node, nc
}

func stopNode(t *testing.T, node *cluster.Node, nc *nats.Conn) {
	t.Helper()
	nc.Close()
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := node.Shutdown(c); err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

func TestDockerPool(t *testing.T) {
	image := testkit.ProjectImage(t)
	nodeID := fmt.Sprintf("dock-%d", time.Now().UnixNano())
	label := "io.warmpool.node=" + nodeID
	t.Cleanup(func() { testkit.RemoveContainers(label) })
	missing := dockerPool("missing", "warmpool-no-such-image:never")
	missing.WarmTarget = 0
	node, nc := startDockerNode(t, t.TempDir(), nodeID, actors.ExitStop, dockerPool("web", image), missing)
	defer func() {
		stopNode(t, node, nc)
		if left := testkit.Containers(t, label); len(left) > 0 {
			t.Errorf("containers left after shutdown: %v", left)
		}
	}()
	p := client.New(nc).Pool("web")
	waitStats(t, p, warmIs(1))

	l, err := p.GetContainer(ctx(t), "alice")
	if err != nil {
		t.Fatal(err)
	}
	info := get(t, l.Endpoint)
	if info.Slot != l.Slot || info.Pool != "web" || l.Cold {
		t.Fatalf("lease %+v; the container says %+v", l, info)
	}
	if again, err := p.GetContainer(ctx(t), "alice"); err != nil || again.Endpoint != l.Endpoint {
		t.Fatalf("sticky acquire = %+v, %v", again, err)
	}
	if _, err := p.ReleaseContainer(ctx(t), "alice"); err != nil {
		t.Fatal(err)
	}
	st := waitStats(t, p, warmIs(2))
	if n := len(testkit.Containers(t, label)); n != st.Total {
		t.Fatalf("%d containers carry the node's label; the pool owns %d", n, st.Total)
	}

	// docker kill of the warm containers: the pool notices, removes them and
	// warms a replacement.
	for _, victim := range testkit.Containers(t, label) {
		if out, err := exec.Command("docker", "kill", victim).CombinedOutput(); err != nil {
			t.Fatalf("docker kill: %v: %s", err, out)
		}
	}
	waitStats(t, p, func(st messages.Stats) error {
		if st.Died != 2 || st.Warm != 1 || st.Total != 1 {
			return fmt.Errorf("died=%d warm=%d total=%d; want both dead ones replaced by one", st.Died, st.Warm, st.Total)
		}
		if n := len(testkit.Containers(t, label)); n != 1 {
			return fmt.Errorf("%d containers carry the label; want 1 (the dead ones removed)", n)
		}
		return nil
	})
	l, err = p.GetContainer(ctx(t), "x")
	if err != nil {
		t.Fatal(err)
	}
	if l.Cold || get(t, l.Endpoint).Slot != l.Slot {
		t.Fatalf("the replacement %+v is not warm, or its endpoint is not its container", l)
	}

	// A missing image: a clear error naming it, and nothing left behind.
	_, err = client.New(nc).Pool("missing").GetContainer(ctx(t), "z")
	if !errors.Is(err, client.ErrNotReady) || !strings.Contains(err.Error(), "warmpool-no-such-image:never") {
		t.Fatalf("acquire from a missing image: %v; want not_ready naming the image", err)
	}
}

func TestDockerNodeRestartAdopts(t *testing.T) {
	image := testkit.ProjectImage(t)
	nodeID := fmt.Sprintf("dock-%d", time.Now().UnixNano())
	label := "io.warmpool.node=" + nodeID
	t.Cleanup(func() { testkit.RemoveContainers(label) })
	dir := t.TempDir()
	node, nc := startDockerNode(t, dir, nodeID, actors.ExitLeave, dockerPool("web", image))
	p := client.New(nc).Pool("web")
	waitStats(t, p, warmIs(1))
	held := map[string]messages.Lease{}
	for _, id := range []string{"a", "b", "c"} {
		l, err := p.GetContainer(ctx(t), id)
		if err != nil {
			t.Fatal(err)
		}
		held[id] = l
	}
	st := waitStats(t, p, func(st messages.Stats) error {
		if st.Warming != 0 || st.Acquired != 3 {
			return fmt.Errorf("stats %+v", st)
		}
		return nil
	})
	stopNode(t, node, nc) // leave: the containers keep running
	if n := len(testkit.Containers(t, label)); n != st.Total {
		t.Fatalf("%d containers after a leaving exit; want %d", n, st.Total)
	}

	node, nc = startDockerNode(t, dir, nodeID, actors.ExitStop, dockerPool("web", image))
	defer func() {
		stopNode(t, node, nc)
		if left := testkit.Containers(t, label); len(left) > 0 {
			t.Errorf("containers left after shutdown: %v", left)
		}
	}()
	p = client.New(nc).Pool("web")
	for id, want := range held {
		l, err := p.GetContainer(ctx(t), id)
		if err != nil || l.Endpoint != want.Endpoint || l.Slot != want.Slot {
			t.Fatalf("after restart %s = %+v, %v; want %s", id, l, err, want.Endpoint)
		}
	}
	st2 := waitStats(t, p, func(st messages.Stats) error {
		if st.Warming != 0 || st.Draining != 0 || st.Acquired != 3 {
			return fmt.Errorf("stats %+v", st)
		}
		return nil
	})
	if st2.Started != 0 {
		t.Fatalf("the restarted node started %d containers; want it to adopt them all", st2.Started)
	}
	if n := len(testkit.Containers(t, label)); n != st2.Total {
		t.Fatalf("%d containers carry the label; the pool owns %d", n, st2.Total)
	}
}
