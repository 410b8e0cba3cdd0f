package cluster

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/warmpool/warmpool/actors"
	"github.com/warmpool/warmpool/messages"
)

// TestRevokeAsksFirst: the leases of a node declared dead are revoked only
// if it does not answer a ping: a node whose heartbeats stopped reaching
// the others, but which runs, keeps them.
func TestRevokeAsksFirst(t *testing.T) {
	dir := t.TempDir()
	pool := messages.DefaultPoolConfig("web")
	pool.Command, pool.WarmTarget = []string{"/bin/true"}, 0 // no container is ever started
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	start := func(id string, o Options) *Node {
		o.NodeID, o.DataDir, o.Pools, o.Logger, o.OnExit = id, filepath.Join(dir, id), []messages.PoolConfig{pool}, logger, actors.ExitStop
		n, err := Start(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = n.Shutdown(context.Background()) })
		return n
	}
	a := start("a", Options{NATSListen: "127.0.0.1:-1"})
	b := start("b", Options{NATSURL: a.ClientURL()})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rev, err := a.leases.Create(ctx, actors.LeaseRecord{Pool: "web", ID: "s1", Node: "b", Slot: "x", ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	held := func() bool {
		l, ok, err := a.leases.Lookup(ctx, "web", "s1")
		if err != nil {
			t.Fatal(err)
		}
		return ok && l.Revision == rev
	}
	a.revokeDead("b")
	if !held() {
		t.Fatal("the lease of a node that answers was revoked")
	}
	if err := b.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	a.revokeDead("b")
	if held() {
		t.Fatal("the lease of a node that is gone was kept")
	}
}
