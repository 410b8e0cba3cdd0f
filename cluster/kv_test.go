package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/warmpool/warmpool/actors"
	"github.com/warmpool/warmpool/driver"
	"github.com/warmpool/warmpool/messages"
)

// kvServer starts a real JetStream server on dir and stops it when the test
// ends.
func kvServer(tb testing.TB, dir string, syncAlways bool) *server.Server {
	tb.Helper()
	srv, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir,
		NoLog: true, NoSigs: true, SyncAlways: syncAlways,
	})
	if err != nil {
		tb.Fatalf("nats-server: %v", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		tb.Fatal("nats-server did not start")
	}
	tb.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	return srv
}

// kvConnect opens a connection of its own: a second call is a second writer.
func kvConnect(tb testing.TB, srv *server.Server) jetstream.JetStream {
	tb.Helper()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		tb.Fatalf("connect: %v", err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatalf("jetstream: %v", err)
	}
	return js
}

func kvCtx(tb testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	tb.Cleanup(cancel)
	return c
}

// kvStores starts a server and opens the stores on it with the defaults.
func kvStores(t *testing.T) (*server.Server, *LeaseKV, *SnapshotKV) {
	t.Helper()
	srv := kvServer(t, t.TempDir(), true)
	leases, snaps, err := OpenStores(kvCtx(t), kvConnect(t, srv), StoreOptions{})
	if err != nil {
		t.Fatalf("OpenStores: %v", err)
	}
	return srv, leases, snaps
}

var kvNow = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func lease(pool, id string) actors.LeaseRecord {
	return actors.LeaseRecord{
		Pool: pool, ID: id, Slot: "slot-1", Node: "node-1", Endpoint: "http://127.0.0.1:1",
		CreatedAt: kvNow, ExpiresAt: kvNow.Add(5 * time.Minute),
	}
}

func mustList(t *testing.T, s *LeaseKV, pool string) []actors.StoredLease {
	t.Helper()
	got, err := s.List(kvCtx(t), pool)
	if err != nil {
		t.Fatalf("List(%s): %v", pool, err)
	}
	return got
}

func ids(ls []actors.StoredLease) []string {
	out := []string{}
	for _, l := range ls {
		out = append(out, l.Record.ID)
	}
	return out
}

func TestLeaseKVCreateTwiceIsExists(t *testing.T) {
	_, s, _ := kvStores(t)
	ctx := kvCtx(t)
	rev, err := s.Create(ctx, lease("web", "alice"))
	if err != nil || rev == 0 {
		t.Fatalf("Create: rev %d, %v", rev, err)
	}
	other := lease("web", "alice")
	other.Slot = "slot-2"
	if _, err := s.Create(ctx, other); !errors.Is(err, actors.ErrLeaseExists) {
		t.Fatalf("second Create: %v, want ErrLeaseExists", err)
	} else if !strings.Contains(err.Error(), "web.YWxpY2U") {
		t.Errorf("error %q does not name the key", err)
	}
	got := mustList(t, s, "web")
	if len(got) != 1 || got[0].Revision != rev || got[0].Record.Slot != "slot-1" {
		t.Fatalf("after a lost Create: %+v", got)
	}
	if got[0].Record.Version != actors.LeaseSchema {
		t.Errorf("Version %d, want %d", got[0].Record.Version, actors.LeaseSchema)
	}
}

// Racing Creates of one id: one wins, the others get ErrLeaseExists. The
// second round races on a deleted key, which Create takes another path for.
func TestLeaseKVConcurrentCreatesOneWins(t *testing.T) {
	_, s, _ := kvStores(t)
	ctx := kvCtx(t)
	const n = 16
	for round := range 2 {
		var wg sync.WaitGroup
		revs := make([]uint64, n)
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				r := lease("web", "contended")
				r.Slot = fmt.Sprintf("slot-%d", i)
				revs[i], errs[i] = s.Create(ctx, r)
			})
		}
		wg.Wait()
		won := -1
		for i, err := range errs {
			switch {
			case err == nil && won >= 0:
				t.Fatalf("round %d: Creates %d and %d both won", round, won, i)
			case err == nil:
				won = i
			case !errors.Is(err, actors.ErrLeaseExists):
				t.Errorf("round %d: Create: %v, want nil or ErrLeaseExists", round, err)
			}
		}
		if won < 0 {
			t.Fatalf("round %d: no Create won", round)
		}
		got := mustList(t, s, "web")
		if len(got) != 1 || got[0].Revision != revs[won] || got[0].Record.Slot != fmt.Sprintf("slot-%d", won) {
			t.Fatalf("round %d: stored %+v, want the winner's, slot-%d", round, got, won)
		}
		if err := s.Delete(ctx, "web", "contended", revs[won]); err != nil {
			t.Fatal(err)
		}
	}
}

func TestLeaseKVUpdateWithCurrentRevision(t *testing.T) {
	_, s, _ := kvStores(t)
	ctx := kvCtx(t)
	r := lease("web", "alice")
	rev1, err := s.Create(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	r.ExpiresAt = r.ExpiresAt.Add(time.Minute)
	rev2, err := s.Update(ctx, r, rev1)
	if err != nil {
		t.Fatalf("Update at the current revision: %v", err)
	}
	if rev2 <= rev1 {
		t.Fatalf("Update returned revision %d, not above %d", rev2, rev1)
	}
	got := mustList(t, s, "web")
	if len(got) != 1 || got[0].Revision != rev2 || !got[0].Record.ExpiresAt.Equal(r.ExpiresAt) {
		t.Fatalf("after Update: %+v", got)
	}
}

func TestLeaseKVStaleWriterLoses(t *testing.T) {
	srv, a, _ := kvStores(t)
	ctx := kvCtx(t)
	// b is another node's handle on the same bucket.
	b, _, err := OpenStores(ctx, kvConnect(t, srv), StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r := lease("web", "alice")
	rev1, err := a.Create(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	r.Node = "node-a"
	rev2, err := a.Update(ctx, r, rev1)
	if err != nil {
		t.Fatal(err)
	}
	want := mustList(t, a, "web")

	stale := r
	stale.Node = "node-b"
	for _, rev := range []uint64{rev1, 0, rev2 + 1000} {
		if _, err := b.Update(ctx, stale, rev); !errors.Is(err, actors.ErrRevisionMismatch) {
			t.Errorf("stale Update at %d: %v, want ErrRevisionMismatch", rev, err)
		} else if !strings.Contains(err.Error(), "web.YWxpY2U") || !strings.Contains(err.Error(), DefaultLeaseBucket) {
			t.Errorf("error %q does not name the key and bucket", err)
		}
		if err := b.Delete(ctx, "web", "alice", rev); !errors.Is(err, actors.ErrRevisionMismatch) {
			t.Errorf("stale Delete at %d: %v, want ErrRevisionMismatch", rev, err)
		}
	}
	if got := mustList(t, b, "web"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("a stale writer changed the lease:\n got %+v\nwant %+v", got, want)
	}
	// The holder still can.
	if _, err := a.Update(ctx, r, rev2); err != nil {
		t.Fatalf("holder's Update after the stale writes: %v", err)
	}
}

func TestLeaseKVDeleteThenCreate(t *testing.T) {
	_, s, _ := kvStores(t)
	ctx := kvCtx(t)
	r := lease("web", "alice")
	rev1, err := s.Create(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "web", "alice", rev1); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if got := mustList(t, s, "web"); len(got) != 0 {
		t.Fatalf("after Delete: %+v", got)
	}
	// The deleted lease's holder cannot bring it back.
	if _, err := s.Update(ctx, r, rev1); !errors.Is(err, actors.ErrRevisionMismatch) {
		t.Fatalf("Update of a deleted lease: %v, want ErrRevisionMismatch", err)
	}
	if err := s.Delete(ctx, "web", "alice", rev1); !errors.Is(err, actors.ErrRevisionMismatch) {
		t.Fatalf("second Delete: %v, want ErrRevisionMismatch", err)
	}
	rev2, err := s.Create(ctx, r)
	if err != nil {
		t.Fatalf("Create after Delete: %v", err)
	}
	if rev2 <= rev1 {
		t.Fatalf("re-created at revision %d, not above %d", rev2, rev1)
	}
	if _, err := s.Create(ctx, r); !errors.Is(err, actors.ErrLeaseExists) {
		t.Fatalf("Create of the re-created lease: %v, want ErrLeaseExists", err)
	}
	if got := mustList(t, s, "web"); len(got) != 1 || got[0].Revision != rev2 {
		t.Fatalf("after re-Create: %+v", got)
	}
}

func TestLeaseKVIDsRoundTrip(t *testing.T) {
	_, s, _ := kvStores(t)
	ctx := kvCtx(t)
	in := []string{
		"alice", "with space", "a/b/c", "a.b.c", ".", "..", "*", ">", "a.*", "a.>", "-", "_", "=",
		"user@example.com/☃ x", "日本語のセッション", "tab\there", "nul\x00byte", "\U0001F600",
		strings.Repeat("x", messages.MaxIDLength),
		strings.Repeat("é", messages.MaxIDLength/2), // 256 bytes
		"~!@#$%^&()+{}[]|\\:;\"'<>,?",
	}
	want := map[string]uint64{}
	for _, id := range in {
		rev, err := s.Create(ctx, lease("web", id))
		if err != nil {
			t.Fatalf("Create(%q): %v", id, err)
		}
		want[id] = rev
	}
	got := mustList(t, s, "web")
	if len(got) != len(in) {
		t.Fatalf("List: %d leases, want %d: %q", len(got), len(in), ids(got))
	}
	for i, l := range got {
		if i > 0 && got[i-1].Record.ID >= l.Record.ID {
			t.Errorf("List not sorted by id: %q before %q", got[i-1].Record.ID, l.Record.ID)
		}
		if want[l.Record.ID] != l.Revision {
			t.Errorf("id %q: revision %d, want %d", l.Record.ID, l.Revision, want[l.Record.ID])
		}
	}
	// Each one is addressable by its id.
	for _, l := range got {
		if err := s.Delete(ctx, "web", l.Record.ID, l.Revision); err != nil {
			t.Errorf("Delete(%q): %v", l.Record.ID, err)
		}
	}
	if got := mustList(t, s, "web"); len(got) != 0 {
		t.Fatalf("after deleting all: %q", ids(got))
	}
}

func TestLeaseKVRefusesBadInput(t *testing.T) {
	_, s, _ := kvStores(t)
	ctx := kvCtx(t)
	for _, c := range []struct {
		pool, id string
		want     error
	}{
		{"web", "", messages.ErrInvalidID},
		{"web", strings.Repeat("x", messages.MaxIDLength+1), messages.ErrInvalidID},
		{"web", "\xff\xfe", messages.ErrInvalidID},
		{"", "alice", ErrInvalidKey},
		{"we.b", "alice", ErrInvalidKey},
		{"web.>", "alice", ErrInvalidKey},
		{"*", "alice", ErrInvalidKey},
		{"web pool", "alice", ErrInvalidKey},
		{strings.Repeat("p", messages.MaxPoolNameLength+1), "alice", ErrInvalidKey},
	} {
		if _, err := s.Create(ctx, lease(c.pool, c.id)); !errors.Is(err, c.want) {
			t.Errorf("Create(%q, %q): %v, want %v", c.pool, c.id, err, c.want)
		}
		if _, err := s.Update(ctx, lease(c.pool, c.id), 1); !errors.Is(err, c.want) {
			t.Errorf("Update(%q, %q): %v, want %v", c.pool, c.id, err, c.want)
		}
		if err := s.Delete(ctx, c.pool, c.id, 1); !errors.Is(err, c.want) {
			t.Errorf("Delete(%q, %q): %v, want %v", c.pool, c.id, err, c.want)
		}
	}
	for _, pool := range []string{"", "a.b", ">", "*"} {
		if _, err := s.List(ctx, pool); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("List(%q): %v, want ErrInvalidKey", pool, err)
		}
	}
}

func TestLeaseKVListIsolatesPools(t *testing.T) {
	_, s, _ := kvStores(t)
	ctx := kvCtx(t)
	pools := []string{"web", "web2", "we", "web-2", "web_2", "WEB"}
	for _, p := range pools {
		for _, id := range []string{"shared", "only-" + p} {
			if _, err := s.Create(ctx, lease(p, id)); err != nil {
				t.Fatalf("Create(%s, %s): %v", p, id, err)
			}
		}
	}
	for _, p := range pools {
		got := mustList(t, s, p)
		if want := fmt.Sprint([]string{"only-" + p, "shared"}); fmt.Sprint(ids(got)) != want {
			t.Errorf("List(%s) = %q, want %s", p, ids(got), want)
		}
		for _, l := range got {
			if l.Record.Pool != p {
				t.Errorf("List(%s) returned a lease of pool %s", p, l.Record.Pool)
			}
		}
	}
	if got := mustList(t, s, "other"); len(got) != 0 {
		t.Errorf("List(other) = %q", ids(got))
	}
}

func TestKVListEmptyIsQuick(t *testing.T) {
	_, leases, snaps := kvStores(t)
	ctx := kvCtx(t)
	check := func(what string, f func() (int, error)) {
		t.Helper()
		start := time.Now()
		n, err := f()
		if err != nil || n != 0 {
			t.Errorf("%s: %d entries, %v", what, n, err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("%s took %v", what, d)
		}
	}
	leaseList := func(pool string) func() (int, error) {
		return func() (int, error) { l, err := leases.List(ctx, pool); return len(l), err }
	}
	snapList := func() (int, error) { l, err := snaps.List(ctx, "web", "node-1"); return len(l), err }
	check("List of an empty lease bucket", leaseList("web"))
	check("List of an empty snapshot bucket", snapList)

	// Only delete markers left: they count toward the initial values but are
	// not returned.
	for i := range 3 {
		id := fmt.Sprint("gone-", i)
		rev, err := leases.Create(ctx, lease("web", id))
		if err != nil {
			t.Fatal(err)
		}
		if err := leases.Delete(ctx, "web", id, rev); err != nil {
			t.Fatal(err)
		}
		s := snapshot("web", "node-1", id, "warm")
		if err := snaps.Put(ctx, s); err != nil {
			t.Fatal(err)
		}
		s.State = actors.Gone.String()
		if err := snaps.Put(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	check("List of a pool whose leases were all deleted", leaseList("web"))
	check("List of a node whose slots are all gone", snapList)
	// Another pool's leases are there, this one has none.
	if _, err := leases.Create(ctx, lease("web2", "x")); err != nil {
		t.Fatal(err)
	}
	check("List of a pool with no leases", leaseList("api"))
}

func snapshot(pool, node, slot, state string) actors.SlotSnapshot {
	return actors.SlotSnapshot{
		Pool: pool, Node: node, Slot: slot, State: state,
		Handle: driver.Handle{ID: "123", Endpoint: "http://127.0.0.1:1", PID: 123, Port: 1, StartedAt: kvNow},
		Since:  kvNow, UpdatedAt: kvNow,
	}
}

func TestSnapshotKVPutListGone(t *testing.T) {
	_, _, s := kvStores(t)
	ctx := kvCtx(t)
	slots := []string{"c0ffee-3", "a1", "b_2", "B-1"}
	for _, slot := range slots {
		if err := s.Put(ctx, snapshot("web", "node-1", slot, "warming")); err != nil {
			t.Fatalf("Put(%s): %v", slot, err)
		}
	}
	// Neighbours that List(web, node-1) must not return.
	for _, n := range [][2]string{{"web", "node-10"}, {"web", "node"}, {"web2", "node-1"}, {"we", "node-1"}} {
		if err := s.Put(ctx, snapshot(n[0], n[1], "a1", "warm")); err != nil {
			t.Fatalf("Put(%v): %v", n, err)
		}
	}
	acquired := snapshot("web", "node-1", "a1", "acquired")
	acquired.Session = "alice"
	if err := s.Put(ctx, acquired); err != nil {
		t.Fatal(err)
	}
	got, err := s.List(ctx, "web", "node-1")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, g := range got {
		names = append(names, g.Slot)
		if g.Pool != "web" || g.Node != "node-1" || g.Version != actors.SnapshotSchema {
			t.Errorf("snapshot %+v", g)
		}
	}
	if fmt.Sprint(names) != "[B-1 a1 b_2 c0ffee-3]" {
		t.Fatalf("List slots %v", names)
	}
	want := acquired
	want.Version = actors.SnapshotSchema
	if got[1].State != "acquired" || got[1].Session != "alice" || !got[1].Handle.StartedAt.Equal(kvNow) ||
		fmt.Sprint(got[1].Handle) != fmt.Sprint(want.Handle) {
		t.Errorf("a1 = %+v, want %+v", got[1], want)
	}

	// Gone deletes; gone again, or gone for a slot never written, is fine.
	for range 2 {
		for _, slot := range []string{"a1", "never-written"} {
			if err := s.Put(ctx, snapshot("web", "node-1", slot, actors.Gone.String())); err != nil {
				t.Fatalf("Put(%s, gone): %v", slot, err)
			}
		}
	}
	got, err = s.List(ctx, "web", "node-1")
	if err != nil {
		t.Fatal(err)
	}
	names = nil
	for _, g := range got {
		names = append(names, g.Slot)
	}
	if fmt.Sprint(names) != "[B-1 b_2 c0ffee-3]" {
		t.Fatalf("after gone: %v", names)
	}
	if other, err := s.List(ctx, "web", "node-10"); err != nil || len(other) != 1 || other[0].Slot != "a1" {
		t.Fatalf("List(web, node-10) = %+v, %v", other, err)
	}
}

func TestSnapshotKVRefusesBadNames(t *testing.T) {
	_, _, s := kvStores(t)
	ctx := kvCtx(t)
	for _, c := range [][3]string{
		{"web", "node-1", ""}, {"web", "node-1", "a.b"}, {"web", "node-1", "*"}, {"web", "node-1", ">"},
		{"web", "node-1", "a b"}, {"web", "node-1", "é"}, {"web", "node-1", strings.Repeat("s", maxNameLength+1)},
		{"web", "", "a"}, {"web", "n.1", "a"}, {"web", "n>", "a"}, {"", "node-1", "a"}, {"w/b", "node-1", "a"},
	} {
		for _, state := range []string{"warm", actors.Gone.String()} {
			if err := s.Put(ctx, snapshot(c[0], c[1], c[2], state)); !errors.Is(err, ErrInvalidKey) {
				t.Errorf("Put(%q, %s): %v, want ErrInvalidKey", c, state, err)
			}
		}
		if c[2] == "a" {
			if _, err := s.List(ctx, c[0], c[1]); !errors.Is(err, ErrInvalidKey) {
				t.Errorf("List(%q, %q): %v, want ErrInvalidKey", c[0], c[1], err)
			}
		}
	}
	if got, err := s.List(ctx, "web", "node-1"); err != nil || len(got) != 0 {
		t.Fatalf("a refused Put wrote something: %+v, %v", got, err)
	}
}

func TestKVRefusesNewerSchema(t *testing.T) {
	_, leases, snaps := kvStores(t)
	ctx := kvCtx(t)
	if _, err := leases.Create(ctx, lease("web", "alice")); err != nil {
		t.Fatal(err)
	}
	if err := snaps.Put(ctx, snapshot("web", "node-1", "a1", "warm")); err != nil {
		t.Fatal(err)
	}
	// What a later build might write: another version, other fields.
	future := func(v any) []byte {
		b, _ := json.Marshal(v)
		return b
	}
	bobKey, _ := leaseKey("web", "bob")
	if _, err := leases.kv.Put(ctx, bobKey, future(map[string]any{
		"version": actors.LeaseSchema + 1, "pool": "web", "id": "bob", "holder": map[string]string{"node": "n"},
	})); err != nil {
		t.Fatal(err)
	}
	if _, err := snaps.kv.Put(ctx, "web.node-1.b2", future(map[string]any{
		"version": actors.SnapshotSchema + 1, "pool": "web", "node": "node-1", "slot": "b2",
	})); err != nil {
		t.Fatal(err)
	}
	// And what no build writes.
	carolKey, _ := leaseKey("web", "carol")
	if _, err := leases.kv.Put(ctx, carolKey, []byte("not json")); err != nil {
		t.Fatal(err)
	}
	daveKey, _ := leaseKey("web", "dave")
	if _, err := leases.kv.Put(ctx, daveKey, future(lease("web", "mallory"))); err != nil {
		t.Fatal(err)
	}

	got, err := leases.List(ctx, "web")
	if !errors.Is(err, ErrNewerSchema) || !strings.Contains(err.Error(), bobKey) {
		t.Errorf("List: %v, want ErrNewerSchema naming %s", err, bobKey)
	}
	if !errors.Is(err, ErrBadRecord) || !strings.Contains(err.Error(), carolKey) || !strings.Contains(err.Error(), daveKey) {
		t.Errorf("List: %v, want ErrBadRecord naming %s and %s", err, carolKey, daveKey)
	}
	if fmt.Sprint(ids(got)) != "[alice]" {
		t.Errorf("List returned %q, want the readable lease alone", ids(got))
	}

	snapList, err := snaps.List(ctx, "web", "node-1")
	if !errors.Is(err, ErrNewerSchema) || !strings.Contains(err.Error(), "web.node-1.b2") {
		t.Errorf("snapshot List: %v, want ErrNewerSchema naming web.node-1.b2", err)
	}
	if len(snapList) != 1 || snapList[0].Slot != "a1" {
		t.Errorf("snapshot List returned %+v, want a1 alone", snapList)
	}
}

func TestKVSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := kvCtx(t)
	srv := kvServer(t, dir, true)
	leases, snaps, err := OpenStores(ctx, kvConnect(t, srv), StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rev, err := leases.Create(ctx, lease("web", "alice"))
	if err != nil {
		t.Fatal(err)
	}
	if err := snaps.Put(ctx, snapshot("web", "node-1", "a1", "acquired")); err != nil {
		t.Fatal(err)
	}
	srv.Shutdown()
	srv.WaitForShutdown()

	srv = kvServer(t, dir, true)
	leases, snaps, err = OpenStores(ctx, kvConnect(t, srv), StoreOptions{})
	if err != nil {
		t.Fatalf("OpenStores after the restart: %v", err)
	}
	got := mustList(t, leases, "web")
	if len(got) != 1 || got[0].Record.ID != "alice" || got[0].Revision != rev || !got[0].Record.ExpiresAt.Equal(kvNow.Add(5*time.Minute)) {
		t.Fatalf("leases after the restart: %+v", got)
	}
	sn, err := snaps.List(ctx, "web", "node-1")
	if err != nil || len(sn) != 1 || sn[0].State != "acquired" {
		t.Fatalf("snapshots after the restart: %+v, %v", sn, err)
	}
	// The revision still fences.
	if _, err := leases.Update(ctx, got[0].Record, rev); err != nil {
		t.Fatalf("Update at the revision from before the restart: %v", err)
	}
	if _, err := leases.Create(ctx, lease("web", "alice")); !errors.Is(err, actors.ErrLeaseExists) {
		t.Fatalf("Create after the restart: %v, want ErrLeaseExists", err)
	}
}

func TestOpenStoresOptions(t *testing.T) {
	srv := kvServer(t, t.TempDir(), true)
	js := kvConnect(t, srv)
	ctx := kvCtx(t)
	for _, o := range []StoreOptions{
		{Replicas: -1}, {Replicas: 6}, {LeaseBucket: "x", SnapshotBucket: "x"},
		{LeaseBucket: DefaultSnapshotBucket}, {LeaseBucket: "bad.name"}, {SnapshotBucket: "bad name"},
	} {
		if _, _, err := OpenStores(ctx, js, o); err == nil {
			t.Errorf("OpenStores(%+v) succeeded", o)
		}
	}
	for range 2 { // opening again is fine
		leases, snaps, err := OpenStores(ctx, js, StoreOptions{})
		if err != nil {
			t.Fatalf("OpenStores: %v", err)
		}
		for _, kv := range []jetstream.KeyValue{leases.kv, snaps.kv} {
			st, err := kv.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			cfg := st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config
			if cfg.MaxMsgsPerSubject != 1 || cfg.Storage != jetstream.FileStorage || cfg.Replicas != 1 ||
				cfg.Description == "" || cfg.AllowMsgTTL {
				t.Errorf("bucket %s: %+v", kv.Bucket(), cfg)
			}
		}
		if leases.kv.Bucket() != DefaultLeaseBucket || snaps.kv.Bucket() != DefaultSnapshotBucket {
			t.Errorf("buckets %s, %s", leases.kv.Bucket(), snaps.kv.Bucket())
		}
	}
	leases, snaps, err := OpenStores(ctx, js, StoreOptions{LeaseBucket: "l2", SnapshotBucket: "s2"})
	if err != nil || leases.kv.Bucket() != "l2" || snaps.kv.Bucket() != "s2" {
		t.Fatalf("OpenStores with names: %v", err)
	}
}

func TestLeaseKVContextEndsList(t *testing.T) {
	_, s, _ := kvStores(t)
	ctx, cancel := context.WithCancel(kvCtx(t))
	cancel()
	if _, err := s.List(ctx, "web"); err == nil {
		t.Fatal("List with an ended context succeeded")
	}
	if _, err := s.Create(ctx, lease("web", "alice")); err == nil {
		t.Fatal("Create with an ended context succeeded")
	}
}

// BenchmarkLeaseCreateDelete measures the acquire/release pair of durable
// writes (Create, then Delete at its revision) from one writer and from 64,
// with every write fsynced and with JetStream's default sync interval.
func BenchmarkLeaseCreateDelete(b *testing.B) {
	for _, syncAlways := range []bool{true, false} {
		for _, writers := range []int{1, 64} {
			b.Run(fmt.Sprintf("sync_always=%t/writers=%d", syncAlways, writers), func(b *testing.B) {
				srv := kvServer(b, b.TempDir(), syncAlways)
				leases, _, err := OpenStores(kvCtx(b), kvConnect(b, srv), StoreOptions{})
				if err != nil {
					b.Fatal(err)
				}
				ctx := kvCtx(b)
				var next atomic.Int64
				var wg sync.WaitGroup
				b.ResetTimer()
				for w := range writers {
					wg.Go(func() {
						for {
							i := next.Add(1) - 1
							if i >= int64(b.N) {
								return
							}
							id := fmt.Sprintf("w%d-%d", w, i)
							rev, err := leases.Create(ctx, lease("bench", id))
							if err != nil {
								b.Error(err)
								return
							}
							if err := leases.Delete(ctx, "bench", id, rev); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
				b.StopTimer()
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pairs/s")
			})
		}
	}
}
