package process

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"runtime"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/warmpool/warmpool/driver"
)

// errNoProcfs is returned by List and Adopt where there is no /proc.
var errNoProcfs = fmt.Errorf("listing and adopting processes is unsupported on %s (it needs Linux's /proc): %w",
	runtime.GOOS, errors.ErrUnsupported)

// List returns the processes that run for node: those whose environment
// has WARMPOOL_NODE=node (Start puts it there) and that lead their process
// group, since a container's children inherit its environment but not its
// leadership. It finds them in /proc, so it sees the processes of an
// earlier run of the node as well as this driver's own, sorted by pid.
//
// Skipped without error: zombies, processes of other users or whose
// environment cannot be read, and a group leader whose parent has
// WARMPOOL_NODE=node too (a container's child that made its own group).
// A child that made its own group and then outlived its parent is listed:
// it is ours, and the node should stop it.
//
// Each handle's Port and Pool and Slot come from the process's PORT,
// WARMPOOL_POOL and WARMPOOL_SLOT; its StartedAt is derived from StartID
// and may be zero. node must not be empty. List is supported on Linux only.
func (d *Driver) List(ctx context.Context, node string) ([]driver.Found, error) {
	if !procfsSupported {
		return nil, fmt.Errorf("process: List: %w", errNoProcfs)
	}
	if node == "" {
		return nil, errors.New("process: List needs a node name")
	}
	pids, err := listPIDs()
	if err != nil {
		return nil, err
	}
	uid, self := os.Geteuid(), os.Getpid()
	var found []driver.Found
	for i, pid := range pids {
		if i%64 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		if pid == self {
			continue
		}
		st, env, err := inspect(pid, uid)
		if err != nil || env[envNode] != node {
			continue
		}
		if st.ppid > 1 {
			if penv, err := readEnviron(st.ppid); err == nil && penv[envNode] == node {
				continue
			}
		}
		port := envPortOf(env)
		h := driver.Handle{
			ID:        strconv.Itoa(pid),
			PID:       pid,
			Port:      port,
			StartID:   st.startID,
			StartedAt: startedAt(st.startID),
		}
		if port > 0 {
			h.Endpoint = "http://127.0.0.1:" + strconv.Itoa(port)
		}
		found = append(found, driver.Found{Handle: h, Pool: env[envPool], Slot: env[envSlot], Node: node})
	}
	return found, nil
}

// Adopt takes over a process that an earlier run of the node started (as
// found by List), so that Ready, Wait and Stop work on it as on one that
// Start returned. Ready probes its port over TCP: the template and with it
// the ReadyPath are not known here. Its exit status is not known either
// (it is not our child): Wait reports Code -1, "adopted process exited",
// with the last lines of its output when they can be read.
//
// Adopt only has the handle, so it verifies what the handle can prove: the
// pid h.ID runs (else driver.ErrUnknownContainer), and it is the process
// that h describes (else driver.ErrNotSame): its start time equals
// h.StartID (a handle without one is refused), it belongs to our user, it
// leads its process group, its environment has a WARMPOOL_NODE (of any
// node), and its PORT equals h.Port when h has one. Which node, pool and
// slot it serves is the caller's to check, with List.
//
// Adopting a handle the driver already tracks, started or adopted, is a
// no-op. The adopted port is counted as in use, so Start does not give it
// to another process. Adopt fails with ErrClosed after Close or Detach, and
// is supported on Linux only.
func (d *Driver) Adopt(ctx context.Context, h driver.Handle) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !procfsSupported {
		return fmt.Errorf("process: Adopt: %w", errNoProcfs)
	}
	pid, err := strconv.Atoi(h.ID)
	if err != nil || pid <= 0 {
		return fmt.Errorf("process: %w: %q is not a pid", driver.ErrUnknownContainer, h.ID)
	}
	if h.PID != 0 && h.PID != pid {
		return fmt.Errorf("process: %w: handle %q has pid %d", driver.ErrNotSame, h.ID, h.PID)
	}
	if p := d.lookup(h.ID); p != nil && sameTracked(p, h) {
		return nil
	}
	if h.StartID == "" {
		return fmt.Errorf("process %d: %w: the handle has no StartID to verify it by", pid, driver.ErrNotSame)
	}

	st, env, err := inspect(pid, os.Geteuid())
	if err != nil {
		return fmt.Errorf("process %d: %w", pid, err)
	}
	if st.startID != h.StartID {
		return fmt.Errorf("process %d: %w: it started at tick %s, the handle's at %s",
			pid, driver.ErrNotSame, st.startID, h.StartID)
	}
	port := envPortOf(env)
	if h.Port != 0 && port != h.Port {
		return fmt.Errorf("process %d: %w: its PORT is %q, the handle's %d", pid, driver.ErrNotSame, env[envPort], h.Port)
	}

	var pidfd *os.File
	if !d.noPidfd {
		pidfd, err = openPidfd(pid)
		if errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("process %d: %w: it exited", pid, driver.ErrUnknownContainer)
		}
		if err != nil {
			d.log.Debug("no pidfd; polling for the exit of the adopted process", "pid", pid, "err", err)
		}
	}
	// The pidfd refers to whatever process had the pid when it was opened:
	// check that this is still the one verified above.
	if err := checkSame(pid, h.StartID); err != nil {
		closeFile(pidfd)
		return err
	}

	p := &proc{
		id:        h.ID,
		pid:       pid,
		port:      port,
		addr:      "127.0.0.1:" + strconv.Itoa(port),
		log:       d.log.With("pool", env[envPool], "slot", env[envSlot], "node", env[envNode], "pid", pid, "port", port, "adopted", true),
		out:       &output{f: adoptOutput(pid)},
		done:      make(chan struct{}),
		startID:   h.StartID,
		startedAt: h.StartedAt,
		adopted:   true,
		pidfd:     pidfd,
	}
	if p.startedAt.IsZero() {
		p.startedAt = startedAt(h.StartID)
	}

	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		p.release()
		return ErrClosed
	}
	if old := d.procs[p.id]; old != nil && !old.exited() {
		d.mu.Unlock()
		p.release()
		// A concurrent Adopt, or a Start, got there first.
		if sameTracked(old, h) {
			return nil
		}
		return fmt.Errorf("process %d: %w: the driver tracks another process with this pid", pid, driver.ErrNotSame)
	}
	if port > 0 {
		d.ports[port]++
	}
	d.track(p)
	d.bg.Add(1)
	go d.watchAdopted(p)
	d.mu.Unlock()

	p.log.Debug("process adopted", "pidfd", pidfd != nil)
	return nil
}

// sameTracked reports whether the tracked p is the process h names.
func sameTracked(p *proc, h driver.Handle) bool {
	if p.startID != "" {
		return p.startID == h.StartID
	}
	// A process started without a readable start time is still running,
	// so the pid is still its own.
	return !p.exited()
}

// inspect reads what List and Adopt check of process pid: that it runs
// (else driver.ErrUnknownContainer) and is the leader of a container for
// some node, run by user uid (else driver.ErrNotSame).
func inspect(pid, uid int) (procStat, map[string]string, error) {
	st, err := readStat(pid)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && st.gone()) {
		return procStat{}, nil, fmt.Errorf("%w: it does not run", driver.ErrUnknownContainer)
	}
	if err != nil {
		return procStat{}, nil, err
	}
	if st.pgrp != pid {
		return procStat{}, nil, fmt.Errorf("%w: it does not lead its process group (%d)", driver.ErrNotSame, st.pgrp)
	}
	owner, err := procUID(pid)
	if errors.Is(err, fs.ErrNotExist) {
		return procStat{}, nil, fmt.Errorf("%w: it does not run", driver.ErrUnknownContainer)
	}
	if err != nil || owner != uid {
		return procStat{}, nil, fmt.Errorf("%w: it belongs to another user", driver.ErrNotSame)
	}
	env, err := readEnviron(pid)
	if errors.Is(err, fs.ErrNotExist) {
		return procStat{}, nil, fmt.Errorf("%w: it does not run", driver.ErrUnknownContainer)
	}
	if err != nil {
		return procStat{}, nil, fmt.Errorf("%w: cannot read its environment: %v", driver.ErrNotSame, err)
	}
	if _, ok := env[envNode]; !ok {
		return procStat{}, nil, fmt.Errorf("%w: it has no %s", driver.ErrNotSame, envNode)
	}
	// The environment is read after the stat: if the process exited and its
	// pid was reused in between, the two describe different processes.
	if err := checkSame(pid, st.startID); err != nil {
		return procStat{}, nil, err
	}
	return st, env, nil
}

// checkSame verifies that pid still runs and started at startID.
func checkSame(pid int, startID string) error {
	st, err := readStat(pid)
	switch {
	case errors.Is(err, fs.ErrNotExist) || (err == nil && st.gone()):
		return fmt.Errorf("process %d: %w: it exited", pid, driver.ErrUnknownContainer)
	case err != nil:
		return fmt.Errorf("process %d: %w", pid, err)
	case st.startID != startID:
		return fmt.Errorf("process %d: %w: it exited and the pid was reused", pid, driver.ErrNotSame)
	}
	return nil
}

func envPortOf(env map[string]string) int {
	port, err := strconv.Atoi(env[envPort])
	if err != nil || port <= 0 || port > 65535 {
		return 0
	}
	return port
}

// aliveLocked reports whether the adopted process still runs under its pid,
// so that a signal to its group reaches it and nothing else. p.mu is held.
//
// A signal right after a true answer can still race with an exit, but then
// the pid stays taken as long as anything of the group lives (a process
// group id is never reused while the group exists), so the signal reaches
// what is left of the container or no one.
func (p *proc) aliveLocked() bool {
	if p.pidfd != nil && pidfdExited(p.pidfd) {
		return false
	}
	st, err := readStat(p.pid)
	return err == nil && !st.gone() && st.startID == p.startID
}

// watchAdopted waits for an adopted process to exit, then kills the rest
// of its group, records the exit and closes p.done, like watch does for a
// child. On Detach it returns without doing any of that.
func (d *Driver) watchAdopted(p *proc) {
	defer d.bg.Done()
	if !p.waitGone(d.detached) {
		p.mu.Lock()
		p.unsignal = true
		p.mu.Unlock()
		p.release()
		return
	}
	p.mu.Lock()
	// The leader is gone but may still be a zombie, which keeps its pid;
	// once it is reaped the group's members keep the pid from reuse. Only a
	// pid now held by another process means the group is not ours.
	if st, err := readStat(p.pid); errors.Is(err, fs.ErrNotExist) || (err == nil && st.startID == p.startID) {
		_ = syscall.Kill(-p.pid, syscall.SIGKILL)
	}
	p.unsignal = true
	p.mu.Unlock()
	p.exit = driver.Exit{Code: -1, Reason: withOutput("adopted process exited", p.out.lines())}
	p.release()
	close(p.done)
	p.log.Debug("adopted process exited")
}

// waitGone blocks until the adopted process has exited (true) or stop is
// closed (false).
func (p *proc) waitGone(stop <-chan struct{}) bool {
	if p.pidfd != nil {
		err := waitPidfd(p.pidfd)
		select {
		case <-stop:
			return false
		default:
		}
		if err == nil {
			return true
		}
		p.log.Debug("cannot wait on the pidfd; polling", "err", err)
	}
	tick := time.NewTicker(adoptedPoll)
	defer tick.Stop()
	for {
		p.mu.Lock()
		alive := p.aliveLocked()
		p.mu.Unlock()
		if !alive {
			return true
		}
		select {
		case <-stop:
			return false
		case <-tick.C:
		}
	}
}

// release closes p's pidfd and output file once nothing may use them: p was
// never tracked, or its watcher is done with it (p.unsignal is set).
func (p *proc) release() {
	p.mu.Lock()
	closeFile(p.pidfd)
	p.pidfd = nil
	p.mu.Unlock()
	p.out.close()
}

func closeFile(f *os.File) {
	if f != nil {
		_ = f.Close()
	}
}

// Detach forgets every process without stopping it, for a node that exits
// and leaves its containers running for its next run to List and Adopt.
// Start and Adopt fail with ErrClosed afterwards, and Ready, Wait and Stop
// calls in flight return ErrClosed.
//
// It returns once the driver's goroutines for adopted processes have
// ended. A process that Start started is still this process's child, so
// its watcher stays until the child exits and reaps it then (killing what
// is left of its group, as always); it touches nothing but its own record.
func (d *Driver) Detach() {
	d.mu.Lock()
	procs := slices.Collect(maps.Values(d.procs))
	clear(d.procs)
	clear(d.ports)
	d.closed = true
	select {
	case <-d.detached:
	default:
		close(d.detached)
	}
	d.mu.Unlock()

	for _, p := range procs {
		if !p.adopted {
			continue
		}
		p.mu.Lock()
		// Wakes the watcher from its wait on the pidfd; it sees detached
		// closed and leaves.
		if p.pidfd != nil {
			_ = p.pidfd.SetReadDeadline(time.Unix(1, 0))
		}
		p.mu.Unlock()
	}
	d.bg.Wait()
	d.log.Debug("process driver detached", "processes", len(procs))
}
