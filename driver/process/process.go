package process

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/warmpool/warmpool/driver"
	"github.com/warmpool/warmpool/messages"
)

// Timings of probes and cleanup.
const (
	// pollInterval is the pause between readiness probes: short, because a
	// warm start is what the pool waits for.
	pollInterval = 25 * time.Millisecond
	// probeTimeout bounds one probe, so a container that accepts and then
	// hangs does not stall Ready past its context for long.
	probeTimeout = 500 * time.Millisecond
	// adoptedPoll is how often the exit of an adopted process is checked
	// where no pidfd tells it (Linux before 5.3, or a seccomp filter).
	adoptedPoll = 100 * time.Millisecond
	// killWait bounds the wait for an exit after SIGKILL. Only a process stuck
	// in the kernel takes longer; Stop then reports it rather than hang.
	killWait = 5 * time.Second
	// portTries is how often Start picks a port again when the kernel hands
	// out one that a process of this driver was given already.
	portTries = 10
)

// ErrClosed is returned by Start and Adopt once Close or Detach has been
// called: the node is shutting down and a new process would outlive the
// cleanup. Ready, Wait and Stop calls in flight when Detach forgets their
// process return it too.
var ErrClosed = errors.New("process driver is closed")

// Driver runs containers as local processes. It implements driver.Driver and
// is safe for concurrent use. Create it with New, and on shutdown either
// Close it (stop every process) or Detach it (leave them running for the
// next run of the node to List and Adopt).
//
// A process that exits by itself stays tracked, so that Wait and Ready can
// still say how it ended, until Stop forgets it.
type Driver struct {
	log  *slog.Logger
	http *http.Client

	mu       sync.Mutex
	procs    map[string]*proc // by Handle.ID
	ports    map[int]int      // how many tracked or starting processes have the port
	closed   bool
	detached chan struct{}  // closed by Detach
	bg       sync.WaitGroup // goroutines Detach waits for; Add only while !closed

	// noPidfd makes Adopt watch by polling, as where pidfds are missing.
	// Tests set it before the first Adopt.
	noPidfd bool
}

var _ driver.Driver = (*Driver)(nil)

// proc is one process the driver started or adopted.
type proc struct {
	id        string
	pid       int
	port      int
	addr      string // host:port for the TCP probe
	readyURL  string // empty for the TCP probe
	log       *slog.Logger
	out       *output
	done      chan struct{} // closed once the leader has exited and exit is set
	exit      driver.Exit   // written before done is closed, read after
	startID   string        // Handle.StartID; may be empty for a started one
	startedAt time.Time

	// adopted is set for a process an earlier run of the node started. It
	// is not our child, so its exit is watched through pidfd (nil where
	// there is none), and before a signal its pid is checked to still be it.
	adopted bool
	pidfd   *os.File

	mu sync.Mutex
	// unsignal is set once the leader has exited (its pid may be reused),
	// or the driver detached from an adopted process: no signal is sent to
	// the group any more. It guards the use of pidfd, and its close.
	unsignal bool
}

// New returns a driver that logs to logger (nothing when nil).
func New(logger *slog.Logger) *Driver {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Driver{
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
		procs:    make(map[string]*proc),
		ports:    make(map[int]int),
		detached: make(chan struct{}),
	}
}

// Start runs spec.Template.Command in its own process group with the parent's
// environment, spec.Template.Env, and PORT, WARMPOOL_SLOT, WARMPOOL_POOL and
// WARMPOOL_NODE. It returns once the process runs; use Ready to wait for it
// to answer. On Linux the handle's StartID is the process's start time from
// /proc, for Adopt by a later run of the node.
func (d *Driver) Start(ctx context.Context, spec driver.Spec) (driver.Handle, error) {
	if err := ctx.Err(); err != nil {
		return driver.Handle{}, err
	}
	t := spec.Template
	if len(t.Command) == 0 || t.Command[0] == "" {
		return driver.Handle{}, errors.New("process: the template has no command")
	}
	name := t.Command[0]
	port, err := d.reservePort(ctx)
	if err != nil {
		return driver.Handle{}, err
	}
	started := false
	defer func() {
		if !started {
			d.releasePort(port)
		}
	}()

	endpoint := "http://127.0.0.1:" + strconv.Itoa(port)
	readyURL := ""
	if t.ReadyPath != "" {
		u, err := url.Parse(endpoint + t.ReadyPath)
		if err != nil || u.Host != "127.0.0.1:"+strconv.Itoa(port) {
			return driver.Handle{}, fmt.Errorf("process: readyPath %q is not a URL path", t.ReadyPath)
		}
		readyURL = u.String()
	}
	env, err := environ(spec, port)
	if err != nil {
		return driver.Handle{}, err
	}

	out, w, err := newOutput()
	if err != nil {
		return driver.Handle{}, err
	}
	cmd := exec.Command(name, t.Command[1:]...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = sysProcAttr()
	err = cmd.Start()
	// The child has its own descriptor; the driver only reads through out.
	_ = w.Close()
	if err != nil {
		out.close()
		return driver.Handle{}, fmt.Errorf("process: cannot start command %q: %w", name, err)
	}
	started = true

	pid := cmd.Process.Pid
	p := &proc{
		id:        strconv.Itoa(pid),
		pid:       pid,
		port:      port,
		addr:      "127.0.0.1:" + strconv.Itoa(port),
		readyURL:  readyURL,
		log:       d.log.With("pool", spec.Pool, "slot", spec.Slot, "node", spec.Node, "pid", pid, "port", port),
		out:       out,
		done:      make(chan struct{}),
		startedAt: time.Now(),
	}
	// Before watch can reap the child, so that this is its start time even
	// if it exited already (a zombie keeps it).
	p.startID, err = startIDOf(pid)
	if err != nil {
		p.log.Warn("cannot read the process's start time; a restarted node will not adopt it", "err", err)
	}
	go d.watch(p, cmd)

	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		// Close or Detach has already swept; this process would be left
		// behind, untracked.
		_ = d.stop(context.Background(), p, 0)
		d.releasePort(port)
		return driver.Handle{}, ErrClosed
	}
	d.track(p)
	d.mu.Unlock()

	p.log.Debug("process started", "command", t.Command)
	return driver.Handle{
		ID:        p.id,
		Endpoint:  endpoint,
		PID:       pid,
		Port:      port,
		StartID:   p.startID,
		StartedAt: p.startedAt,
	}, nil
}

// track adds p, whose port is already counted, and starts trimming its
// output. d.mu must be held and d.closed false.
func (d *Driver) track(p *proc) {
	// A tracked entry with the same pid has exited (its pid was reused) and
	// was never stopped; the new process replaces it.
	if old := d.procs[p.id]; old != nil {
		d.releasePortLocked(old.port)
	}
	d.procs[p.id] = p
	d.bg.Add(1)
	go d.trimOutput(p)
}

// trimOutput keeps p's output file small until p exits or the driver
// detaches (the next owner trims it then).
func (d *Driver) trimOutput(p *proc) {
	defer d.bg.Done()
	tick := time.NewTicker(outputTrimEvery)
	defer tick.Stop()
	for {
		select {
		case <-p.done:
			return
		case <-d.detached:
			return
		case <-tick.C:
			p.out.trim()
		}
	}
}

// watch waits for the leader to exit, kills what it left in its group,
// records the exit and closes p.done. It runs on after Detach: the process
// is still our child, and reaping it when it exits is still our job.
func (d *Driver) watch(p *proc, cmd *exec.Cmd) {
	var err error
	if waitExited(p.pid) {
		p.killGroupAndSeal()
		err = cmd.Wait()
	} else {
		err = cmd.Wait()
		p.killGroupAndSeal()
	}
	// Grandchildren may still hold the file and write to it; what the
	// leader wrote is there already, and they are being killed.
	p.exit = describeExit(cmd.ProcessState, err, p.out.lines())
	p.out.close()
	close(p.done)
	// Debug: the pool logs an unexpected exit, with its reason, as a warning.
	p.log.Debug("process exited", "code", p.exit.Code)
}

// killGroupAndSeal kills the rest of the group once the leader has exited: a
// container is its leader, and what it spawned must not outlive it. After
// this no signal is sent to the group id any more.
func (p *proc) killGroupAndSeal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	_ = syscall.Kill(-p.pid, syscall.SIGKILL)
	p.unsignal = true
}

// signal sends sig to p's process group unless the leader is gone. For an
// adopted process, which we cannot keep from being reaped, gone includes
// "exited and not yet noticed" and "its pid names another process now".
func (p *proc) signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.unsignal {
		return nil
	}
	if p.adopted && !p.aliveLocked() {
		return nil
	}
	if err := syscall.Kill(-p.pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("process: signal %d to group %d: %w", int(sig), p.pid, err)
	}
	return nil
}

// exited reports whether the process has exited.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Ready polls the process until it answers: an HTTP GET of the template's
// ReadyPath answering 2xx, or else a TCP connect to its port. It returns an
// error wrapping driver.ErrExited, with the exit reason and last output, if
// the process exits first, and ctx's error if ctx ends first.
func (d *Driver) Ready(ctx context.Context, h driver.Handle) error {
	p := d.lookup(h.ID)
	if p == nil {
		return fmt.Errorf("process: %w: %q", driver.ErrUnknownContainer, h.ID)
	}
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		if p.exited() {
			return p.exitedErr()
		}
		err := d.probe(ctx, p)
		if err == nil {
			err = d.owns(p)
		}
		if err == nil {
			return nil
		}
		select {
		case <-p.done:
			return p.exitedErr()
		case <-ctx.Done():
			return fmt.Errorf("process %d not ready (last probe: %v): %w", p.pid, err, ctx.Err())
		case <-d.detached:
			return fmt.Errorf("process %d: %w", p.pid, ErrClosed)
		case <-tick.C:
		}
	}
}

func (p *proc) exitedErr() error {
	return fmt.Errorf("%w before it was ready: process %d %s", driver.ErrExited, p.pid, p.exit.Reason)
}

// owns checks that what answered the probe is p's: a process of its group
// listens on its port (see listensIn).
func (d *Driver) owns(p *proc) error {
	ok, err := listensIn(p.pid, p.port)
	switch {
	case err != nil:
		return fmt.Errorf("port %d answers; whose listener it is could not be read: %w", p.port, err)
	case !ok:
		return fmt.Errorf("port %d answers, but not from process %d or its group (another process holds the port)", p.port, p.pid)
	}
	return nil
}

// probe tries once whether p answers.
func (d *Driver) probe(ctx context.Context, p *proc) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	if p.readyURL == "" {
		var dialer net.Dialer
		c, err := dialer.DialContext(ctx, "tcp", p.addr)
		if err != nil {
			return err
		}
		_ = c.Close()
		return nil
	}
	return driver.ProbeHTTP(ctx, d.http, p.readyURL)
}

// Wait blocks until the process exits and says how, or until ctx ends.
func (d *Driver) Wait(ctx context.Context, h driver.Handle) (driver.Exit, error) {
	p := d.lookup(h.ID)
	if p == nil {
		return driver.Exit{}, fmt.Errorf("process: %w: %q", driver.ErrUnknownContainer, h.ID)
	}
	return d.wait(ctx, p)
}

func (d *Driver) wait(ctx context.Context, p *proc) (driver.Exit, error) {
	if p.exited() {
		return p.exit, nil
	}
	select {
	case <-p.done:
		return p.exit, nil
	case <-ctx.Done():
		return driver.Exit{}, ctx.Err()
	case <-d.detached:
		return driver.Exit{}, fmt.Errorf("process %d: %w", p.pid, ErrClosed)
	}
}

// Stop sends SIGTERM to the process group, waits up to grace for the leader
// to exit, then sends SIGKILL to the group; with grace <= 0 it kills at once.
// If ctx ends during the grace period it kills at once too: Stop never
// returns leaving the process running on purpose. Once the process is gone
// the driver forgets the handle. Adopted processes are stopped the same way.
//
// Stopping a process that already exited is not an error, and neither is an
// unknown handle: it was stopped before, and Stop is idempotent so that
// retries after a lost reply are harmless.
func (d *Driver) Stop(ctx context.Context, h driver.Handle, grace time.Duration) error {
	p := d.lookup(h.ID)
	if p == nil {
		return nil
	}
	if err := d.stop(ctx, p, grace); err != nil {
		return err
	}
	d.forget(p)
	return nil
}

// stop ends p and waits for it to be reaped; it does not forget p.
func (d *Driver) stop(ctx context.Context, p *proc, grace time.Duration) error {
	if p.exited() {
		return nil
	}
	if grace > 0 {
		if err := p.signal(syscall.SIGTERM); err != nil {
			p.log.Warn("cannot send SIGTERM", "err", err)
		}
		timer := time.NewTimer(grace)
		defer timer.Stop()
		select {
		case <-p.done:
			return nil
		case <-timer.C:
			p.log.Warn("process did not stop within its grace period; killing it", "grace", grace)
		case <-ctx.Done():
			p.log.Warn("stop interrupted; killing the process", "err", ctx.Err())
		case <-d.detached:
			return fmt.Errorf("process %d: %w", p.pid, ErrClosed)
		}
	}
	if err := p.signal(syscall.SIGKILL); err != nil {
		return err
	}
	timer := time.NewTimer(killWait)
	defer timer.Stop()
	select {
	case <-p.done:
		return nil
	case <-timer.C:
		return fmt.Errorf("process %d still runs %s after SIGKILL", p.pid, killWait)
	case <-d.detached:
		return fmt.Errorf("process %d: %w", p.pid, ErrClosed)
	}
}

// Close stops every process the driver still runs, started or adopted,
// concurrently, each with messages.DefaultStopGrace; when ctx ends first the
// rest are killed at once. Start and Adopt fail with ErrClosed afterwards.
// Close is for a node shutdown that takes its containers with it, and for
// tests; Detach leaves them running instead.
func (d *Driver) Close(ctx context.Context) error {
	d.mu.Lock()
	d.closed = true
	procs := slices.Collect(maps.Values(d.procs))
	d.mu.Unlock()

	errs := make([]error, len(procs))
	var wg sync.WaitGroup
	for i, p := range procs {
		wg.Go(func() {
			if errs[i] = d.stop(ctx, p, messages.DefaultStopGrace); errs[i] == nil {
				d.forget(p)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Running returns how many of the processes the driver tracks have not exited.
func (d *Driver) Running() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, p := range d.procs {
		if !p.exited() {
			n++
		}
	}
	return n
}

func (d *Driver) lookup(id string) *proc {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.procs[id]
}

// forget drops p, unless a newer process with the same pid replaced it.
func (d *Driver) forget(p *proc) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.procs[p.id] == p {
		delete(d.procs, p.id)
		d.releasePortLocked(p.port)
	}
}

// reservePort picks a free port on 127.0.0.1 that no process of this driver
// has, and reserves it until the process is forgotten.
func (d *Driver) reservePort(ctx context.Context) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return 0, ErrClosed
	}
	var lc net.ListenConfig
	for range portTries {
		l, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("process: pick a free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		if d.ports[port] == 0 {
			d.ports[port] = 1
			return port, nil
		}
	}
	return 0, fmt.Errorf("process: pick a free port: %d tries gave ports already in use", portTries)
}

func (d *Driver) releasePort(port int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.releasePortLocked(port)
}

func (d *Driver) releasePortLocked(port int) {
	if d.ports[port] <= 1 {
		delete(d.ports, port)
	} else {
		d.ports[port]--
	}
}

// The variables the driver gives every process. List reads them back from
// /proc to find a node's processes after a restart.
const (
	envPort = "PORT"
	envSlot = "WARMPOOL_SLOT"
	envPool = "WARMPOOL_POOL"
	envNode = "WARMPOOL_NODE"
)

// environ is the child's environment: ours, then the template's, then the
// driver's variables. Later entries win in os/exec, so a template cannot
// override PORT, or claim another node, by accident.
func environ(spec driver.Spec, port int) ([]string, error) {
	env := os.Environ()
	for _, k := range slices.Sorted(maps.Keys(spec.Template.Env)) {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return nil, fmt.Errorf("process: env name %q is not valid", k)
		}
		env = append(env, k+"="+spec.Template.Env[k])
	}
	return append(env,
		envPort+"="+strconv.Itoa(port),
		envSlot+"="+spec.Slot,
		envPool+"="+spec.Pool,
		envNode+"="+spec.Node,
	), nil
}

// describeExit turns a wait result into a driver.Exit for people.
func describeExit(state *os.ProcessState, err error, lines []string) driver.Exit {
	e := driver.Exit{Code: -1}
	if state == nil {
		e.Reason = fmt.Sprintf("could not be waited for: %v", err)
	} else if ws, ok := state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		e.Reason = fmt.Sprintf("killed by signal %d", int(ws.Signal()))
	} else {
		e.Code = state.ExitCode()
		e.Reason = fmt.Sprintf("exited with status %d", e.Code)
	}
	e.Reason = withOutput(e.Reason, lines)
	return e
}

// withOutput appends the last lines of output to an exit reason.
func withOutput(reason string, lines []string) string {
	if len(lines) == 0 {
		return reason
	}
	return reason + "; last output:\n" + strings.Join(lines, "\n")
}
