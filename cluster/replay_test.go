package cluster_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/warmpool/warmpool/actors"
	"github.com/warmpool/warmpool/client"
	"github.com/warmpool/warmpool/cluster"
	"github.com/warmpool/warmpool/messages"
	"github.com/warmpool/warmpool/testkit"
)

// TestReplayOfARealRun records a node running real processes on a real
// NATS server, then replays the recording: the same events, exactly, every
// time.
func TestReplayOfARealRun(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "run.jsonl")
	web := testkit.DemoPool("web", 100*time.Millisecond)
	web.WarmTarget, web.MaxInstances = 2, 4
	web.AcquireTimeout = messages.Duration(time.Second)
	web.RefreshInterval = messages.Duration(200 * time.Millisecond)
	node, err := cluster.Start(context.Background(), cluster.Options{
		DataDir: filepath.Join(dir, "data"), NATSListen: "127.0.0.1:-1", Pools: []messages.PoolConfig{web},
		Logger: testkit.Logger(t), OnExit: actors.ExitStop, Record: path,
	})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(node.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	p := client.New(nc).Pool("web")
	waitStats(t, p, warmIs(2))
	for _, id := range []string{"a", "b", "a", "c", "d"} {
		_, _ = p.GetContainer(ctx(t), id) // d may find the pool exhausted
	}
	if _, err := p.ReleaseContainer(ctx(t), "b"); err != nil {
		t.Fatal(err)
	}
	_, _ = p.Renew(ctx(t), "c")
	time.Sleep(1500 * time.Millisecond) // leases expire and are reaped
	_, _ = p.ShutdownAll(ctx(t))
	nc.Close()
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := node.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}

	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	inputs, err := actors.ReadInputs(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(inputs) < 20 {
		t.Fatalf("only %d inputs recorded", len(inputs))
	}
	var first string
	for i := range 100 {
		results, err := actors.Replay(ctx(t), inputs, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(results) != 1 || len(results[0].Events) == 0 {
			t.Fatalf("replay results %+v", results)
		}
		if d := results[0].Divergences; len(d) > 0 {
			t.Fatalf("the replay of a real run diverged:\n%v", d)
		}
		b, err := json.Marshal(results)
		if err != nil {
			t.Fatal(err)
		}
		out := string(b)
		if i == 0 {
			first = out
		} else if out != first {
			t.Fatal("two replays of one log differ")
		}
	}
}
