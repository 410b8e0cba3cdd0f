package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/warmpool/warmpool/client"
	"github.com/warmpool/warmpool/messages"
	"github.com/warmpool/warmpool/testkit"
)

// TestDockerNodeKilledAdoptsItsContainers: a node of docker containers is
// killed with SIGKILL and started again on the same data dir: every session
// gets its container back, and the engine runs exactly the pool's containers.
func TestDockerNodeKilledAdoptsItsContainers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real node processes and containers")
	}
	image := testkit.ProjectImage(t)
	dir := t.TempDir()
	nodeID := fmt.Sprintf("dockkill-%d-%d", os.Getpid(), time.Now().UnixNano())
	label := "io.warmpool.node=" + nodeID
	t.Cleanup(func() { testkit.RemoveContainers(label) })
	cfg := filepath.Join(dir, "pools.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`pools:
  web:
    driver: docker
    readyPath: /healthz
    warmTarget: 1
    stopGrace: 2s
    docker: {image: %q, port: 8080}
`, image)), 0o644); err != nil {
		t.Fatal(err)
	}
	listen := fmt.Sprintf("127.0.0.1:%d", testkit.FreePorts(t, 1)[0])
	node := startNodeProc(t, filepath.Join(dir, "data"), cfg, nodeID, listen)
	nc, err := nats.Connect(node.url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	web := client.New(nc, client.WithTimeout(30*time.Second)).Pool("web")
	ctx := context.Background()
	held := map[string]messages.Lease{}
	for _, id := range []string{"a", "b"} {
		l, err := web.GetContainer(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		held[id] = l
	}
	node.kill()
	node = startNodeProc(t, filepath.Join(dir, "data"), cfg, nodeID, listen)
	for id, want := range held {
		l, err := web.GetContainer(ctx, id)
		if err != nil || l.Endpoint != want.Endpoint {
			t.Fatalf("after SIGKILL %s = %+v, %v; want %s", id, l, err, want.Endpoint)
		}
	}
	testkit.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		st, err := web.Stats(ctx)
		if err != nil {
			return err
		}
		if st.Warming+st.Draining != 0 || st.Acquired != 2 {
			return fmt.Errorf("stats %+v", st)
		}
		if n := len(testkit.Containers(t, label)); n != st.Total {
			return fmt.Errorf("%d containers carry the node's label; the pool owns %d", n, st.Total)
		}
		return nil
	})
	node.kill()
}
