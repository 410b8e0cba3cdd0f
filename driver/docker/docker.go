package docker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/warmpool/warmpool/driver"
	"github.com/warmpool/warmpool/messages"
)

// The labels the driver puts on every container. List finds a node's
// containers by them, and they are how an operator finds them too:
//
//	docker ps --filter label=io.warmpool.node=node-1
const (
	LabelManaged = "io.warmpool.managed" // "true"
	LabelPool    = "io.warmpool.pool"
	LabelNode    = "io.warmpool.node"
	LabelSlot    = "io.warmpool.slot"
	// LabelPort is the container port (the host port is Docker's choice);
	// Adopt reads the host port published for it.
	LabelPort = "io.warmpool.port"
	// LabelReadyPath is the template's ReadyPath, so that an adopted
	// container is probed as its starter probed it.
	LabelReadyPath = "io.warmpool.ready-path"
)

// The variables the driver gives every container.
const (
	envPort = "PORT"
	envSlot = "WARMPOOL_SLOT"
	envPool = "WARMPOOL_POOL"
	envNode = "WARMPOOL_NODE"
)

// Timings of probes and cleanup.
const (
	// pollInterval is the pause between readiness probes of the port.
	pollInterval = 50 * time.Millisecond
	// healthPoll is the pause between inspections for the health status.
	// Docker runs the check itself at the image's interval.
	healthPoll = 100 * time.Millisecond
	// probeTimeout bounds one probe.
	probeTimeout = 500 * time.Millisecond
	// proxySettle is how long a TCP probe keeps its connection open to see
	// whether docker-proxy closes it: it does so at once (well under a
	// millisecond here) when nothing listens in the container.
	proxySettle = 100 * time.Millisecond
	// checkEvery is how often Ready inspects a container whose port does
	// not answer yet, in case its exit was missed (the event stream down).
	checkEvery = time.Second
	// apiTimeout bounds the calls that clean up or describe a container
	// without a caller's context: inspect, logs, remove.
	apiTimeout = 30 * time.Second
	// Backoff of the event stream's reopening.
	eventsBackoffMin = 100 * time.Millisecond
	eventsBackoffMax = 5 * time.Second
	// logLines is how many of a container's last log lines an exit reason
	// carries; logLineMax cuts each.
	logLines   = 20
	logLineMax = 512
)

// ErrClosed is returned by Start and Adopt once Close or Detach has been
// called, and by Ready, Wait and Stop calls in flight when Detach forgets
// their container.
var ErrClosed = errors.New("docker driver is closed")

// ErrUnreachable is wrapped by New when the Docker daemon does not answer.
var ErrUnreachable = errors.New("cannot reach the Docker daemon")

// ErrImageMissing is wrapped by Start when the template's image is not on
// the machine. The driver never pulls: build the image here.
var ErrImageMissing = errors.New("image is not present on this machine")

// imageMissingError names the image; it matches ErrImageMissing.
type imageMissingError struct{ image string }

func (e imageMissingError) Error() string {
	return fmt.Sprintf("docker: image %q is not present on this machine and cannot be pulled here; build it (e.g. make image)", e.image)
}

func (e imageMissingError) Is(target error) bool { return target == ErrImageMissing }

// Option configures New.
type Option func(*options)

type options struct {
	host string
}

// WithHost connects to the daemon at host (unix:///var/run/docker.sock,
// tcp://127.0.0.1:2375, ...) instead of $DOCKER_HOST or the default.
func WithHost(host string) Option {
	return func(o *options) { o.host = host }
}

// Driver runs containers with Docker. It implements driver.Driver and is
// safe for concurrent use. Create it with New, and on shutdown either Close
// it (stop and remove every container) or Detach it (leave them running for
// the next run of the node to List and Adopt).
//
// A container that exits by itself stays tracked, and stays on the engine,
// so that Wait and Ready can say how it ended, until Stop removes it.
type Driver struct {
	cli  *client.Client
	log  *slog.Logger
	http *http.Client

	mu       sync.Mutex
	ctrs     map[string]*ctr // by container id
	closed   bool
	detached chan struct{} // closed by Detach

	// bgCtx ends the event stream and exit notices on Close and Detach; bg
	// counts their goroutines. Add only while !closed (or in New).
	bgCtx    context.Context
	bgCancel context.CancelFunc
	bg       sync.WaitGroup

	// breakEvents ends the current event stream, as a daemon restart
	// would (tests); d.mu guards it. minBackoff is the least wait before
	// the stream is reopened (tests lengthen it).
	breakEvents context.CancelFunc
	minBackoff  atomic.Int64
	// creating counts Starts between ContainerCreate and tracking.
	creating atomic.Int64
}

var _ driver.Driver = (*Driver)(nil)

// ctr is one container the driver started or adopted.
type ctr struct {
	id        string
	name      string
	port      int    // the host port; 0 if none was published (it exited first)
	addr      string // 127.0.0.1:port for the TCP probe
	readyPath string // the template's ReadyPath; empty for the TCP probe
	readyURL  string // readyPath on the host port
	health    bool   // the image has a HEALTHCHECK: Ready waits for "healthy"
	log       *slog.Logger
	startedAt time.Time

	// startID is State.StartedAt. Start sets it after it has tracked the
	// container, which an exit notice may already be describing.
	mu      sync.Mutex
	startID string

	// noting is set while (or once) an exit notice runs, so that events and
	// inspections that all see the exit describe it once.
	noting   atomic.Bool
	done     chan struct{} // closed once the container has exited and exit is set
	exit     driver.Exit   // written before done is closed, read after
	doneOnce sync.Once
}

// finish records how the container ended, once.
func (c *ctr) finish(e driver.Exit) {
	c.doneOnce.Do(func() {
		c.exit = e
		close(c.done)
	})
}

func (c *ctr) getStartID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.startID
}

func (c *ctr) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

func (c *ctr) exitedErr() error {
	return fmt.Errorf("%w before it was ready: container %s %s", driver.ErrExited, c.name, c.exit.Reason)
}

// New connects to the Docker daemon named by the environment (DOCKER_HOST
// and friends, as the docker CLI reads them) or by WithHost, negotiates the
// API version, and starts the driver's event stream. It fails with an error
// wrapping ErrUnreachable, naming the daemon's address, when the daemon
// does not answer. The driver logs to logger (nothing when nil).
func New(ctx context.Context, logger *slog.Logger, opts ...Option) (*Driver, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cli, ping, err := dial(ctx, opts)
	if err != nil {
		return nil, err
	}
	d := &Driver{
		cli: cli,
		log: logger,
		http: &http.Client{
			Transport: &http.Transport{
				// A container's endpoint is local: never go through a proxy,
				// and keep no idle connections to containers that may be
				// stopped at any time.
				Proxy:             nil,
				DisableKeepAlives: true,
			},
			// Readiness means this path answers 2xx itself.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		ctrs:     make(map[string]*ctr),
		detached: make(chan struct{}),
	}
	d.bgCtx, d.bgCancel = context.WithCancel(context.Background())
	d.minBackoff.Store(int64(eventsBackoffMin))
	subscribed := make(chan struct{})
	d.bg.Add(1)
	go d.watchEvents(subscribed)
	select {
	case <-subscribed:
	case <-ctx.Done():
		d.bgCancel()
		d.bg.Wait()
		_ = cli.Close()
		return nil, ctx.Err()
	}
	logger.Debug("docker driver connected", "host", cli.DaemonHost(), "api", cli.ClientVersion(), "daemon_api", ping.APIVersion)
	return d, nil
}

// dial makes a client of the daemon opts name (else the environment's)
// and negotiates the API version with it.
func dial(ctx context.Context, opts []Option) (*client.Client, client.PingResult, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	copts := []client.Opt{client.FromEnv}
	if o.host != "" {
		copts = append(copts, client.WithHost(o.host))
	}
	cli, err := client.New(copts...)
	if err != nil {
		return nil, client.PingResult{}, fmt.Errorf("docker: client: %w", err)
	}
	ping, err := cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true})
	if err != nil {
		_ = cli.Close()
		if cerrdefs.IsInvalidArgument(err) {
			// The daemon answered with an API version the client cannot speak.
			return nil, client.PingResult{}, fmt.Errorf("docker: the daemon at %s is too old: %w", cli.DaemonHost(), err)
		}
		return nil, client.PingResult{}, fmt.Errorf("docker: %w at %s: %w", ErrUnreachable, cli.DaemonHost(), connectCause(err))
	}
	return cli, ping, nil
}

// ImagePresent reports whether the Docker daemon (as New finds it) answers
// and has image: nil if so, else an error wrapping ErrUnreachable or
// ErrImageMissing.
func ImagePresent(ctx context.Context, image string, opts ...Option) error {
	cli, _, err := dial(ctx, opts)
	if err != nil {
		return err
	}
	defer cli.Close()
	switch _, err := cli.ImageInspect(ctx, image); {
	case cerrdefs.IsNotFound(err):
		return imageMissingError{image}
	case err != nil:
		return fmt.Errorf("docker: inspect image %q: %w", image, err)
	}
	return nil
}

// connectCause returns the network error under a failed connection, which
// says what went wrong without repeating the address, or else err.
func connectCause(err error) error {
	var op *net.OpError
	if errors.As(err, &op) {
		return op
	}
	return err
}

// Start creates and starts a container of spec.Template.Docker.Image and
// returns once it runs; use Ready to wait for it to answer.
//
// The container gets spec.Template.Env, then Docker.Env (which wins), then
// PORT (the container port), WARMPOOL_SLOT, WARMPOOL_POOL and WARMPOOL_NODE
// in its environment; the labels (see LabelManaged); the container port
// published on 127.0.0.1 with a random host port; the memory and CPU
// limits; and the network, if the template names one ("host" publishes
// nothing: the container port is then the host port). Its name is
// warmpool-<pool>-<the slot's first 8 characters>, with a random suffix if
// that is taken.
//
// The image is never pulled: if it is not on the machine, Start fails with
// an error wrapping ErrImageMissing. If anything fails after the container
// was created, the container is removed.
//
// The handle's StartID is the container's State.StartedAt, and its
// Endpoint is http://127.0.0.1:<host port>. A container that exits before
// its port could be read still gets a handle, without a port: Ready then
// reports the exit.
func (d *Driver) Start(ctx context.Context, spec driver.Spec) (driver.Handle, error) {
	if err := ctx.Err(); err != nil {
		return driver.Handle{}, err
	}
	t := spec.Template
	dt := t.Docker
	if dt == nil || dt.Image == "" {
		return driver.Handle{}, errors.New("docker: the template has no docker image")
	}
	cport := dt.Port
	if cport == 0 {
		cport = messages.DefaultDockerPort
	}
	if cport < 1 || cport > 65535 {
		return driver.Handle{}, fmt.Errorf("docker: port %d is not a port (1..65535)", cport)
	}
	if err := checkReadyPath(t.ReadyPath); err != nil {
		return driver.Handle{}, err
	}
	if dt.Network == "none" {
		return driver.Handle{}, errors.New(`docker: network "none" would leave the container unreachable`)
	}
	env, err := environ(spec, cport)
	if err != nil {
		return driver.Handle{}, err
	}
	if d.isClosed() {
		return driver.Handle{}, ErrClosed
	}

	img, err := d.cli.ImageInspect(ctx, dt.Image)
	switch {
	case cerrdefs.IsNotFound(err):
		return driver.Handle{}, imageMissingError{dt.Image}
	case err != nil:
		return driver.Handle{}, fmt.Errorf("docker: inspect image %q: %w", dt.Image, err)
	}

	port, _ := network.PortFrom(uint16(cport), network.TCP)
	labels := map[string]string{
		LabelManaged: "true",
		LabelPool:    spec.Pool,
		LabelNode:    spec.Node,
		LabelSlot:    spec.Slot,
		LabelPort:    strconv.Itoa(cport),
	}
	if t.ReadyPath != "" {
		labels[LabelReadyPath] = t.ReadyPath
	}
	cfg := &container.Config{
		Image:        dt.Image,
		Cmd:          dt.Command, // nil keeps the image's CMD
		Env:          env,
		Labels:       labels,
		ExposedPorts: network.PortSet{port: {}},
	}
	hostNet := dt.Network == "host"
	hc := &container.HostConfig{
		NetworkMode: container.NetworkMode(dt.Network),
		Resources: container.Resources{
			Memory:   int64(dt.MemoryMB) << 20,
			NanoCPUs: int64(math.Round(dt.CPUs * 1e9)),
		},
	}
	if !hostNet {
		// An empty HostPort makes Docker choose a free one.
		hc.PortBindings = network.PortMap{port: {{HostIP: netip.AddrFrom4([4]byte{127, 0, 0, 1})}}}
	}

	// The create is not cut short by ctx: a request the daemon has already
	// carried out would leave a container whose id we never learn.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), apiTimeout)
	defer cancel()
	// Until the container is tracked, List must not take it for garbage.
	d.creating.Add(1)
	defer d.creating.Add(-1)
	name := containerName(spec.Pool, spec.Slot)
	created, err := d.cli.ContainerCreate(cctx, client.ContainerCreateOptions{Config: cfg, HostConfig: hc, Name: name})
	if cerrdefs.IsConflict(err) {
		// The name is taken: a slot id that shares its first 8 characters,
		// or a container left from an earlier run that List has not
		// removed yet.
		name += "-" + randomHex(4)
		created, err = d.cli.ContainerCreate(cctx, client.ContainerCreateOptions{Config: cfg, HostConfig: hc, Name: name})
	}
	if err == nil && ctx.Err() != nil {
		_ = d.removeID(cctx, created.ID)
		return driver.Handle{}, ctx.Err()
	}
	if err != nil {
		if cerrdefs.IsNotFound(err) && dt.Network != "" {
			return driver.Handle{}, fmt.Errorf("docker: create container %s (is there a network %q?): %w", name, dt.Network, err)
		}
		return driver.Handle{}, fmt.Errorf("docker: create container %s from %q: %w", name, dt.Image, err)
	}
	c := &ctr{
		id:        created.ID,
		name:      name,
		log:       d.log.With("pool", spec.Pool, "slot", spec.Slot, "node", spec.Node, "container", name),
		done:      make(chan struct{}),
		readyPath: t.ReadyPath,
	}
	for _, w := range created.Warnings {
		c.log.Warn("docker warns about the container", "warning", w)
	}
	c.health = img.Config != nil && hasHealthcheck(img.Config.Healthcheck)

	// Tracked before it starts, so that an exit at once is noticed from the
	// event stream.
	if err := d.track(c); err != nil {
		d.remove(c)
		return driver.Handle{}, err
	}
	ok := false
	defer func() {
		if !ok {
			d.forget(c)
			d.remove(c)
		}
	}()

	if _, err := d.cli.ContainerStart(ctx, c.id, client.ContainerStartOptions{}); err != nil {
		return driver.Handle{}, fmt.Errorf("docker: start container %s: %w", name, err)
	}
	insp, err := d.cli.ContainerInspect(ctx, c.id, client.ContainerInspectOptions{})
	if err != nil {
		return driver.Handle{}, fmt.Errorf("docker: inspect container %s: %w", name, err)
	}
	st := insp.Container.State
	if st == nil {
		return driver.Handle{}, fmt.Errorf("docker: container %s has no state", name)
	}
	c.mu.Lock()
	c.startID = st.StartedAt
	c.mu.Unlock()
	c.startedAt, _ = time.Parse(time.RFC3339Nano, st.StartedAt)
	if c.startedAt.IsZero() {
		c.startedAt = time.Now()
	}
	c.health = c.health || st.Health != nil
	if hostNet {
		c.setPort(cport)
	} else {
		c.setPort(hostPort(insp.Container.NetworkSettings, port))
	}
	if c.port == 0 && st.Running {
		return driver.Handle{}, fmt.Errorf("docker: container %s publishes no host port for %s", name, port)
	}
	if !st.Running {
		// It exited already (Docker clears its ports then); Ready says how.
		d.noteExit(c, -1)
	}
	ok = true
	c.log.Debug("container started", "image", dt.Image, "id", shortID(c.id), "port", c.port)
	return c.handle(), nil
}

// setPort sets the host port and what is derived from it.
func (c *ctr) setPort(port int) {
	c.port = port
	if port == 0 {
		return
	}
	c.addr = "127.0.0.1:" + strconv.Itoa(port)
	if c.readyPath != "" {
		c.readyURL = "http://" + c.addr + c.readyPath
	}
}

func (c *ctr) handle() driver.Handle {
	h := driver.Handle{ID: c.id, Port: c.port, StartID: c.startID, StartedAt: c.startedAt}
	if c.port != 0 {
		h.Endpoint = "http://" + c.addr
	}
	return h
}

// checkReadyPath verifies that p, if set, is a URL path.
func checkReadyPath(p string) error {
	if p == "" {
		return nil
	}
	u, err := url.Parse("http://127.0.0.1:1" + p)
	if err != nil || !strings.HasPrefix(p, "/") || u.Host != "127.0.0.1:1" {
		return fmt.Errorf("docker: readyPath %q is not a URL path", p)
	}
	return nil
}

// hasHealthcheck reports whether hc is a HEALTHCHECK that is not disabled.
func hasHealthcheck(hc *container.HealthConfig) bool {
	return hc != nil && len(hc.Test) > 0 && hc.Test[0] != "NONE"
}

// hostPort returns the host port published for port, or 0.
func hostPort(ns *container.NetworkSettings, port network.Port) int {
	if ns == nil {
		return 0
	}
	for _, b := range ns.Ports[port] {
		if p, err := strconv.Atoi(b.HostPort); err == nil && p > 0 {
			return p
		}
	}
	return 0
}

// containerName is warmpool-<pool>-<slot's first 8 characters>, with what
// Docker does not allow in a name replaced.
func containerName(pool, slot string) string {
	s := []rune(slot)
	if len(s) > 8 {
		s = s[:8]
	}
	clean := func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '-' {
			return r
		}
		return '-'
	}
	return "warmpool-" + strings.Map(clean, pool) + "-" + strings.Map(clean, string(s))
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// environ is the container's environment: the template's, the Docker
// section's, then the driver's variables, which no template can override.
func environ(spec driver.Spec, port int) ([]string, error) {
	m := make(map[string]string)
	for _, src := range []map[string]string{spec.Template.Env, spec.Template.Docker.Env} {
		for k, v := range src {
			if k == "" || strings.ContainsAny(k, "=\x00") {
				return nil, fmt.Errorf("docker: env name %q is not valid", k)
			}
			m[k] = v
		}
	}
	m[envPort] = strconv.Itoa(port)
	m[envSlot] = spec.Slot
	m[envPool] = spec.Pool
	m[envNode] = spec.Node
	env := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		env = append(env, k+"="+m[k])
	}
	return env, nil
}

// track adds c, unless the driver is closed.
func (d *Driver) track(c *ctr) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	d.ctrs[c.id] = c
	return nil
}

func (d *Driver) lookup(id string) *ctr {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ctrs[id]
}

// forget drops c.
func (d *Driver) forget(c *ctr) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ctrs[c.id] == c {
		delete(d.ctrs, c.id)
	}
}

func (d *Driver) isClosed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.closed
}

// Ready waits until the container is ready: healthy, if its image has a
// HEALTHCHECK; else answering on its published port (an HTTP GET of the
// template's ReadyPath answering 2xx, or a TCP connection that stays open).
// It returns an error wrapping driver.ErrExited, with the exit status and
// the last log lines, if the container exits first, and ctx's error, with
// the last probe's or health check's result, if ctx ends first.
func (d *Driver) Ready(ctx context.Context, h driver.Handle) error {
	c := d.lookup(h.ID)
	if c == nil {
		return fmt.Errorf("docker: %w: %q", driver.ErrUnknownContainer, h.ID)
	}
	if c.health {
		return d.readyHealthy(ctx, c)
	}
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	lastCheck := time.Now()
	for {
		if c.exited() {
			return c.exitedErr()
		}
		err := d.probe(ctx, c)
		if err == nil {
			return nil
		}
		if time.Since(lastCheck) >= checkEvery {
			d.check(ctx, c)
			lastCheck = time.Now()
		}
		select {
		case <-c.done:
			return c.exitedErr()
		case <-ctx.Done():
			return fmt.Errorf("container %s not ready (last probe: %v): %w", c.name, err, ctx.Err())
		case <-d.detached:
			return fmt.Errorf("container %s: %w", c.name, ErrClosed)
		case <-tick.C:
		}
	}
}

// readyHealthy polls the container's health status until it is healthy.
// An unhealthy container may still turn healthy, so only ctx ends the wait.
func (d *Driver) readyHealthy(ctx context.Context, c *ctr) error {
	tick := time.NewTicker(healthPoll)
	defer tick.Stop()
	last := "no health status yet"
	for {
		if c.exited() {
			return c.exitedErr()
		}
		insp, err := d.cli.ContainerInspect(ctx, c.id, client.ContainerInspectOptions{})
		switch {
		case cerrdefs.IsNotFound(err):
			d.noteGone(c, -1)
		case err != nil && ctx.Err() == nil:
			last = "inspect: " + err.Error()
		case err != nil:
		case insp.Container.State == nil:
		case !insp.Container.State.Running:
			d.noteExit(c, -1)
		case insp.Container.State.Health == nil:
			last = "no health status"
		default:
			hs := insp.Container.State.Health
			if hs.Status == container.Healthy {
				return nil
			}
			last = "health " + string(hs.Status)
			if n := len(hs.Log); n > 0 {
				r := hs.Log[n-1]
				last += fmt.Sprintf(", last check exited %d: %s", r.ExitCode, strings.TrimSpace(r.Output))
			}
		}
		select {
		case <-c.done:
			return c.exitedErr()
		case <-ctx.Done():
			return fmt.Errorf("container %s not ready (%s): %w", c.name, last, ctx.Err())
		case <-d.detached:
			return fmt.Errorf("container %s: %w", c.name, ErrClosed)
		case <-tick.C:
		}
	}
}

// probe tries once whether c answers on its published port.
func (d *Driver) probe(ctx context.Context, c *ctr) error {
	if c.port == 0 {
		return errors.New("no published port")
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	if c.readyPath == "" {
		var dialer net.Dialer
		conn, err := dialer.DialContext(ctx, "tcp", c.addr)
		if err != nil {
			return err
		}
		defer conn.Close()
		// docker-proxy accepted; it closes the connection at once if it
		// cannot reach the container's port. A connection still open after
		// proxySettle (or one the server spoke on) reached a listener.
		_ = conn.SetReadDeadline(time.Now().Add(proxySettle))
		var b [1]byte
		_, err = conn.Read(b[:])
		var ne net.Error
		if err == nil || errors.As(err, &ne) && ne.Timeout() {
			return nil
		}
		return fmt.Errorf("connection closed at once (nothing listens on port %s in the container?): %w", c.addr, err)
	}
	return driver.ProbeHTTP(ctx, d.http, c.readyURL)
}

// Wait blocks until the container exits and says how (its exit status and
// last log lines), or until ctx ends.
func (d *Driver) Wait(ctx context.Context, h driver.Handle) (driver.Exit, error) {
	c := d.lookup(h.ID)
	if c == nil {
		return driver.Exit{}, fmt.Errorf("docker: %w: %q", driver.ErrUnknownContainer, h.ID)
	}
	select {
	case <-c.done:
		return c.exit, nil
	case <-ctx.Done():
		return driver.Exit{}, ctx.Err()
	case <-d.detached:
		return driver.Exit{}, fmt.Errorf("container %s: %w", c.name, ErrClosed)
	}
}

// Stop stops the container (ContainerStop: SIGTERM, or the image's
// STOPSIGNAL, then SIGKILL after grace, rounded up to whole seconds; at
// once with grace <= 0) and removes it with its anonymous volumes. If ctx
// ends during the grace period the container is removed by force at once:
// Stop never returns leaving it running on purpose. The driver forgets the
// handle once the container is gone.
//
// Stopping a container that already exited, or was removed, is not an
// error, and neither is an unknown handle: Stop is idempotent, so that
// retries after a lost reply are harmless. An unknown handle whose
// container still exists with the LabelManaged label (an earlier run's,
// not adopted) is stopped and removed all the same.
func (d *Driver) Stop(ctx context.Context, h driver.Handle, grace time.Duration) error {
	c := d.lookup(h.ID)
	if c == nil {
		return d.stopUntracked(ctx, h, grace)
	}
	if err := d.stop(ctx, c, grace); err != nil {
		return err
	}
	d.forget(c)
	return nil
}

// stop ends c and removes it; it does not forget c.
func (d *Driver) stop(ctx context.Context, c *ctr, grace time.Duration) error {
	if !c.exited() {
		secs := max(int(math.Ceil(grace.Seconds())), 0)
		_, err := d.cli.ContainerStop(ctx, c.id, client.ContainerStopOptions{Timeout: &secs})
		switch {
		case err == nil, cerrdefs.IsNotFound(err):
		case ctx.Err() != nil:
			c.log.Warn("stop interrupted; removing the container by force", "err", ctx.Err())
		default:
			c.log.Warn("cannot stop the container; removing it by force", "err", err)
		}
	}
	// Removal must happen even when ctx has ended: a force removal kills.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), apiTimeout)
	defer cancel()
	var exit driver.Exit
	if !c.exited() {
		if exit = d.describeExit(rctx, c, -1, false); exit.Code == -2 {
			exit = driver.Exit{Code: -1, Reason: "was removed while running"}
		}
	}
	if err := d.removeID(rctx, c.id); err != nil {
		return fmt.Errorf("docker: remove container %s: %w", c.name, err)
	}
	c.finish(exit)
	c.log.Debug("container removed")
	return nil
}

// stopUntracked stops and removes a container the driver does not track,
// if it is one of ours.
func (d *Driver) stopUntracked(ctx context.Context, h driver.Handle, grace time.Duration) error {
	if h.ID == "" {
		return nil
	}
	insp, err := d.cli.ContainerInspect(ctx, h.ID, client.ContainerInspectOptions{})
	if cerrdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("docker: inspect container %s: %w", shortID(h.ID), err)
	}
	cfg := insp.Container.Config
	if cfg == nil || cfg.Labels[LabelManaged] != "true" {
		return nil
	}
	c := &ctr{
		id:   insp.Container.ID,
		name: strings.TrimPrefix(insp.Container.Name, "/"),
		log:  d.log.With("container", strings.TrimPrefix(insp.Container.Name, "/")),
		done: make(chan struct{}),
	}
	return d.stop(ctx, c, grace)
}

// remove removes c by force, for the cleanup of a failed Start or Adopt.
func (d *Driver) remove(c *ctr) {
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	if err := d.removeID(ctx, c.id); err != nil {
		c.log.Warn("cannot remove the container", "err", err)
	}
	c.finish(driver.Exit{Code: -1, Reason: "was removed"})
}

// removeID removes a container by force, with its anonymous volumes. A
// container that is gone, or being removed already, is not an error.
func (d *Driver) removeID(ctx context.Context, id string) error {
	_, err := d.cli.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	if err == nil || cerrdefs.IsNotFound(err) ||
		cerrdefs.IsConflict(err) && strings.Contains(err.Error(), "already in progress") {
		return nil
	}
	return err
}

// Close stops and removes every container the driver tracks, started or
// adopted, concurrently, each with messages.DefaultStopGrace; when ctx ends
// first the rest are removed by force at once. Start and Adopt fail with
// ErrClosed afterwards. Close is for a node shutdown that takes its
// containers with it, and for tests; Detach leaves them running instead.
func (d *Driver) Close(ctx context.Context) error {
	d.mu.Lock()
	d.closed = true
	ctrs := slices.Collect(maps.Values(d.ctrs))
	d.mu.Unlock()

	errs := make([]error, len(ctrs))
	var wg sync.WaitGroup
	for i, c := range ctrs {
		wg.Go(func() {
			if errs[i] = d.stop(ctx, c, messages.DefaultStopGrace); errs[i] == nil {
				d.forget(c)
			}
		})
	}
	wg.Wait()
	d.shutdown()
	return errors.Join(errs...)
}

// Detach forgets every container without stopping it, for a node that
// exits and leaves its containers running for its next run to List and
// Adopt. Start and Adopt fail with ErrClosed afterwards, and Ready, Wait
// and Stop calls in flight return ErrClosed. It returns once the driver's
// goroutines have ended.
func (d *Driver) Detach() {
	d.mu.Lock()
	n := len(d.ctrs)
	clear(d.ctrs)
	d.closed = true
	select {
	case <-d.detached:
	default:
		close(d.detached)
	}
	d.mu.Unlock()
	d.shutdown()
	d.log.Debug("docker driver detached", "containers", n)
}

// shutdown ends the event stream and the exit notices, once the driver is
// closed, and releases the client's connections.
func (d *Driver) shutdown() {
	d.bgCancel()
	d.bg.Wait()
	_ = d.cli.Close()
}

// Running returns how many of the containers the driver tracks have not
// exited.
func (d *Driver) Running() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, c := range d.ctrs {
		if !c.exited() {
			n++
		}
	}
	return n
}
