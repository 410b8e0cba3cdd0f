package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/nats-io/nats.go"

	"github.com/warmpool/warmpool/actors"
	"github.com/warmpool/warmpool/client"
	"github.com/warmpool/warmpool/clock"
	"github.com/warmpool/warmpool/cluster"
	"github.com/warmpool/warmpool/driver"
	"github.com/warmpool/warmpool/driver/docker"
	"github.com/warmpool/warmpool/messages"
	"github.com/warmpool/warmpool/testkit"
)

// TestMain lets the test binary be the demo app of a self-started bench's
// pools (testkit.DemoPool).
func TestMain(m *testing.M) {
	testkit.RunDemoAppIfChild()
	code := m.Run()
	testkit.RemoveProjectImage()
	os.Exit(code)
}

// requiredKeys are the figures every report carries at its top level.
var requiredKeys = []string{
	"floor_rtt_p50_us", "floor_rtt_p99_us", "floor_kv_p50_us", "floor_kv_p99_us",
	"floor_acquire_p50_us", "floor_acquire_p99_us", "floor_pairs_per_sec_64",
	"sticky_p50_us", "acquire_p50_us", "acquire_p99_us",
	"pairs_per_sec_1", "pairs_per_sec_8", "pairs_per_sec_64",
	"first_response_warm_ms", "first_response_cold_ms",
	"acquire_p50_over_floor", "acquire_p99_over_floor", "pairs64_over_floor", "cold_over_warm",
}

// TestSelfStartedBench runs the smallest self-started bench (sync always)
// and checks the report's shape only: no figure is asserted, timings vary
// from machine to machine.
func TestSelfStartedBench(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node and 66 processes")
	}
	plan := Plan{
		StartupDelay: 200 * time.Millisecond, Containers: 66,
		RTTSamples: 200, KVSamples: 50, StickySamples: 50, AcquireSamples: 50,
		WarmFirstResponses: 5, ColdStarts: 1,
		PairsDuration: 300 * time.Millisecond, Rounds: 2, WarmupTimeout: time.Minute,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	r, err := Run(ctx, Options{
		Syncs: []string{SyncAlways}, Plan: plan, Logger: testkit.Logger(t), Progress: &progress,
		DemoApp: func(d time.Duration) messages.Template { return testkit.DemoPool("bench", d).Template },
	})
	if err != nil {
		t.Fatalf("bench: %v\nprogress:\n%s", err, progress.String())
	}
	if kids := testkit.Children(); len(kids) > 0 {
		t.Errorf("child processes left after the bench: %v", kids)
	}

	var js bytes.Buffer
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(js.Bytes(), &got); err != nil {
		t.Fatalf("the report is not one JSON object: %v\n%s", err, js.String())
	}
	for _, k := range requiredKeys {
		if v, ok := got[k].(float64); !ok || !(v > 0) {
			t.Errorf("%s = %v, want a positive number", k, got[k])
		}
	}
	// The floor and the 64-client pairs ran in alternating rounds.
	if rounds, _ := got["floor_pairs_per_sec_64_rounds"].([]any); len(rounds) != plan.Rounds {
		t.Errorf("floor rounds = %v, want %d", got["floor_pairs_per_sec_64_rounds"], plan.Rounds)
	}
	if pairs := r.Pairs; len(pairs) != len(Clients) || len(pairs[len(pairs)-1].Rounds) != plan.Rounds || len(pairs[0].Rounds) != 0 {
		t.Errorf("pairs = %+v, want %d rounds of the last client count only", pairs, plan.Rounds)
	}
	runs, _ := got["runs"].([]any)
	if len(runs) != 1 {
		t.Fatalf("runs = %v, want one run", got["runs"])
	}
	if run, _ := runs[0].(map[string]any); run["sync"] != SyncAlways || got["sync"] != SyncAlways {
		t.Errorf("sync = %v at the top, %v in the run; want %q", got["sync"], run["sync"], SyncAlways)
	}

	var table bytes.Buffer
	if err := r.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table.String(), "sync always") {
		t.Errorf("the table has no column for sync always:\n%s", table.String())
	}
	var svg bytes.Buffer
	if err := r.WriteSVG(&svg); err != nil {
		t.Fatal(err)
	}
	if err := wellFormed(svg.Bytes()); err != nil {
		t.Errorf("the SVG is not well-formed XML: %v", err)
	}
}

func wellFormed(b []byte) error {
	d := xml.NewDecoder(bytes.NewReader(b))
	for {
		_, err := d.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// TestSelfStartedBenchDocker runs the smallest self-started bench with the
// Docker pools too (the project's image, built FROM scratch): the report
// has their first responses, and no container is left.
func TestSelfStartedBenchDocker(t *testing.T) {
	if testing.Short() {
		t.Skip("builds an image and starts Docker containers")
	}
	image := testkit.ProjectImage(t)
	plan := Plan{
		StartupDelay: 200 * time.Millisecond, Containers: 66,
		RTTSamples: 20, KVSamples: 10, StickySamples: 10, AcquireSamples: 10,
		WarmFirstResponses: 2, ColdStarts: 1, DockerWarmFirstResponses: 3, DockerColdStarts: 1,
		PairsDuration: 100 * time.Millisecond, Rounds: 1, WarmupTimeout: time.Minute,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	r, err := Run(ctx, Options{
		Syncs: []string{SyncPeriodic}, Plan: plan, Logger: testkit.Logger(t), Progress: &progress,
		DemoApp: func(d time.Duration) messages.Template { return testkit.DemoPool("bench", d).Template },
		DockerDemo: func(d time.Duration) messages.Template {
			return messages.Template{Driver: messages.DriverDocker, StopGrace: messages.Duration(time.Second),
				Docker: &messages.DockerTemplate{Image: image, Port: 8080, Command: []string{"demo-app", "--startup-delay", d.String()}}}
		},
	})
	if err != nil {
		t.Fatalf("bench: %v\nprogress:\n%s", err, progress.String())
	}
	if r.DockerImage != image || !(r.FirstResponseWarmDockerMS > 0) || !(r.FirstResponseColdDockerMS > 0) || r.ColdStartsDocker != 1 || !(r.ColdOverWarmDocker > 0) {
		t.Errorf("Docker figures %q %v %v %d %v, want the image and positive figures", r.DockerImage,
			r.FirstResponseWarmDockerMS, r.FirstResponseColdDockerMS, r.ColdStartsDocker, r.ColdOverWarmDocker)
	}
	var table bytes.Buffer
	if err := r.WriteTable(&table); err != nil || !strings.Contains(table.String(), "Docker first HTTP response, cold") {
		t.Errorf("the table has no Docker rows (%v):\n%s", err, table.String())
	}
	for _, pool := range []string{DockerPool, DockerColdPool} {
		out, err := exec.Command("docker", "ps", "-aq", "--filter", "label="+docker.LabelPool+"="+pool).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "" {
			t.Errorf("containers of pool %s left after the bench: %q (%v)", pool, out, err)
		}
	}
}

func TestOptions(t *testing.T) {
	demo := func(time.Duration) messages.Template { return messages.Template{} }
	dockerDemo := func(time.Duration) messages.Template {
		return messages.Template{Driver: messages.DriverDocker, Docker: &messages.DockerTemplate{Image: "warmpool:dev"}}
	}
	tests := []struct {
		name string
		o    Options
		ok   bool
	}{
		{"self-started", Options{DemoApp: demo}, true},
		{"self-started, periodic", Options{DemoApp: demo, Syncs: []string{SyncPeriodic}}, true},
		{"self-started without the demo app", Options{}, false},
		{"bad sync", Options{DemoApp: demo, Syncs: []string{"sometimes"}}, false},
		{"existing", Options{NATSURL: "nats://127.0.0.1:4222"}, true},
		{"existing with a sync", Options{NATSURL: "nats://127.0.0.1:4222", Syncs: []string{SyncAlways}}, false},
		{"existing, bad pool", Options{NATSURL: "nats://127.0.0.1:4222", Pool: "a.b"}, false},
		{"too few containers", Options{DemoApp: demo, Plan: Plan{Containers: 64}}, false},
		{"no rounds", Options{DemoApp: demo, Plan: func() Plan { p := QuickPlan(); p.Rounds = 0; return p }()}, false},
		{"docker without samples", Options{DemoApp: demo, DockerDemo: dockerDemo, Plan: func() Plan { p := QuickPlan(); p.DockerColdStarts = 0; return p }()}, false},
		{"docker template without an image", Options{DemoApp: demo, DockerDemo: demo}, false},
		{"docker", Options{DemoApp: demo, DockerDemo: dockerDemo}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.o.withDefaults()
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok %v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, messages.ErrConfigValidation) {
				t.Errorf("err = %v, want one wrapping ErrConfigValidation", err)
			}
		})
	}
}

func TestQuantile(t *testing.T) {
	d := []time.Duration{5, 1, 4, 2, 3, 6, 7, 8, 9, 10}
	s := summarize(d)
	if s.n != 10 || s.p50 != 5 || s.p90 != 9 || s.p99 != 10 || s.max != 10 {
		t.Errorf("summarize = %+v", s)
	}
	if q := quantile(nil, 0.5); q != 0 {
		t.Errorf("quantile of nothing = %v", q)
	}
}

func TestFormats(t *testing.T) {
	for in, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567"} {
		if got := thousands(in); got != want {
			t.Errorf("thousands(%d) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[float64]string{61.4: "61 µs", 1234: "1.23 ms", 45600: "45.6 ms", 2.5e6: "2.50 s"} {
		if got := fmtUS(in); got != want {
			t.Errorf("fmtUS(%g) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222":                    "nats://127.0.0.1:4222",
		"nats://user:secret@host:4222,nats://h2:1": "nats://xxxxx@host:4222,nats://h2:1",
		"token@host": "xxxxx@host",
	} {
		if got := cluster.RedactURLs(in); got != want {
			t.Errorf("RedactURLs(%q) = %q, want %q", in, got, want)
		}
	}
}

// The benchmarks below run the actors alone: the fake driver, in-memory
// leases, no snapshots, no NATS. Each is quick with -benchtime=1x.

var discard = slog.New(slog.DiscardHandler)

// fakeConfig is a pool of the fake driver with slots containers, all kept
// warm, whose leases never expire and whose refresh never ticks on its own
// during a benchmark.
func fakeConfig(slots int) messages.PoolConfig {
	return messages.PoolConfig{
		Name: "b", Template: messages.Template{Driver: messages.DriverFake},
		WarmTarget: slots, MaxInstances: slots,
		AcquireTimeout:  messages.Duration(10 * 365 * 24 * time.Hour),
		RefreshInterval: messages.Duration(time.Hour),
	}
}

// counterIDs names slots slot-1, slot-2 ...: cheaper than uuids.
func counterIDs() func() string {
	var n atomic.Int64
	return func() string { return "slot-" + strconv.FormatInt(n.Add(1), 10) }
}

// spawnFake spawns a pool in an actor system of its own and returns it with
// the function that stops both (leaving the fake containers: quicker, and
// nothing outlives the driver anyway).
func spawnFake(tb testing.TB, o actors.PoolOptions) (*actors.Pool, func()) {
	tb.Helper()
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return discard }))
	o.Logger = discard
	if o.NewID == nil {
		o.NewID = counterIDs()
	}
	p, err := actors.SpawnPool(sys.Root, o)
	if err != nil {
		tb.Fatal(err)
	}
	return p, func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := p.Stop(ctx, actors.ExitLeave); err != nil {
			tb.Error(err)
		}
		sys.Shutdown()
	}
}

// waitStats polls the pool's stats until done says so.
func waitStats(tb testing.TB, p *actors.Pool, every time.Duration, done func(messages.Stats) bool) {
	tb.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		st, err := p.Stats(context.Background())
		if err != nil {
			tb.Fatal(err)
		}
		if done(st) {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("stats after 2m: %+v", st)
		}
		time.Sleep(every)
	}
}

func warmTo(n int) func(messages.Stats) bool {
	return func(st messages.Stats) bool { return st.Warm == n }
}

// BenchmarkAcquireAt10kSlots times an acquire and release of a new session
// through the actors API (the pool actor, the slot actor, the in-memory
// lease store) in a pool of 100 and of 10,000 warm slots: the two should
// cost the same, an acquire being O(1) in the pool's size.
func BenchmarkAcquireAt10kSlots(b *testing.B) {
	for _, n := range []int{100, 10000} {
		b.Run(fmt.Sprintf("slots=%d", n), func(b *testing.B) {
			pool, stop := spawnFake(b, actors.PoolOptions{
				Config: fakeConfig(n), Driver: testkit.NewFakeDriver(clock.Real()), Leases: actors.NewMemoryLeases(),
			})
			defer stop()
			waitStats(b, pool, 5*time.Millisecond, warmTo(n))
			ctx := context.Background()
			i := 0
			for b.Loop() {
				i++
				id := "s-" + strconv.Itoa(i)
				if _, err := pool.Acquire(ctx, id); err != nil {
					b.Fatal(err)
				}
				if _, err := pool.Release(ctx, id); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkWarm10kSlots times the spawn of a pool and the warmup of its
// 10,000 slots with the fake driver, end to end, and reports the memory a
// slot holds once warm: the live heap and goroutine stacks after a GC,
// before and after, over 10,000. That includes the fake driver's share (a
// few hundred bytes a container), which a real driver replaces with its own.
func BenchmarkWarm10kSlots(b *testing.B) {
	const n = 10000
	var heap, stack, goroutines float64
	runs := 0
	for b.Loop() {
		b.StopTimer()
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		g0 := runtime.NumGoroutine()
		b.StartTimer()

		pool, stop := spawnFake(b, actors.PoolOptions{
			Config: fakeConfig(n), Driver: testkit.NewFakeDriver(clock.Real()), Leases: actors.NewMemoryLeases(),
		})
		waitStats(b, pool, time.Millisecond, warmTo(n))

		b.StopTimer()
		runtime.GC()
		runtime.ReadMemStats(&after)
		heap += float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / n
		stack += float64(int64(after.StackInuse)-int64(before.StackInuse)) / n
		goroutines += float64(runtime.NumGoroutine()-g0) / n
		runs++
		stop()
		b.StartTimer()
	}
	b.ReportMetric(heap/float64(runs), "heap-B/slot")
	b.ReportMetric(stack/float64(runs), "stack-B/slot")
	b.ReportMetric((heap+stack)/float64(runs), "B/slot")
	b.ReportMetric(goroutines/float64(runs), "goroutines/slot")
}

// BenchmarkRefresh10kSlots times one refresh of a pool of 10,000 warm slots
// of which 5,000 are acquired (none expired: the steady state, where the
// refresh scans every session and starts nothing). There is no hook into the
// refresh, so it is driven by a fake clock: Advance fires the refresh timer,
// which queues the tick, and a Stats request queued behind it returns once
// the refresh is done. "stats" times the Stats round trip alone, so the
// refresh costs the difference.
func BenchmarkRefresh10kSlots(b *testing.B) {
	const n, leased = 10000, 5000
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	cfg := fakeConfig(n)
	cfg.RefreshInterval = messages.Duration(30 * time.Second)
	pool, stop := spawnFake(b, actors.PoolOptions{
		Config: cfg, Driver: testkit.NewFakeDriver(clk), Clock: clk, Leases: actors.NewMemoryLeases(),
	})
	defer stop()
	waitStats(b, pool, 5*time.Millisecond, warmTo(n))
	ctx := context.Background()
	for i := range leased {
		if _, err := pool.Acquire(ctx, "s-"+strconv.Itoa(i)); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("refresh+stats", func(b *testing.B) {
		for b.Loop() {
			clk.Advance(cfg.RefreshInterval.D())
			if _, err := pool.Stats(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("stats", func(b *testing.B) {
		for b.Loop() {
			if _, err := pool.Stats(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	if st, err := pool.Stats(ctx); err != nil || st.Acquired != leased || st.Warm != n-leased {
		b.Fatalf("after the refreshes: %+v, %v; want %d acquired, %d warm", st, err, leased, n-leased)
	}
}

// BenchmarkRecovery10kSlots times a pool's start from a Recovery of 10,000
// running containers, their snapshots, and 5,000 unexpired leases, built in
// memory on the fake driver, until Stats shows every container adopted: 5,000
// acquired again by their sessions, 5,000 warm. Stats is polled every
// millisecond, which bounds the resolution.
func BenchmarkRecovery10kSlots(b *testing.B) {
	const n, leased = 10000, 5000
	const node = "bench-node"
	cfg := fakeConfig(n).WithDefaults()
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		drv := testkit.NewFakeDriver(clock.Real())
		leases := actors.NewMemoryLeases()
		rec := actors.Recovery{}
		now := time.Now()
		for i := range n {
			slot := fmt.Sprintf("slot-%05d", i)
			h, err := drv.Start(ctx, driver.Spec{Pool: cfg.Name, Slot: slot, Node: node, Template: cfg.Template})
			if err != nil {
				b.Fatal(err)
			}
			snap := actors.SlotSnapshot{
				Version: actors.SnapshotSchema, Pool: cfg.Name, Node: node, Slot: slot,
				State: actors.Warm.String(), Handle: h, Since: now, UpdatedAt: now,
			}
			if i < leased {
				id := "session-" + strconv.Itoa(i)
				r := actors.LeaseRecord{
					Version: actors.LeaseSchema, Pool: cfg.Name, ID: id, Slot: slot, Node: node,
					Endpoint: h.Endpoint, ContainerID: h.ID, StartID: h.StartID,
					CreatedAt: now, ExpiresAt: now.Add(time.Hour),
				}
				rec.Leases = append(rec.Leases, actors.StoredLease{Record: r, Revision: leases.Overwrite(r)})
				snap.State, snap.Session = actors.Acquired.String(), id
			}
			rec.Snapshots = append(rec.Snapshots, snap)
		}
		var err error
		if rec.Found, err = drv.List(ctx, node); err != nil || len(rec.Found) != n {
			b.Fatalf("found %d containers: %v", len(rec.Found), err)
		}
		b.StartTimer()

		pool, stop := spawnFake(b, actors.PoolOptions{
			Config: cfg, Node: node, Driver: drv, Leases: leases, Recovery: &rec,
		})
		waitStats(b, pool, time.Millisecond, func(st messages.Stats) bool {
			return st.Acquired == leased && st.Warm == n-leased
		})

		b.StopTimer()
		stop()
		b.StartTimer()
	}
}

// BenchmarkAcquireReleaseNATS times acquire+release pairs through the whole
// node: client, NATS, micro endpoint, pool actor, the lease's KV create and
// delete on the embedded server. The containers are the fake driver's, so
// the profile (-cpuprofile) shows warmpool and NATS and nothing else.
func BenchmarkAcquireReleaseNATS(b *testing.B) {
	for _, sync := range []string{SyncAlways, SyncPeriodic} {
		b.Run("sync="+sync, func(b *testing.B) {
			pool := startFakeNode(b, sync, 100)
			var seq atomic.Int64
			pair := func() error {
				id := "b-" + strconv.FormatInt(seq.Add(1), 10)
				ctx := context.Background()
				if _, err := pool.GetContainer(ctx, id); err != nil {
					return err
				}
				_, err := pool.ReleaseContainer(ctx, id)
				return err
			}
			b.Run("clients=1", func(b *testing.B) {
				pairs, start := 0, time.Now()
				for b.Loop() {
					if err := pair(); err != nil {
						b.Fatal(err)
					}
					pairs++
				}
				b.ReportMetric(float64(pairs)/time.Since(start).Seconds(), "pairs/s")
			})
			b.Run("clients=64", func(b *testing.B) {
				b.SetParallelism(max(64/runtime.GOMAXPROCS(0), 1))
				start := time.Now()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := pair(); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "pairs/s")
			})
		})
	}
}

// startFakeNode starts a node whose one pool, "bench", keeps warm
// containers of the fake driver, and returns a client's handle on it.
func startFakeNode(b *testing.B, sync string, warm int) *client.Pool {
	b.Helper()
	cfg := messages.PoolConfig{
		Name: "bench", Template: messages.Template{Driver: messages.DriverFake},
		WarmTarget: warm, MaxInstances: warm,
	}
	node, err := cluster.Start(context.Background(), cluster.Options{
		NodeID: "bench-" + sync, DataDir: b.TempDir(), NATSListen: "127.0.0.1:-1",
		Pools: []messages.PoolConfig{cfg}, Logger: discard, OnExit: actors.ExitStop,
		Drivers:      map[string]driver.Driver{messages.DriverFake: testkit.NewFakeDriver(clock.Real())},
		SyncPeriodic: sync == SyncPeriodic,
	})
	if err != nil {
		b.Fatal(err)
	}
	nc, err := nats.Connect(node.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		nc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := node.Shutdown(ctx); err != nil {
			b.Error(err)
		}
	})
	waitStats(b, node.Pool("bench"), 5*time.Millisecond, warmTo(warm))
	return client.New(nc).Pool("bench")
}
