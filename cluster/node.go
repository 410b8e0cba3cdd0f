package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/warmpool/warmpool/actors"
	"github.com/warmpool/warmpool/clock"
	"github.com/warmpool/warmpool/driver"
	"github.com/warmpool/warmpool/driver/docker"
	"github.com/warmpool/warmpool/driver/process"
	"github.com/warmpool/warmpool/messages"
)

// Defaults of a node's options.
const (
	DefaultDataDir    = "./warmpool-data"
	DefaultNATSListen = "127.0.0.1:4222"
)

// Options configure a node. Zero fields take the defaults.
type Options struct {
	// NodeID names the node in leases and logs. Default: the id kept in
	// DataDir/node-id, created on first start.
	NodeID string `json:"node_id"`
	// DataDir holds the node's state: its id and the embedded server's
	// JetStream store. Default ./warmpool-data.
	DataDir string `json:"data_dir"`
	// NATSURL connects to an existing NATS system instead of starting the
	// embedded server.
	NATSURL string `json:"nats_url"`
	// NATSWait is how long Start waits for NATSURL to take the connection,
	// for a NATS system that starts at the same time; default 0: one try.
	NATSWait time.Duration `json:"nats_wait"`
	// NATSListen is where the embedded server takes clients, host:port; a
	// port of -1 picks a free one. Default 127.0.0.1:4222.
	NATSListen string `json:"nats_listen"`
	// NATSClusterListen, NATSClusterName and NATSRoutes make the embedded
	// server one of a NATS cluster (see ServerOptions); then set Replicas
	// to 3 so that the buckets outlive a server.
	NATSClusterListen string   `json:"nats_cluster_listen,omitempty"`
	NATSClusterName   string   `json:"nats_cluster_name,omitempty"`
	NATSRoutes        []string `json:"nats_routes,omitempty"`
	// Pools are the pools the node runs; at least one.
	Pools []messages.PoolConfig `json:"pools"`
	// Logger gets the node's logs; default slog.Default().
	Logger *slog.Logger `json:"-"`
	// Drivers by name. The process driver is added when missing.
	Drivers map[string]driver.Driver `json:"-"`
	// Clock for the pools; default the wall clock.
	Clock clock.Clock `json:"-"`
	// OnExit says what Shutdown does with the containers: actors.ExitLeave
	// (default) keeps warm and acquired ones running, with their leases, for
	// the next start on the same data dir to adopt; actors.ExitStop stops
	// them all and ends every lease.
	OnExit actors.OnExit `json:"on_exit"`
	// SyncPeriodic turns off the embedded server's fsync of every write
	// (sync_interval: always, the default), leaving the server's periodic
	// sync: faster writes, but a machine crash may lose acknowledged leases.
	SyncPeriodic bool `json:"sync_periodic"`
	// Replicas of the lease and snapshot buckets; default 1 (R3 on a
	// three-server NATS cluster).
	Replicas int `json:"replicas"`
	// EventsMaxAge is how long the event stream keeps the pools' events;
	// default 24h (see EventStreamOptions).
	EventsMaxAge time.Duration `json:"events_max_age"`
	// EventsMaxBytes bounds the event stream's size, oldest events going
	// first; default no cap (EventsMaxAge bounds it). JetStream reserves a
	// cap on disk.
	EventsMaxBytes int64 `json:"events_max_bytes"`
	// HeartbeatInterval and DeadAfter: how often the node says it is alive,
	// and how long a silent node counts as live (defaults 1s and 5s). The
	// pools' warmTarget and maxInstances are shared among the live nodes.
	HeartbeatInterval time.Duration `json:"heartbeat_interval"`
	DeadAfter         time.Duration `json:"dead_after"`
	// Record, when set, is a file to record every pool's inputs to, for
	// `warmpool replay` (see actors.Replay). It is created or truncated.
	Record string `json:"record,omitempty"`
}

// Node is a running warmpool node.
type Node struct {
	opts    Options
	log     *slog.Logger
	srv     *server.Server // nil when NATSURL is set
	nc      *nats.Conn
	svc     micro.Service
	system  *actor.ActorSystem
	pools   map[string]*actors.Pool
	process *process.Driver
	// owned are the drivers the node made, finished on shutdown.
	owned    []ownedDriver
	recorder *actors.WriterRecorder
	leases   *LeaseKV
	members  *Membership

	shutdownOnce sync.Once
	shutdownErr  error

	draining  atomic.Bool
	drained   chan struct{} // closed when a draining node holds no lease
	drainOnce sync.Once
	url       string

	stopPurge context.CancelFunc
	// events publishes the pools' events; unlock frees the data dir.
	events *EventPublisher
	unlock func()
}

// purgeLoop keeps the buckets from growing with delete markers, and ends
// the leases nobody else will (sweepLeases).
func (n *Node) purgeLoop(ctx context.Context, leases *LeaseKV, slots *SnapshotKV) {
	t := time.NewTicker(purgeInterval)
	defer t.Stop()
	for first := true; ; first = false {
		pctx, cancel := context.WithTimeout(ctx, time.Minute)
		if err := purgeDeleted(pctx, leases, slots); err != nil && ctx.Err() == nil {
			n.log.Warn("purging delete markers failed", "err", err)
		}
		if !first {
			// Not at start: the membership has not heard the others yet.
			n.sweepLeases(pctx, time.Now())
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sweepGrace is how long past its expiry a lease must be for the sweep to
// end it: its holder, if it runs, reaps it long before.
const sweepGrace = 5 * time.Minute

// sweepLeases ends the stored leases that nobody else will end, each at its
// revision, and returns how many: leases of this node that its pool does
// not hold (orphans; see dropOrphan) and, by the live node with the lowest
// id, leases expired for over sweepGrace whose node is not live (a node
// that died while no other was up to revoke its leases, and never came
// back).
func (n *Node) sweepLeases(ctx context.Context, now time.Time) int {
	live := map[string]bool{}
	members := n.Members()
	for _, m := range members {
		live[m.Node] = true
	}
	first := len(members) > 0 && members[0].Node == n.opts.NodeID
	ended := 0
	for _, c := range n.opts.Pools {
		leases, err := n.leases.List(ctx, c.Name)
		if err != nil && len(leases) == 0 {
			n.log.Warn("listing leases to sweep failed", "pool", c.Name, "err", err)
			continue
		}
		for _, l := range leases {
			switch {
			case l.Record.Node == n.opts.NodeID:
				if n.dropOrphan(ctx, c.Name, l) {
					ended++
				}
			case first && !live[l.Record.Node] && now.Sub(l.Record.ExpiresAt) > sweepGrace:
				if err := n.leases.Delete(ctx, c.Name, l.Record.ID, l.Revision); err == nil {
					ended++
					n.log.Info("ended the expired lease of a node that is gone", "pool", c.Name, "session", l.Record.ID, "holder", l.Record.Node)
				}
			}
		}
	}
	return ended
}

// Start starts a node: the embedded NATS server (unless NATSURL is set), the
// pools, and the micro service. On error everything started is stopped.
func Start(ctx context.Context, o Options) (n *Node, err error) {
	if o.DataDir == "" {
		o.DataDir = DefaultDataDir
	}
	if o.NATSListen == "" {
		o.NATSListen = DefaultNATSListen
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Clock == nil {
		o.Clock = clock.Real()
	}
	switch o.OnExit {
	case "":
		o.OnExit = actors.ExitLeave
	case actors.ExitLeave, actors.ExitStop:
	default:
		return nil, fmt.Errorf("%w: on-exit %q must be %q or %q", messages.ErrConfigValidation, o.OnExit, actors.ExitLeave, actors.ExitStop)
	}
	if len(o.Pools) == 0 {
		return nil, fmt.Errorf("%w: no pool configured", messages.ErrConfigValidation)
	}
	if err := os.MkdirAll(o.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	if o.NodeID == "" {
		if o.NodeID, err = loadNodeID(o.DataDir); err != nil {
			return nil, err
		}
	}
	if err := validName("node", o.NodeID); err != nil {
		return nil, fmt.Errorf("%w: node id: %v", messages.ErrConfigValidation, err)
	}
	node := &Node{opts: o, log: o.Logger.With("node", o.NodeID), pools: map[string]*actors.Pool{}, drained: make(chan struct{})}
	n = node
	defer func() {
		if err != nil {
			// node, not n: a failing return has already set n to nil.
			sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_ = node.Shutdown(sctx)
			n = nil
		}
	}()
	if n.unlock, err = LockDataDir(o.DataDir); err != nil {
		return nil, err
	}
	drivers := map[string]driver.Driver{}
	for name, d := range o.Drivers {
		drivers[name] = d
	}
	if drivers[messages.DriverProcess] == nil {
		n.process = process.New(o.Logger)
		drivers[messages.DriverProcess] = n.process
		n.owned = append(n.owned, n.process)
	}
	if drivers[messages.DriverDocker] == nil && usesDriver(o.Pools, messages.DriverDocker) {
		// Only when a pool needs it: a node of process pools runs where no
		// Docker engine is.
		d, err := docker.New(ctx, o.Logger)
		if err != nil {
			return nil, err
		}
		drivers[messages.DriverDocker] = d
		n.owned = append(n.owned, d)
	}
	seen := map[string]bool{}
	for i, p := range o.Pools {
		p = p.WithDefaults()
		if err := p.Validate(); err != nil {
			return nil, err
		}
		if seen[p.Name] {
			return nil, fmt.Errorf("%w: pool %q is configured twice", messages.ErrConfigValidation, p.Name)
		}
		if drivers[p.Driver] == nil {
			return nil, fmt.Errorf("%w: pools.%s.driver: no %q driver on this node", messages.ErrConfigValidation, p.Name, p.Driver)
		}
		seen[p.Name] = true
		o.Pools[i] = p
	}

	if err := n.connect(ctx); err != nil {
		return nil, err
	}

	js, err := jetstream.New(n.nc)
	if err != nil {
		return nil, fmt.Errorf("JetStream: %w", err)
	}
	var leases *LeaseKV
	var snapshots *SnapshotKV
	if err := untilJetStream(ctx, "opening the buckets", func(ctx context.Context) (err error) {
		leases, snapshots, err = OpenStores(ctx, js, StoreOptions{Replicas: o.Replicas})
		return err
	}); err != nil {
		return nil, err
	}
	n.leases = leases
	if err := untilJetStream(ctx, "opening the event stream", func(ctx context.Context) error {
		_, err := OpenEventStream(ctx, js, EventStreamOptions{MaxAge: o.EventsMaxAge, MaxBytes: o.EventsMaxBytes, Replicas: o.Replicas})
		return err
	}); err != nil {
		return nil, err
	}
	if n.events, err = NewEventPublisher(js, EventPublisherOptions{Logger: n.log}); err != nil {
		return nil, err
	}

	var recorder actors.Recorder
	if o.Record != "" {
		f, err := os.Create(o.Record)
		if err != nil {
			return nil, fmt.Errorf("recording: %w", err)
		}
		n.recorder = actors.NewWriterRecorder(f)
		recorder = n.recorder
	}

	logger := n.log
	n.system = actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return logger.With("component", "actor")
	}))
	for i, p := range o.Pools {
		po := actors.PoolOptions{
			Config: p, Node: o.NodeID, Driver: drivers[p.Driver], Clock: o.Clock,
			Logger: o.Logger, Seed: uint64(time.Now().UnixNano()) + uint64(i),
			Leases: leases, Snapshots: snapshots, Recorder: recorder, Events: n.events,
		}
		// Recovery reads what the last run left: leases, snapshots, and the
		// containers that still run for this node.
		rec, err := actors.LoadRecovery(ctx, po)
		if err != nil {
			return nil, err
		}
		po.Recovery = &rec
		pool, err := actors.SpawnPool(n.system.Root, po)
		if err != nil {
			return nil, err
		}
		n.pools[p.Name] = pool
	}

	// Before the service: request handlers read n.members.
	if n.members, err = NewMembership(n.nc, MembershipOptions{
		Node: o.NodeID, Interval: o.HeartbeatInterval, DeadAfter: o.DeadAfter, Logger: o.Logger,
		Load: n.loads, OnChange: n.reshare, OnDead: n.revokeDead,
	}); err != nil {
		return nil, err
	}
	if err := n.serve(); err != nil {
		return nil, err
	}
	purgeCtx, stopPurge := context.WithCancel(context.Background())
	n.stopPurge = stopPurge
	go n.purgeLoop(purgeCtx, leases, snapshots)
	n.log.Info("warmpool serving", "nats", RedactURLs(n.url), "embedded", n.srv != nil, "pools", strings.Join(n.PoolNames(), ","))
	return n, nil
}

// connect starts the embedded server if needed and connects to NATS.
func (n *Node) connect(ctx context.Context) error {
	o := n.opts
	opts := []nats.Option{nats.Name("warmpool-node-" + o.NodeID), nats.MaxReconnects(-1)}
	if o.NATSURL != "" {
		// NATS may be starting too (a cluster brought up at once): wait for
		// it, if asked.
		wctx, cancel := context.WithTimeout(ctx, o.NATSWait)
		defer cancel()
		for try := 0; ; try++ {
			nc, err := nats.Connect(o.NATSURL, opts...)
			if err == nil {
				n.nc, n.url = nc, o.NATSURL
				return nil
			}
			if !errors.Is(err, nats.ErrNoServers) || o.NATSWait <= 0 {
				return fmt.Errorf("connecting to NATS at %s: %w", RedactURLs(o.NATSURL), err)
			}
			if try%20 == 0 {
				n.log.Info("waiting for NATS", "url", RedactURLs(o.NATSURL), "err", err)
			}
			select {
			case <-wctx.Done():
				return fmt.Errorf("connecting to NATS at %s: %w", RedactURLs(o.NATSURL), err)
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
	srv, err := StartServer(ctx, ServerOptions{
		Name:          "warmpool-" + o.NodeID,
		Listen:        o.NATSListen,
		StoreDir:      filepath.Join(o.DataDir, "jetstream"),
		SyncPeriodic:  o.SyncPeriodic,
		ClusterListen: o.NATSClusterListen,
		ClusterName:   o.NATSClusterName,
		Routes:        o.NATSRoutes,
	})
	if err != nil {
		return err
	}
	n.srv = srv
	n.url = srv.ClientURL()
	// The node talks to its own server in-process: no socket on the hot path.
	nc, err := nats.Connect(n.url, append(opts, nats.InProcessServer(srv))...)
	if err != nil {
		return fmt.Errorf("connecting to the embedded NATS server: %w", err)
	}
	n.nc = nc
	return nil
}

// ClientURL is where clients reach the node's NATS system.
func (n *Node) ClientURL() string { return n.url }

// ID is the node's id.
func (n *Node) ID() string { return n.opts.NodeID }

// Pool returns the named pool's handle, or nil.
func (n *Node) Pool(name string) *actors.Pool { return n.pools[name] }

// PoolNames lists the node's pools, in config order.
func (n *Node) PoolNames() []string {
	names := make([]string, 0, len(n.opts.Pools))
	for _, p := range n.opts.Pools {
		names = append(names, p.Name)
	}
	return names
}

// Shutdown stops the node in order: stop taking requests; stop the pools
// (acquires waiting for a container fail as not ready, lease writes in
// flight land, final snapshots are written, and containers are left running
// or stopped as OnExit says); publish the pools' last events; drain the NATS
// connection; stop the embedded server; free the data dir. ctx bounds the
// wait.
func (n *Node) Shutdown(ctx context.Context) error {
	n.shutdownOnce.Do(func() { n.shutdownErr = n.shutdown(ctx) })
	return n.shutdownErr
}

// shutdown is Shutdown's one run; Shutdown may be called again.
func (n *Node) shutdown(ctx context.Context) error {
	var errs []error
	if n.members != nil {
		// The others take over this node's share at once.
		if err := n.members.Leave(ctx); err != nil {
			n.members.Close()
		}
	}
	if n.stopPurge != nil {
		n.stopPurge()
	}
	if n.svc != nil {
		if err := n.svc.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("stopping the service: %w", err))
		}
	}
	onExit := n.opts.OnExit
	if n.draining.Load() {
		onExit = actors.ExitStop // its share is gone: nothing to come back to
	}
	for _, name := range n.PoolNames() {
		if p := n.pools[name]; p != nil {
			if err := p.Stop(ctx, onExit); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// The drivers' last word: what the pools left running is either left
	// for the next start (leave) or stopped, bounded.
	for _, d := range n.owned {
		if onExit == actors.ExitLeave {
			d.Detach()
			continue
		}
		kctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := d.Close(kctx); err != nil {
			errs = append(errs, fmt.Errorf("stopping containers: %w", err))
		}
		cancel()
	}
	if n.system != nil {
		n.system.Shutdown()
	}
	if n.recorder != nil {
		if err := n.recorder.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing the recording: %w", err))
		}
	}
	// After the pools, whose last events it publishes; before the drain.
	if n.events != nil {
		if err := n.events.Close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if n.nc != nil {
		done := make(chan struct{})
		n.nc.SetClosedHandler(func(*nats.Conn) { close(done) })
		if err := n.nc.Drain(); err != nil {
			n.nc.Close()
		} else {
			select {
			case <-done:
			case <-ctx.Done():
				n.nc.Close()
			}
		}
	}
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
	}
	if n.unlock != nil {
		n.unlock()
	}
	n.log.Info("warmpool stopped")
	return errors.Join(errs...)
}

// loads is what the node's heartbeat says of its pools.
func (n *Node) loads() map[string]PoolLoad {
	out := map[string]PoolLoad{}
	for name, p := range n.pools {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		st, err := p.Stats(ctx)
		cancel()
		if err == nil {
			out[name] = PoolLoad{Warm: st.Warm, Warming: st.Warming, Acquired: st.Acquired, Draining: st.Draining, Total: st.Total}
		}
	}
	return out
}

// reshare gives every pool its share of the cluster-wide figures when the
// live nodes change. Every node computes the same split from the same set.
func (n *Node) reshare(live []string) {
	if n.draining.Load() {
		live = slices.DeleteFunc(slices.Clone(live), func(id string) bool { return id == n.opts.NodeID })
	}
	for _, c := range n.opts.Pools {
		if p := n.pools[c.Name]; p != nil {
			p.Send(messages.SetShare{
				WarmTarget:   Share(c.WarmTarget, live, n.opts.NodeID),
				MaxInstances: Share(c.MaxInstances, live, n.opts.NodeID),
				Nodes:        len(live),
			})
		}
	}
	n.log.Info("live nodes changed", "nodes", strings.Join(live, ","))
}

// revokeDead ends the leases of a node declared dead, so that its sessions
// get new containers at their next acquire. One node does it, the live one
// with the lowest id, so that the deletes do not race; each delete is at
// the lease's revision, so a lease the node renewed after all (it was only
// slow) is kept. A node that comes back finds its leases gone and stops the
// containers they held.
func (n *Node) revokeDead(dead string) {
	live := n.Members()
	if len(live) == 0 || live[0].Node != n.opts.NodeID || n.leases == nil {
		return
	}
	if n.answers(dead) {
		// Its heartbeats stopped reaching us, but it runs: its leases
		// stay. Its next heartbeat makes it live again.
		n.log.Warn("a node declared dead still answers; its leases are kept", "member", dead)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, c := range n.opts.Pools {
		leases, err := n.leases.List(ctx, c.Name)
		if err != nil && len(leases) == 0 {
			n.log.Warn("listing leases to revoke failed", "pool", c.Name, "dead", dead, "err", err)
			continue
		}
		revoked := 0
		for _, l := range leases {
			if l.Record.Node == dead && n.leases.Delete(ctx, c.Name, l.Record.ID, l.Revision) == nil {
				revoked++
			}
		}
		n.log.Warn("revoked a dead node's leases", "pool", c.Name, "dead", dead, "revoked", revoked)
	}
}

// Drain makes the node stop taking new sessions: its share of every pool
// goes to the other nodes, new sessions that reach it are sent to them, and
// its sessions are served until their leases end (released or expired).
// Drained is closed then; the node should then shut down (serve does),
// stopping its containers.
func (n *Node) Drain() {
	if n.draining.Swap(true) {
		return
	}
	n.log.Info("draining: no new sessions; leaving when the last lease ends")
	if n.members != nil {
		n.members.SetDraining()
	}
	for _, c := range n.opts.Pools {
		if p := n.pools[c.Name]; p != nil {
			p.Send(messages.SetShare{})
		}
	}
	go func() {
		for {
			held := 0
			for _, p := range n.pools {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				st, err := p.Stats(ctx)
				cancel()
				if err != nil {
					held = -1
					break
				}
				held += st.Acquired + st.Waiting
			}
			if held == 0 {
				n.drainOnce.Do(func() { close(n.drained) })
				n.log.Info("drained: no lease is left")
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
}

// Drained is closed once a draining node holds no lease.
func (n *Node) Drained() <-chan struct{} { return n.drained }

// Members lists the live nodes, this one included.
func (n *Node) Members() []Member {
	if n.members == nil {
		return nil
	}
	return n.members.Live()
}

// ownedDriver is a driver the node made and finishes: Detach leaves its
// containers running, Close stops them.
type ownedDriver interface {
	Detach()
	Close(context.Context) error
}

func usesDriver(pools []messages.PoolConfig, name string) bool {
	for _, p := range pools {
		if p.WithDefaults().Driver == name {
			return true
		}
	}
	return false
}

// loadNodeID reads the node's id from its data dir, creating it on first use
// so that a node keeps its identity across restarts.
func loadNodeID(dir string) (string, error) {
	path := filepath.Join(dir, "node-id")
	b, err := os.ReadFile(path)
	if err == nil {
		if id := strings.TrimSpace(string(b)); id != "" {
			return id, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("reading the node id: %w", err)
	}
	id := "node-" + uuid.NewString()[:8]
	if err := os.WriteFile(path, []byte(id+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("writing the node id: %w", err)
	}
	return id, nil
}

// RedactURLs hides the credentials in a comma-separated list of NATS URLs,
// which logs, reports and error messages repeat: the whole user info goes
// (in nats://TOKEN@host the secret is the user name).
func RedactURLs(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if at := strings.LastIndex(p, "@"); at >= 0 {
			if scheme := strings.Index(p, "://"); scheme >= 0 && scheme < at {
				parts[i] = p[:scheme+3] + "xxxxx" + p[at:]
			} else {
				parts[i] = "xxxxx" + p[at:]
			}
		}
	}
	return strings.Join(parts, ",")
}
