package cluster_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/warmpool/warmpool/actors"
	"github.com/warmpool/warmpool/client"
	"github.com/warmpool/warmpool/cluster"
	"github.com/warmpool/warmpool/messages"
	"github.com/warmpool/warmpool/testkit"
)

// sessionLife is what a session that acquires a warm container and
// releases it leaves in the stream.
var sessionLife = []string{messages.EventSlotAcquired, messages.EventLeaseCreated, messages.EventLeaseReleased, messages.EventSlotReleased}

func jsOf(t *testing.T, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// eventServer starts a bare JetStream server, with the event stream, and
// a connection to it.
func eventServer(t *testing.T) (*server.Server, jetstream.JetStream) {
	t.Helper()
	srv, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		t.Fatal("nats-server did not start")
	}
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js := jsOf(t, nc)
	if _, err := cluster.OpenEventStream(ctx(t), js, cluster.EventStreamOptions{}); err != nil {
		t.Fatal(err)
	}
	return srv, js
}

func readEvents(t *testing.T, js jetstream.JetStream, q cluster.EventQuery) ([]messages.Event, error) {
	t.Helper()
	var events []messages.Event
	err := cluster.ReadEvents(ctx(t), js, q, func(e messages.Event) error {
		events = append(events, e)
		return nil
	})
	return events, err
}

func kinds(events []messages.Event) []string {
	var k []string
	for _, e := range events {
		k = append(k, e.Kind)
	}
	return k
}

// waitKinds reads q until its events are of the kinds want, in order: a
// batch reaches the stream up to its delay after its events.
func waitKinds(t *testing.T, js jetstream.JetStream, q cluster.EventQuery, want []string) []messages.Event {
	t.Helper()
	var events []messages.Event
	testkit.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		var err error
		if events, err = readEvents(t, js, q); err != nil {
			return err
		}
		if !slices.Equal(kinds(events), want) {
			return fmt.Errorf("%+v: kinds %v, want %v", q, kinds(events), want)
		}
		return nil
	})
	return events
}

func TestEventsTellASessionsLife(t *testing.T) {
	node, nc := testkit.StartNode(t, testkit.DemoPool("web", 0))
	js := jsOf(t, nc)
	p := client.New(nc).Pool("web")
	waitStats(t, p, warmIs(1))
	l, err := p.GetContainer(ctx(t), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.ReleaseContainer(ctx(t), "alice"); err != nil {
		t.Fatal(err)
	}
	events := waitKinds(t, js, cluster.EventQuery{Session: "alice"}, sessionLife)
	for i, e := range events {
		if e.Type != messages.TypeEvent || e.Pool != "web" || e.Node != node.ID() || e.Slot != l.Slot || e.Time.IsZero() {
			t.Errorf("event %d: %+v; want pool web, node %s, slot %s", i, e, node.ID(), l.Slot)
		}
		if i > 0 && e.Seq <= events[i-1].Seq {
			t.Errorf("event %d: seq %d after %d", i, e.Seq, events[i-1].Seq)
		}
	}
	// The slot's own story, from its start, holds the session's life.
	all, err := readEvents(t, js, cluster.EventQuery{Slot: l.Slot})
	if err != nil {
		t.Fatal(err)
	}
	if k := kinds(all); len(k) < 6 || !slices.Equal(k[:6], append([]string{messages.EventSlotWarming, messages.EventSlotWarm}, sessionLife...)) {
		t.Errorf("slot %s: %v", l.Slot, k)
	}
	for _, e := range all {
		if e.Slot != l.Slot {
			t.Errorf("slot filter let through %+v", e)
		}
	}
}

func TestEventsSince(t *testing.T) {
	_, nc := testkit.StartNode(t, testkit.DemoPool("web", 0))
	js := jsOf(t, nc)
	p := client.New(nc).Pool("web")
	waitStats(t, p, warmIs(1))
	life := func(id string) {
		if _, err := p.GetContainer(ctx(t), id); err != nil {
			t.Fatal(err)
		}
		if _, err := p.ReleaseContainer(ctx(t), id); err != nil {
			t.Fatal(err)
		}
		waitKinds(t, js, cluster.EventQuery{Session: id}, sessionLife)
	}
	life("alice")
	// alice's last batch may be stored after mid: the query starts earlier
	// in the stream and filters on the events' own time.
	mid := time.Now()
	life("bob")

	events, err := readEvents(t, js, cluster.EventQuery{Since: mid})
	if err != nil {
		t.Fatal(err)
	}
	var bob []string
	for _, e := range events {
		if e.Time.Before(mid) || e.Session == "alice" {
			t.Errorf("since %s: %+v", mid.Format(time.RFC3339Nano), e)
		}
		if e.Session == "bob" {
			bob = append(bob, e.Kind)
		}
	}
	if want := sessionLife[:3]; !slices.Equal(bob, want) {
		t.Errorf("bob's events since %s: %v, want %v", mid, bob, want)
	}
	waitKinds(t, js, cluster.EventQuery{Session: "bob", Since: mid}, sessionLife)
	waitKinds(t, js, cluster.EventQuery{Session: "alice", Since: mid}, nil)

	start := time.Now()
	if events, err := readEvents(t, js, cluster.EventQuery{Since: time.Now().Add(time.Hour)}); err != nil || len(events) != 0 {
		t.Errorf("since an hour ahead: %v, %v; want nothing", kinds(events), err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("reading nothing took %s", d)
	}
}

func TestEventsPoolFilter(t *testing.T) {
	_, nc := testkit.StartNode(t, testkit.DemoPool("web", 0), testkit.DemoPool("api", 0))
	js := jsOf(t, nc)
	api := client.New(nc).Pool("api")
	waitStats(t, api, warmIs(1))
	waitStats(t, client.New(nc).Pool("web"), warmIs(1))
	if _, err := api.GetContainer(ctx(t), "dave"); err != nil {
		t.Fatal(err)
	}
	waitKinds(t, js, cluster.EventQuery{Pool: "api", Session: "dave"}, sessionLife[:2])
	waitKinds(t, js, cluster.EventQuery{Pool: "web", Session: "dave"}, nil)

	for _, pool := range []string{"api", "web"} {
		events, err := readEvents(t, js, cluster.EventQuery{Pool: pool})
		if err != nil {
			t.Fatal(err)
		}
		if len(events) == 0 {
			t.Errorf("pool %s: no events", pool)
		}
		for _, e := range events {
			if e.Pool != pool {
				t.Errorf("pool %s: %+v", pool, e)
			}
		}
	}
	if events, err := readEvents(t, js, cluster.EventQuery{Pool: "nosuch"}); err != nil || len(events) != 0 {
		t.Errorf("a pool without events: %v, %v", kinds(events), err)
	}
	if err := cluster.ReadEvents(ctx(t), js, cluster.EventQuery{Pool: "a.>"}, func(messages.Event) error { return nil }); !errors.Is(err, messages.ErrBadRequest) {
		t.Errorf("pool a.>: %v; want ErrBadRequest", err)
	}
}

func TestEventsFollow(t *testing.T) {
	_, nc := testkit.StartNode(t, testkit.DemoPool("web", 0))
	js := jsOf(t, nc)
	p := client.New(nc).Pool("web")
	waitStats(t, p, warmIs(1))

	fctx, cancel := context.WithCancel(ctx(t))
	defer cancel()
	got := make(chan messages.Event, 1000)
	done := make(chan error, 1)
	go func() {
		done <- cluster.ReadEvents(fctx, js, cluster.EventQuery{Pool: "web", Follow: true}, func(e messages.Event) error {
			got <- e
			return nil
		})
	}()
	wait := func(what string, f func(messages.Event) bool) {
		t.Helper()
		timeout := time.After(20 * time.Second)
		for {
			select {
			case e := <-got:
				if f(e) {
					return
				}
			case err := <-done:
				t.Fatalf("ReadEvents returned while following: %v", err)
			case <-timeout:
				t.Fatalf("no %s after 20s", what)
			}
		}
	}
	// Caught up with the start of the pool: what follows is live.
	wait("slot.warm", func(e messages.Event) bool { return e.Kind == messages.EventSlotWarm })
	if _, err := p.GetContainer(ctx(t), "carol"); err != nil {
		t.Fatal(err)
	}
	wait("carol's lease", func(e messages.Event) bool { return e.Kind == messages.EventLeaseCreated && e.Session == "carol" })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ReadEvents after its ctx ended: %v; want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ReadEvents still following 10s after its ctx ended")
	}
}

func TestEventStreamLimits(t *testing.T) {
	check := func(t *testing.T, js jetstream.JetStream, maxAge time.Duration, maxBytes int64) {
		t.Helper()
		s, err := js.Stream(ctx(t), cluster.EventStreamName)
		if err != nil {
			t.Fatal(err)
		}
		c := s.CachedInfo().Config
		if !slices.Equal(c.Subjects, []string{"warmpool.events.>"}) || c.Storage != jetstream.FileStorage ||
			c.Retention != jetstream.LimitsPolicy || c.Discard != jetstream.DiscardOld || c.Replicas != 1 ||
			c.MaxAge != maxAge || c.MaxBytes != maxBytes {
			t.Errorf("stream config: subjects %v storage %v retention %v discard %v replicas %d max age %s max bytes %d; want max age %s, max bytes %d",
				c.Subjects, c.Storage, c.Retention, c.Discard, c.Replicas, c.MaxAge, c.MaxBytes, maxAge, maxBytes)
		}
	}
	t.Run("defaults", func(t *testing.T) {
		web := testkit.DemoPool("web", 0)
		web.WarmTarget = 0
		_, nc := testkit.StartNode(t, web)
		check(t, jsOf(t, nc), 24*time.Hour, cluster.DefaultEventsMaxBytes)
	})
	t.Run("node options", func(t *testing.T) {
		web := testkit.DemoPool("web", 0)
		web.WarmTarget = 0
		node, err := cluster.Start(ctx(t), cluster.Options{
			NodeID: "test-" + uuid.NewString()[:8], DataDir: t.TempDir(), NATSListen: "127.0.0.1:-1",
			Pools: []messages.PoolConfig{web}, Logger: testkit.Logger(t), OnExit: actors.ExitStop,
			EventsMaxAge: 2 * time.Hour, EventsMaxBytes: 64 << 20,
		})
		if err != nil {
			t.Fatal(err)
		}
		defer node.Shutdown(context.Background())
		nc, err := nats.Connect(node.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		check(t, jsOf(t, nc), 2*time.Hour, 64<<20)
	})
	t.Run("invalid", func(t *testing.T) {
		for _, o := range []cluster.EventStreamOptions{
			{MaxAge: -time.Hour}, {MaxAge: time.Millisecond}, {MaxBytes: -2}, {MaxBytes: 1000}, {Replicas: 6}, {Replicas: -1},
		} {
			// Nothing is asked of JetStream before the options are checked.
			if _, err := cluster.OpenEventStream(ctx(t), nil, o); !errors.Is(err, messages.ErrConfigValidation) {
				t.Errorf("%+v: %v; want ErrConfigValidation", o, err)
			}
		}
		for _, o := range []cluster.EventPublisherOptions{{QueueSize: -1}, {BatchSize: -1}, {BatchDelay: -time.Second}} {
			if _, err := cluster.NewEventPublisher(nil, o); !errors.Is(err, messages.ErrConfigValidation) {
				t.Errorf("%+v: %v; want ErrConfigValidation", o, err)
			}
		}
	})
}

func TestEventPublisherBatches(t *testing.T) {
	_, js := eventServer(t)
	pub, err := cluster.NewEventPublisher(js, cluster.EventPublisherOptions{Logger: testkit.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	const n = 4000 // three of four for pool a
	seqs := map[string]uint64{}
	for i := range n {
		pool := "a"
		if i%4 == 3 {
			pool = "b"
		}
		seqs[pool]++
		pub.Emit(messages.Event{Type: messages.TypeEvent, Seq: seqs[pool], Time: time.Now(), Kind: messages.EventRefresh, Pool: pool, Node: "n1"})
	}
	if err := pub.Close(ctx(t)); err != nil {
		t.Fatal(err)
	}
	st := pub.Stats()
	s, err := js.Stream(ctx(t), cluster.EventStreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	// 3000 and 1000 events fill 6 and 2 batches of 512; a few more when the
	// 50ms delay cut one short.
	if st.Published != n || st.Dropped != 0 || st.Failed != 0 || st.Messages != info.State.Msgs || info.State.Msgs < 8 || info.State.Msgs > n/50 {
		t.Fatalf("stats %+v, %d stream messages; want %d events in far fewer messages", st, info.State.Msgs, n)
	}
	t.Logf("%d events in %d stream messages", n, info.State.Msgs)
	for pool, want := range seqs {
		events, err := readEvents(t, js, cluster.EventQuery{Pool: pool})
		if err != nil {
			t.Fatal(err)
		}
		if uint64(len(events)) != want {
			t.Fatalf("pool %s: %d events, want %d", pool, len(events), want)
		}
		for i, e := range events {
			if e.Seq != uint64(i+1) || e.Pool != pool {
				t.Fatalf("pool %s: event %d is %+v", pool, i, e)
			}
		}
	}
}

// TestEventPublisherFlushes: a batch goes out when its delay ends, or as
// soon as a batch's worth of events is queued, without waiting for Close.
func TestEventPublisherFlushes(t *testing.T) {
	_, js := eventServer(t)
	published := func(pub *cluster.EventPublisher, want uint64) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); pub.Stats().Published < want; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("published %+v, want %d events", pub.Stats(), want)
			}
		}
	}
	emit := func(pub *cluster.EventPublisher, n int) {
		for i := range n {
			pub.Emit(messages.Event{Type: messages.TypeEvent, Seq: uint64(i + 1), Time: time.Now(), Kind: messages.EventRefresh, Pool: "a", Node: "n1"})
		}
	}
	t.Run("delay", func(t *testing.T) {
		pub, err := cluster.NewEventPublisher(js, cluster.EventPublisherOptions{BatchDelay: 20 * time.Millisecond, Logger: testkit.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		defer pub.Close(ctx(t))
		emit(pub, 3)
		published(pub, 3)
		emit(pub, 2) // a second batch, after the first went out
		published(pub, 5)
	})
	t.Run("full batch", func(t *testing.T) {
		pub, err := cluster.NewEventPublisher(js, cluster.EventPublisherOptions{BatchSize: 10, BatchDelay: time.Hour, Logger: testkit.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		defer pub.Close(ctx(t))
		emit(pub, 10)
		published(pub, 10)
		emit(pub, 25)
		published(pub, 30)
		if st := pub.Stats(); st.Published != 30 || st.Messages != 3 {
			t.Fatalf("stats %+v, want 3 full batches of 10 and 5 events waiting", st)
		}
	})
}

func TestEventPublisherDropsWhenStalled(t *testing.T) {
	srv, js := eventServer(t)
	var logs testkit.Buffer
	// One event a batch: the publisher is stuck in every publish.
	pub, err := cluster.NewEventPublisher(js, cluster.EventPublisherOptions{
		QueueSize: 4, BatchSize: 1, Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ev := func(seq uint64) messages.Event {
		return messages.Event{Type: messages.TypeEvent, Seq: seq, Time: time.Now(), Kind: messages.EventRefresh, Pool: "web", Node: "n1"}
	}
	pub.Emit(ev(1))
	testkit.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if st := pub.Stats(); st.Published != 1 {
			return fmt.Errorf("stats %+v; want the first event published", st)
		}
		return nil
	})

	srv.Shutdown()
	const n = 1000
	start := time.Now()
	for i := range n {
		pub.Emit(ev(uint64(i + 2)))
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("%d emits to a stalled publisher took %s", n, d)
	}
	// The publisher holds one event, the queue four.
	if st := pub.Stats(); st.Dropped < n-5 {
		t.Errorf("stats %+v; want at least %d dropped", st, n-5)
	}

	cctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start = time.Now()
	err = pub.Close(cctx)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close with the server gone: %v; want the deadline", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %s past its deadline", d)
	}
	st := pub.Stats()
	if st.Published != 1 || st.Dropped+st.Failed != n {
		t.Errorf("stats %+v; want every event after the first dropped or failed", st)
	}
	if got := strings.Count(logs.String(), "event queue full"); got != 1 {
		t.Errorf("%d queue-full warnings, want 1:\n%s", got, logs.String())
	}
	pub.Emit(ev(n + 2)) // after Close: dropped, no panic
	if pub.Stats().Dropped != st.Dropped+1 {
		t.Error("an event after Close was not counted as dropped")
	}
}

func TestReadEventsSkipsBadMessages(t *testing.T) {
	_, js := eventServer(t)
	line := func(kind, slot, session string) string {
		b, _ := json.Marshal(messages.Event{Type: messages.TypeEvent, Time: time.Now(), Kind: kind, Pool: "web", Node: "n1", Slot: slot, Session: session})
		return string(b) + "\n"
	}
	for _, body := range []string{
		"not json\n",
		line(messages.EventSlotAcquired, "s1", "a") + line(messages.EventLeaseCreated, "s1", "a") + "{\"type\":\"warmpool.v9.event\"}\n" +
			line(messages.EventSlotWarm, "s2", ""),
		line(messages.EventLeaseReleased, "s1", "a") + line(messages.EventSlotReleased, "s1", "") +
			line(messages.EventSlotAcquired, "s1", "b") + line(messages.EventLeaseCreated, "s1", "b"),
		line(messages.EventSlotReleased, "s1", ""),
	} {
		if _, err := js.Publish(ctx(t), cluster.EventSubject("web"), []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	events, err := readEvents(t, js, cluster.EventQuery{Session: "a"})
	if !slices.Equal(kinds(events), sessionLife) {
		t.Errorf("session a: %v, want %v", kinds(events), sessionLife)
	}
	if !errors.Is(err, cluster.ErrBadEvent) || !strings.Contains(err.Error(), "stream sequence 1, line 1") ||
		!strings.Contains(err.Error(), "stream sequence 2, line 3") {
		t.Errorf("err = %v; want ErrBadEvent naming sequences 1 and 2", err)
	}
	if events, err := readEvents(t, js, cluster.EventQuery{Session: "b"}); len(events) != 3 || err == nil {
		// b holds s1 when the stream ends: the slot's release is b's.
		t.Errorf("session b: %v, %v", kinds(events), err)
	}
}

func TestReadEventsWithoutStream(t *testing.T) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	defer srv.Shutdown()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := readEvents(t, jsOf(t, nc), cluster.EventQuery{}); !errors.Is(err, cluster.ErrNoEventStream) {
		t.Errorf("err = %v; want ErrNoEventStream", err)
	}
}

func TestDataDirIsLocked(t *testing.T) {
	dir := t.TempDir()
	web := testkit.DemoPool("web", 0)
	web.WarmTarget = 0
	opts := cluster.Options{
		NodeID: "test-" + uuid.NewString()[:8], DataDir: dir, NATSListen: "127.0.0.1:-1",
		Pools: []messages.PoolConfig{web}, Logger: testkit.Logger(t), OnExit: actors.ExitStop,
	}
	node, err := cluster.Start(ctx(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	if second, err := cluster.Start(ctx(t), opts); !errors.Is(err, cluster.ErrDataDirInUse) {
		if second != nil {
			second.Shutdown(context.Background())
		}
		t.Errorf("a second node on the data dir: %v; want ErrDataDirInUse", err)
	}
	if _, err := cluster.LockDataDir(dir); !errors.Is(err, cluster.ErrDataDirInUse) {
		t.Errorf("lock while the node runs: %v; want ErrDataDirInUse", err)
	}
	if err := node.Shutdown(ctx(t)); err != nil {
		t.Fatal(err)
	}
	unlock, err := cluster.LockDataDir(dir)
	if err != nil {
		t.Fatalf("lock after shutdown: %v", err)
	}
	unlock()
}
