// Package bench measures a warmpool node against a floor measured in the same
// run on the same NATS server: acquire latency against a bare request-reply
// round trip plus one bare KV compare-and-set write, acquire+release
// throughput against bare KV create+delete pairs, and the time to a first
// HTTP response from a warm container against a cold start of the same
// template. It backs `warmpool bench`.
//
// Nothing here is asserted: the figures are for people, and for comparing
// one run with another on the same machine. Every latency is taken by one
// client over one NATS connection, the way an application would talk to
// warmpool, so the floor and the acquire share the same path.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/warmpool/warmpool/actors"
	"github.com/warmpool/warmpool/client"
	"github.com/warmpool/warmpool/cluster"
	"github.com/warmpool/warmpool/messages"
)

// Sync settings of a run.
const (
	// SyncAlways fsyncs every JetStream write before it is acknowledged.
	SyncAlways = "always"
	// SyncPeriodic leaves fsync to the server's periodic flush.
	SyncPeriodic = "periodic"
	// SyncServer labels a run against an existing node: whatever its NATS
	// server is set to, which a client cannot see.
	SyncServer = "server"
)

// Names the bench uses.
const (
	// FloorBucket is the scratch KV bucket of the floor's writes; it is
	// created for the run and deleted after it.
	FloorBucket = "warmpool-bench-floor"
	// SelfPool and ColdPool are the pools of a self-started node: the warm
	// one measured, and one with warmTarget 0 whose acquires cold-start.
	SelfPool = "bench"
	ColdPool = "bench-cold"
	// DockerPool and DockerColdPool are the same two with the Docker
	// driver, for the first responses of Docker containers.
	DockerPool     = "bench-docker"
	DockerColdPool = "bench-docker-cold"
	// DefaultPool is the pool measured on an existing node by default.
	DefaultPool = "default"
)

// Clients are the concurrency levels of the throughput runs; the floor's
// writers match the last.
var Clients = []int{1, 8, 64}

const floorWriters = 64

// ErrBusyPool is returned for an existing pool that holds acquired
// sessions: the cold-start measurement shuts the pool down, which would end
// them.
var ErrBusyPool = errors.New("pool has acquired sessions")

// Plan is how much a run measures.
type Plan struct {
	// StartupDelay is the demo app's boot time in a self-started node: what
	// a cold start waits for.
	StartupDelay time.Duration
	// Containers is the size of a self-started pool, all kept warm; more
	// than the largest client count, so that no acquire of the throughput
	// runs finds none warm.
	Containers int
	// Samples of each latency.
	RTTSamples, KVSamples, StickySamples, AcquireSamples int
	// WarmFirstResponses and ColdStarts are the samples of the time to a
	// first HTTP response, warm and cold.
	WarmFirstResponses, ColdStarts int
	// DockerWarmFirstResponses and DockerColdStarts are the same with
	// Docker containers, when Options.DockerDemo is set.
	DockerWarmFirstResponses, DockerColdStarts int
	// PairsDuration is the length of each throughput run, the floor's too.
	PairsDuration time.Duration
	// Rounds alternate the floor's writers with the largest client count,
	// each for PairsDuration, so that both meet the same conditions (the
	// machine's other load, the server's state); their medians are compared.
	Rounds int
	// WarmupTimeout bounds the wait for the pool to be warm.
	WarmupTimeout time.Duration
}

// QuickPlan is `warmpool bench --quick`: about 10 s a sync setting on two
// cores.
func QuickPlan() Plan {
	return Plan{
		StartupDelay: 500 * time.Millisecond, Containers: 72,
		RTTSamples: 2000, KVSamples: 300, StickySamples: 300, AcquireSamples: 300,
		WarmFirstResponses: 30, ColdStarts: 3, DockerWarmFirstResponses: 10, DockerColdStarts: 2,
		PairsDuration: 500 * time.Millisecond, Rounds: 3, WarmupTimeout: time.Minute,
	}
}

// FullPlan is the default run: about a minute a sync setting.
func FullPlan() Plan {
	return Plan{
		StartupDelay: 2 * time.Second, Containers: 72,
		RTTSamples: 10000, KVSamples: 2000, StickySamples: 2000, AcquireSamples: 2000,
		WarmFirstResponses: 200, ColdStarts: 8, DockerWarmFirstResponses: 50, DockerColdStarts: 5,
		PairsDuration: 2 * time.Second, Rounds: 7, WarmupTimeout: 2 * time.Minute,
	}
}

func (p Plan) valid() error {
	most := Clients[len(Clients)-1]
	switch {
	case p.Containers <= most || p.Containers > messages.MaxMaxInstances:
		return fmt.Errorf("%w: bench plan: containers %d must be more than %d clients", messages.ErrConfigValidation, p.Containers, most)
	case p.RTTSamples < 1 || p.KVSamples < 1 || p.StickySamples < 1 || p.AcquireSamples < 1 ||
		p.WarmFirstResponses < 1 || p.ColdStarts < 1 || p.Rounds < 1:
		return fmt.Errorf("%w: bench plan: every sample count must be at least 1", messages.ErrConfigValidation)
	case p.PairsDuration <= 0 || p.WarmupTimeout <= 0 || p.StartupDelay < 0:
		return fmt.Errorf("%w: bench plan: durations must be positive", messages.ErrConfigValidation)
	}
	return nil
}

// Options configure Run.
type Options struct {
	// NATSURL measures the node(s) serving Pool on this NATS system instead
	// of starting one.
	NATSURL string
	// Pool is the pool measured with NATSURL; default "default".
	Pool string
	// Syncs are the sync settings of a self-started node, one run each, in
	// order; default always, then periodic. Not used with NATSURL.
	Syncs []string
	// Quick picks QuickPlan instead of FullPlan when Plan is zero.
	Quick bool
	// Plan overrides the plan Quick picks.
	Plan Plan
	// DemoApp is the template of a self-started node's pools, given the
	// startup delay: a program that serves HTTP on $PORT, answering
	// ReadyPath once it has booted. Required without NATSURL.
	DemoApp func(startupDelay time.Duration) messages.Template
	// DockerDemo, when set, is the same demo app as a Docker container
	// template (the image must be on the machine): a self-started node then
	// also measures first responses of warm and cold Docker containers.
	DockerDemo func(startupDelay time.Duration) messages.Template
	// DockerSkipped, without DockerDemo, says in the report why Docker
	// containers were not measured (no engine, no image).
	DockerSkipped string
	// Logger gets the self-started node's logs; default none.
	Logger *slog.Logger
	// Progress gets a line as each step begins; default none.
	Progress io.Writer
}

func (o Options) withDefaults() (Options, error) {
	if o.Plan == (Plan{}) {
		o.Plan = FullPlan()
		if o.Quick {
			o.Plan = QuickPlan()
		}
	}
	if err := o.Plan.valid(); err != nil {
		return o, err
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.NATSURL != "" {
		if o.Pool == "" {
			o.Pool = DefaultPool
		}
		if err := messages.ValidatePoolName(o.Pool); err != nil {
			return o, fmt.Errorf("%w: %v", messages.ErrConfigValidation, err)
		}
		if len(o.Syncs) > 0 {
			return o, fmt.Errorf("%w: the sync setting of an existing node is its server's; it cannot be chosen", messages.ErrConfigValidation)
		}
		return o, nil
	}
	if o.DemoApp == nil {
		return o, fmt.Errorf("%w: a self-started bench needs the demo app's template", messages.ErrConfigValidation)
	}
	if o.DockerDemo != nil {
		if o.Plan.DockerWarmFirstResponses < 1 || o.Plan.DockerColdStarts < 1 {
			return o, fmt.Errorf("%w: bench plan: Docker first responses and cold starts must be at least 1", messages.ErrConfigValidation)
		}
		if t := o.DockerDemo(o.Plan.StartupDelay); t.Driver != messages.DriverDocker || t.Docker == nil || t.Docker.Image == "" {
			return o, fmt.Errorf("%w: the Docker demo app's template must name the docker driver and an image", messages.ErrConfigValidation)
		}
	}
	if len(o.Syncs) == 0 {
		o.Syncs = []string{SyncAlways, SyncPeriodic}
	}
	for _, s := range o.Syncs {
		if s != SyncAlways && s != SyncPeriodic {
			return o, fmt.Errorf("%w: sync %q must be %q or %q", messages.ErrConfigValidation, s, SyncAlways, SyncPeriodic)
		}
	}
	return o, nil
}

// Run measures, as Options say, and returns the report. ctx ends the run
// early; whatever it started is removed either way.
func Run(ctx context.Context, o Options) (*Report, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	started := time.Now()
	var runs []Result
	if o.NATSURL != "" {
		r, err := runExisting(ctx, o)
		if err != nil {
			return nil, err
		}
		runs = append(runs, r)
	} else {
		for _, s := range o.Syncs {
			r, err := runSelfStarted(ctx, o, s)
			if err != nil {
				return nil, fmt.Errorf("sync %s: %w", s, err)
			}
			runs = append(runs, r)
		}
	}
	return newReport(o, runs, time.Since(started)), nil
}

// runSelfStarted starts a node with a warm pool of the demo app and a cold
// one, measures, and removes the node, its containers and its data dir.
func runSelfStarted(ctx context.Context, o Options, sync string) (res Result, err error) {
	dir, err := os.MkdirTemp("", "warmpool-bench-")
	if err != nil {
		return res, fmt.Errorf("data dir: %w", err)
	}
	// Deferred first, so that it runs after the node is down.
	defer func() {
		if rerr := os.RemoveAll(dir); rerr != nil && err == nil {
			err = fmt.Errorf("removing the data dir: %w", rerr)
		}
	}()
	n := o.Plan.Containers
	tmpl := o.DemoApp(o.Plan.StartupDelay)
	warm := messages.PoolConfig{Name: SelfPool, Template: tmpl, WarmTarget: n, MaxInstances: n}
	// Replace: a released cold container is stopped, so that the next
	// acquire starts one again.
	cold := messages.PoolConfig{Name: ColdPool, Template: tmpl, WarmTarget: 0, MaxInstances: 2, OnRelease: messages.OnReleaseReplace}
	pools := []messages.PoolConfig{warm, cold}
	var dockerImage string
	if o.DockerDemo != nil {
		dt := o.DockerDemo(o.Plan.StartupDelay)
		dockerImage = dt.Docker.Image
		pools = append(pools,
			messages.PoolConfig{Name: DockerPool, Template: dt, WarmTarget: dockerWarm, MaxInstances: dockerWarm},
			messages.PoolConfig{Name: DockerColdPool, Template: dt, WarmTarget: 0, MaxInstances: 2, OnRelease: messages.OnReleaseReplace})
	}
	progress(o, sync, "starting a node; warming %d demo-app containers (startup delay %s)", n, o.Plan.StartupDelay)
	id := "bench-" + uuid.NewString()[:8]
	node, err := cluster.Start(ctx, cluster.Options{
		NodeID:       id,
		DataDir:      dir,
		NATSListen:   "127.0.0.1:-1",
		Pools:        pools,
		Logger:       o.Logger,
		OnExit:       actors.ExitStop,
		SyncPeriodic: sync == SyncPeriodic,
	})
	if err != nil {
		return res, fmt.Errorf("starting a node: %w", err)
	}
	defer func() {
		progress(o, sync, "stopping the node and its containers")
		sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if serr := node.Shutdown(sctx); serr != nil && err == nil {
			err = fmt.Errorf("stopping the node: %w", serr)
		}
	}()
	nc, err := nats.Connect(node.ClientURL(), nats.Name("warmpool-bench"))
	if err != nil {
		return res, fmt.Errorf("connecting to the node: %w", err)
	}
	defer nc.Close()
	c := client.New(nc)
	m := &meter{
		o: o, sync: sync, nc: nc, url: node.ClientURL(), runID: id,
		pool: c.Pool(SelfPool), coldPool: c.Pool(ColdPool), containers: n,
		// The cold pool keeps nothing warm: each sample only waits for the
		// previous sample's container to be gone.
		prepareCold: func(ctx context.Context) error { return waitEmpty(ctx, c.Pool(ColdPool)) },
	}
	if dockerImage != "" {
		m.docker = &dockerPools{warm: c.Pool(DockerPool), cold: c.Pool(DockerColdPool), image: dockerImage}
	}
	if err := m.waitWarm(ctx, m.pool, n); err != nil {
		return res, err
	}
	res, err = m.measure(ctx)
	res.Target = "self-started node"
	res.StartupDelayMS = ms(o.Plan.StartupDelay)
	return res, err
}

// runExisting measures a pool of an existing node. It refuses a pool that
// holds acquired sessions: the cold-start samples shut the pool down.
func runExisting(ctx context.Context, o Options) (Result, error) {
	nc, err := nats.Connect(o.NATSURL, nats.Name("warmpool-bench"))
	if err != nil {
		return Result{}, fmt.Errorf("connecting to NATS at %s: %w", cluster.RedactURLs(o.NATSURL), err)
	}
	defer nc.Close()
	pool := client.New(nc).Pool(o.Pool)
	st, err := pool.Stats(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("pool %s: %w", o.Pool, err)
	}
	if st.Acquired > 0 {
		return Result{}, fmt.Errorf("%w: pool %s holds %d; the cold-start samples shut the pool down and would end them: bench a pool of its own",
			ErrBusyPool, o.Pool, st.Acquired)
	}
	want := min(st.Config.MaxInstances, o.Plan.Containers)
	if most := Clients[len(Clients)-1]; want <= most {
		progress(o, SyncServer, "warning: pool %s allows %d containers, not more than %d clients: some acquires will find none warm and retry", o.Pool, want, most)
	}
	if more := want - st.Warm - st.Warming; more > 0 {
		progress(o, SyncServer, "warming %d more containers in pool %s", more, o.Pool)
		if _, err := pool.Warmup(ctx, more); err != nil {
			return Result{}, fmt.Errorf("pool %s: %w", o.Pool, err)
		}
	}
	m := &meter{
		o: o, sync: SyncServer, nc: nc, url: o.NATSURL, runID: "bench-" + uuid.NewString()[:8],
		pool: pool, coldPool: pool, containers: want,
		// Shut down, the pool keeps nothing warm until the next acquire:
		// that one cold-starts. Draining containers still count against
		// maxInstances, so wait until they are gone.
		prepareCold: func(ctx context.Context) error {
			if _, err := pool.ShutdownAll(ctx); err != nil {
				return err
			}
			return waitEmpty(ctx, pool)
		},
	}
	if err := m.waitWarm(ctx, m.pool, want); err != nil {
		return Result{}, err
	}
	res, err := m.measure(ctx)
	res.Target = cluster.RedactURLs(o.NATSURL)
	return res, err
}

// dockerWarm is how many Docker containers a self-started node keeps warm.
const dockerWarm = 2

// dockerPools are the warm and the cold pool of Docker containers.
type dockerPools struct {
	warm, cold *client.Pool
	image      string
}

// meter takes the measurements of one run.
type meter struct {
	o          Options
	sync       string
	nc         *nats.Conn
	url        string
	runID      string
	seq        atomic.Int64
	pool       *client.Pool
	coldPool   *client.Pool
	containers int
	// prepareCold makes the next acquire of coldPool a cold start.
	prepareCold func(context.Context) error
	// docker, when set, are the Docker pools of a self-started node.
	docker *dockerPools
}

func (m *meter) progress(format string, args ...any) { progress(m.o, m.sync, format, args...) }

func progress(o Options, sync, format string, args ...any) {
	fmt.Fprintf(o.Progress, "bench [sync %s]: %s\n", sync, fmt.Sprintf(format, args...))
}

// newID is a session id no one else uses.
func (m *meter) newID() string { return m.runID + "-" + strconv.FormatInt(m.seq.Add(1), 10) }

func (m *meter) measure(ctx context.Context) (res Result, err error) {
	res = Result{Sync: m.sync, Pool: m.pool.Name(), Containers: m.containers}
	s := &res.samples
	m.progress("floor: %d NATS request-reply round trips", m.o.Plan.RTTSamples)
	if s.rtt, err = m.floorRTT(ctx); err != nil {
		return res, fmt.Errorf("floor round trip: %w", err)
	}
	m.progress("floor: %d KV creates", m.o.Plan.KVSamples)
	floor, err := m.openFloor(ctx)
	if err != nil {
		return res, fmt.Errorf("floor KV writes: %w", err)
	}
	defer func() {
		if cerr := floor.close(); cerr != nil && err == nil {
			err = fmt.Errorf("floor KV writes: %w", cerr)
		}
	}()
	if s.kv, err = timeN(ctx, m.o.Plan.KVSamples, floor.create); err != nil {
		return res, fmt.Errorf("floor KV writes: %w", err)
	}
	m.progress("%d sticky re-acquires, %d acquires of new sessions from warm", m.o.Plan.StickySamples, m.o.Plan.AcquireSamples)
	if s.sticky, err = m.sticky(ctx); err != nil {
		return res, fmt.Errorf("sticky acquires: %w", err)
	}
	if s.acquire, res.ColdHits, err = m.newSessions(ctx); err != nil {
		return res, fmt.Errorf("acquires of new sessions: %w", err)
	}
	most := Clients[len(Clients)-1]
	for _, c := range Clients[:len(Clients)-1] {
		m.progress("acquire+release pairs with %d client(s) for %s", c, m.o.Plan.PairsDuration)
		t, err := m.pairs(ctx, c)
		if err != nil {
			return res, fmt.Errorf("pairs with %d clients: %w", c, err)
		}
		res.Pairs = append(res.Pairs, t)
	}
	m.progress("%d rounds of %s each: KV create+delete pairs with %d writers (the floor), then acquire+release pairs with %d clients",
		m.o.Plan.Rounds, m.o.Plan.PairsDuration, floorWriters, most)
	var rounds []Throughput
	for range m.o.Plan.Rounds {
		n, elapsed, err := concurrently(ctx, floorWriters, m.o.Plan.PairsDuration, floor.pair)
		if err != nil {
			return res, fmt.Errorf("floor KV pairs: %w", err)
		}
		res.FloorRounds = append(res.FloorRounds, round(float64(n)/elapsed.Seconds(), 0))
		t, err := m.pairs(ctx, most)
		if err != nil {
			return res, fmt.Errorf("pairs with %d clients: %w", most, err)
		}
		rounds = append(rounds, t)
	}
	res.FloorPairsPerSec64 = median(res.FloorRounds)
	res.Pairs = append(res.Pairs, mergeRounds(rounds))
	m.progress("%d first HTTP responses from warm containers", m.o.Plan.WarmFirstResponses)
	if s.warmFirst, err = m.warmFirstResponses(ctx, m.pool, m.o.Plan.WarmFirstResponses); err != nil {
		return res, fmt.Errorf("warm first responses: %w", err)
	}
	m.progress("%d cold starts (pool %s)", m.o.Plan.ColdStarts, m.coldPool.Name())
	if s.coldFirst, s.coldAcquire, err = m.coldFirstResponses(ctx, m.coldPool, m.prepareCold, m.o.Plan.ColdStarts); err != nil {
		return res, fmt.Errorf("cold first responses: %w", err)
	}
	if d := m.docker; d != nil {
		res.DockerImage = d.image
		m.progress("Docker (image %s): %d first HTTP responses from warm containers, %d cold starts", d.image,
			m.o.Plan.DockerWarmFirstResponses, m.o.Plan.DockerColdStarts)
		if err := m.waitWarm(ctx, d.warm, dockerWarm); err != nil {
			return res, fmt.Errorf("docker: %w", err)
		}
		if s.dockerWarmFirst, err = m.warmFirstResponses(ctx, d.warm, m.o.Plan.DockerWarmFirstResponses); err != nil {
			return res, fmt.Errorf("docker warm first responses: %w", err)
		}
		prepare := func(ctx context.Context) error { return waitEmpty(ctx, d.cold) }
		if s.dockerColdFirst, s.dockerColdAcquire, err = m.coldFirstResponses(ctx, d.cold, prepare, m.o.Plan.DockerColdStarts); err != nil {
			return res, fmt.Errorf("docker cold first responses: %w", err)
		}
	}
	res.summarize()
	return res, nil
}

// waitWarm waits until the pool has want warm containers.
func (m *meter) waitWarm(ctx context.Context, pool *client.Pool, want int) error {
	ctx, cancel := context.WithTimeout(ctx, m.o.Plan.WarmupTimeout)
	defer cancel()
	for {
		st, err := pool.Stats(ctx)
		switch {
		case err != nil:
			return fmt.Errorf("waiting for %d warm containers: %w", want, err)
		case st.Warm >= want:
			return nil
		case st.StartFailures >= 3:
			return fmt.Errorf("pool %s: %d container starts failed; last: %s", pool.Name(), st.StartFailures, st.LastError)
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return fmt.Errorf("pool %s: %d of %d containers warm: %w", pool.Name(), st.Warm, want, err)
		}
	}
}

// waitEmpty waits until the pool runs no container at all.
func waitEmpty(ctx context.Context, p *client.Pool) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		st, err := p.Stats(ctx)
		if err != nil {
			return err
		}
		if st.Total == 0 {
			return nil
		}
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return fmt.Errorf("pool %s still runs %d containers: %w", p.Name(), st.Total, err)
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// warmupRounds is how many unrecorded rounds go before each latency's
// samples: connections, caches and the JIT of the first calls.
const warmupRounds = 20

// requestTimeout bounds one pair of writes of the floor, and one
// acquire+release pair.
const requestTimeout = 10 * time.Second

// floorRTT times bare request-reply round trips to a responder on the same
// server, with bodies the size of an acquire's.
func (m *meter) floorRTT(ctx context.Context) ([]time.Duration, error) {
	rc, err := nats.Connect(m.url, nats.Name("warmpool-bench-responder"))
	if err != nil {
		return nil, fmt.Errorf("connecting the responder: %w", err)
	}
	defer rc.Close()
	reply, _ := json.Marshal(messages.Lease{
		Type: messages.TypeLease, Pool: m.pool.Name(), ID: m.newID(), Slot: uuid.NewString(),
		Endpoint: "http://127.0.0.1:41234", Node: m.runID, ExpiresAt: time.Now(), Revision: 123456,
	})
	subject := "warmpool-bench.floor." + m.runID
	if _, err := rc.Subscribe(subject, func(msg *nats.Msg) { _ = msg.Respond(reply) }); err != nil {
		return nil, fmt.Errorf("subscribing the responder: %w", err)
	}
	if err := rc.Flush(); err != nil {
		return nil, fmt.Errorf("subscribing the responder: %w", err)
	}
	body, _ := json.Marshal(messages.SessionRequest{ID: m.newID()})
	return timeN(ctx, m.o.Plan.RTTSamples, func(ctx context.Context) (time.Duration, error) {
		rctx, cancel := context.WithTimeout(ctx, requestTimeout)
		defer cancel()
		start := time.Now()
		_, err := m.nc.RequestWithContext(rctx, subject, body)
		return time.Since(start), err
	})
}

// floorKV is the floor's scratch bucket on the same server, replicated as
// the lease bucket is, and a value the size of a lease record.
type floorKV struct {
	js    jetstream.JetStream
	kv    jetstream.KeyValue
	val   []byte
	newID func() string
}

// openFloor creates the floor's bucket; close deletes it.
func (m *meter) openFloor(ctx context.Context) (*floorKV, error) {
	js, err := jetstream.New(m.nc)
	if err != nil {
		return nil, err
	}
	replicas := 1
	if s, err := js.Stream(ctx, "KV_"+cluster.DefaultLeaseBucket); err == nil {
		replicas = max(s.CachedInfo().Config.Replicas, 1)
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      FloorBucket,
		Description: "warmpool bench: scratch bucket of the floor's writes, deleted after the run",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("creating bucket %s: %w", FloorBucket, err)
	}
	val, _ := json.Marshal(actors.LeaseRecord{
		Version: actors.LeaseSchema, Pool: m.pool.Name(), ID: m.newID(), Slot: uuid.NewString(), Node: m.runID,
		Endpoint: "http://127.0.0.1:41234", ContainerID: "123456", StartID: "98765432",
		CreatedAt: time.Now(), ExpiresAt: time.Now().Add(5 * time.Minute),
	})
	return &floorKV{js: js, kv: kv, val: val, newID: m.newID}, nil
}

func (f *floorKV) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.js.DeleteKeyValue(ctx, FloorBucket); err != nil {
		return fmt.Errorf("deleting bucket %s: %w", FloorBucket, err)
	}
	return nil
}

// create times a create of a fresh key, then deletes it (not timed) as a
// release deletes a lease: compare-and-set on the create's revision.
func (f *floorKV) create(ctx context.Context) (time.Duration, error) {
	wctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	key := "floor." + f.newID()
	start := time.Now()
	rev, err := f.kv.Create(wctx, key, f.val)
	d := time.Since(start)
	if err != nil {
		return d, err
	}
	return d, f.kv.Delete(wctx, key, jetstream.LastRevision(rev))
}

// pair is a create and its delete: a lease's two writes.
func (f *floorKV) pair(ctx context.Context) error {
	_, err := f.create(ctx)
	return err
}

// sticky times re-acquires of one session: each extends its lease.
func (m *meter) sticky(ctx context.Context) ([]time.Duration, error) {
	id := m.newID()
	first, err := m.pool.GetContainer(ctx, id)
	if err != nil {
		return nil, err
	}
	lat, err := timeN(ctx, m.o.Plan.StickySamples, func(ctx context.Context) (time.Duration, error) {
		start := time.Now()
		l, err := m.pool.GetContainer(ctx, id)
		d := time.Since(start)
		if err == nil && l.Slot != first.Slot {
			err = fmt.Errorf("session %s moved from slot %s to %s", id, first.Slot, l.Slot)
		}
		return d, err
	})
	if _, rerr := m.pool.ReleaseContainer(ctx, id); rerr != nil && err == nil {
		err = rerr
	}
	return lat, err
}

// newSessions times acquires of new sessions, each released after (not
// timed) so that the pool stays warm. cold counts acquires that found no
// warm container.
func (m *meter) newSessions(ctx context.Context) (lat []time.Duration, cold int, err error) {
	lat, err = timeN(ctx, m.o.Plan.AcquireSamples, func(ctx context.Context) (time.Duration, error) {
		id := m.newID()
		start := time.Now()
		l, err := m.pool.GetContainer(ctx, id)
		d := time.Since(start)
		if err != nil {
			return d, err
		}
		if l.Cold {
			cold++
		}
		_, err = m.pool.ReleaseContainer(ctx, id)
		return d, err
	})
	return lat, cold, err
}

// pairs runs clients concurrent loops of acquire then release of new
// sessions for the plan's PairsDuration.
func (m *meter) pairs(ctx context.Context, clients int) (Throughput, error) {
	var mu sync.Mutex
	var lat []time.Duration
	var retries atomic.Int64
	_, elapsed, err := concurrently(ctx, clients, m.o.Plan.PairsDuration, func(ctx context.Context) error {
		// A pair has a deadline, as the floor's writes do and as a caller
		// serving a request of its own would.
		ctx, cancel := context.WithTimeout(ctx, requestTimeout)
		defer cancel()
		id := m.newID()
		start := time.Now()
		_, err := m.pool.GetContainer(ctx, id)
		d := time.Since(start)
		if err != nil {
			if client.IsRetryable(err) {
				// No warm container (a pool smaller than the clients):
				// not a pair, but not a failure of the run either.
				retries.Add(1)
				return sleep(ctx, time.Millisecond)
			}
			return err
		}
		if _, err := m.pool.ReleaseContainer(ctx, id); err != nil {
			return err
		}
		mu.Lock()
		lat = append(lat, d)
		mu.Unlock()
		return nil
	})
	if err != nil {
		return Throughput{}, err
	}
	pairs := len(lat)
	if pairs == 0 {
		return Throughput{}, fmt.Errorf("no pair completed in %s (%d retries)", elapsed.Round(time.Millisecond), retries.Load())
	}
	d := summarize(lat)
	return Throughput{
		Clients: clients, Pairs: pairs, PairsPerSec: round(float64(pairs)/elapsed.Seconds(), 0),
		AcquireP50: us(d.p50), AcquireP99: us(d.p99), Retries: int(retries.Load()), latencies: lat,
	}, nil
}

// mergeRounds sums rounds of one client count: the median round's pairs
// per second, the latencies of all.
func mergeRounds(rounds []Throughput) Throughput {
	t := Throughput{Clients: rounds[0].Clients}
	for _, r := range rounds {
		t.Pairs += r.Pairs
		t.Retries += r.Retries
		t.Rounds = append(t.Rounds, r.PairsPerSec)
		t.latencies = append(t.latencies, r.latencies...)
	}
	t.PairsPerSec = median(t.Rounds)
	d := summarize(slices.Clone(t.latencies))
	t.AcquireP50, t.AcquireP99 = us(d.p50), us(d.p99)
	return t
}

// median of v, the mean of the middle two for an even count.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(v))
	if n := len(s); n%2 == 0 {
		return round((s[n/2-1]+s[n/2])/2, 0)
	}
	return s[len(s)/2]
}

// httpClient opens a connection per request, as a session's first request
// to its container would: a pooled connection to a reused container would
// hide the connect.
var httpClient = &http.Client{
	Transport: &http.Transport{DisableKeepAlives: true},
	Timeout:   30 * time.Second,
}

// firstResponse times an acquire of a new session and a GET of its
// container, then releases it (not timed). It returns the time to the
// response and to the lease.
func firstResponse(ctx context.Context, p *client.Pool, id string) (total, acquire time.Duration, l messages.Lease, err error) {
	start := time.Now()
	l, err = p.GetContainer(ctx, id)
	acquire = time.Since(start)
	if err != nil {
		return 0, 0, l, err
	}
	// Any answer counts: it is the container answering, whatever its app
	// says to GET /.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(l.Endpoint, "/")+"/", nil)
	if err == nil {
		var resp *http.Response
		if resp, err = httpClient.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	total = time.Since(start)
	if _, rerr := p.ReleaseContainer(ctx, id); rerr != nil && err == nil {
		err = rerr
	}
	if err != nil {
		return 0, 0, l, fmt.Errorf("session %s at %s: %w", id, l.Endpoint, err)
	}
	return total, acquire, l, nil
}

func (m *meter) warmFirstResponses(ctx context.Context, pool *client.Pool, n int) ([]time.Duration, error) {
	var lat []time.Duration
	for range n {
		d, _, l, err := firstResponse(ctx, pool, m.newID())
		if err != nil {
			return nil, err
		}
		if l.Cold {
			return nil, fmt.Errorf("session %s found no warm container in pool %s", l.ID, pool.Name())
		}
		lat = append(lat, d)
	}
	return lat, nil
}

// coldFirstResponses times n first responses of new sessions of pool, each
// a cold start once prepare has returned.
func (m *meter) coldFirstResponses(ctx context.Context, pool *client.Pool, prepare func(context.Context) error, n int) (first, acquire []time.Duration, err error) {
	for range n {
		if err := prepare(ctx); err != nil {
			return nil, nil, err
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		d, a, l, err := firstResponse(cctx, pool, m.newID())
		cancel()
		if err != nil {
			return nil, nil, err
		}
		if !l.Cold {
			return nil, nil, fmt.Errorf("session %s was served warm by pool %s; want a cold start", l.ID, pool.Name())
		}
		first, acquire = append(first, d), append(acquire, a)
	}
	return first, acquire, nil
}

// timeN runs f warmupRounds times untimed, then n times, and returns what
// f measured.
func timeN(ctx context.Context, n int, f func(context.Context) (time.Duration, error)) ([]time.Duration, error) {
	lat := make([]time.Duration, 0, n)
	for i := range warmupRounds + n {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		d, err := f(ctx)
		if err != nil {
			return nil, err
		}
		if i >= warmupRounds {
			lat = append(lat, d)
		}
	}
	return lat, nil
}

// concurrently runs workers loops of f for d and returns how many calls
// succeeded and the time they took. The first error stops every loop.
func concurrently(ctx context.Context, workers int, d time.Duration, f func(context.Context) error) (int64, time.Duration, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var n atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil && time.Now().Before(deadline) {
				if err := f(ctx); err != nil {
					cancel(err)
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := context.Cause(ctx); err != nil {
		return 0, elapsed, err
	}
	return n.Load(), elapsed, nil
}
