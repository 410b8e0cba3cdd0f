package docker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/warmpool/warmpool/driver"
)

// List returns the running containers of node: those labelled
// io.warmpool.managed=true and io.warmpool.node=node, whether this driver
// started them or an earlier run of the node did, sorted by slot. Their
// pool, slot, container port and ready path come from their labels, their
// host port from what Docker published, and their StartID from
// State.StartedAt.
//
// List also removes the node's containers that are garbage: exited or dead
// ones that this driver does not track (a tracked one is kept until Stop,
// for Wait to report), and ones created but never started (their starter
// died in between) while this driver is not starting one itself. They are not returned. node must
// not be empty.
func (d *Driver) List(ctx context.Context, node string) ([]driver.Found, error) {
	if node == "" {
		return nil, errors.New("docker: List needs a node name")
	}
	filters := make(client.Filters).Add("label", LabelManaged+"=true", LabelNode+"="+node)
	res, err := d.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: filters})
	if err != nil {
		return nil, fmt.Errorf("docker: list containers: %w", err)
	}
	var found []driver.Found
	for _, s := range res.Items {
		switch s.State {
		case container.StateRunning:
			insp, err := d.cli.ContainerInspect(ctx, s.ID, client.ContainerInspectOptions{})
			if cerrdefs.IsNotFound(err) {
				continue // removed in between
			}
			if err != nil {
				return nil, fmt.Errorf("docker: inspect container %s: %w", shortID(s.ID), err)
			}
			info, err := describeContainer(insp.Container)
			if err != nil || !info.running {
				continue
			}
			found = append(found, info.found)
		case container.StateExited, container.StateDead, container.StateCreated:
			if d.lookup(s.ID) != nil {
				continue
			}
			if s.State == container.StateCreated && d.creating.Load() > 0 {
				continue // perhaps one this driver is starting right now
			}
			if err := d.removeID(ctx, s.ID); err != nil {
				d.log.Warn("cannot remove a container that no longer runs", "node", node, "id", shortID(s.ID), "state", s.State, "err", err)
				continue
			}
			d.log.Info("removed a container that no longer runs", "node", node, "id", shortID(s.ID),
				"pool", s.Labels[LabelPool], "slot", s.Labels[LabelSlot], "state", s.State, "status", s.Status)
		}
	}
	slices.SortFunc(found, func(a, b driver.Found) int {
		return cmp.Or(strings.Compare(a.Pool, b.Pool), strings.Compare(a.Slot, b.Slot), strings.Compare(a.Handle.ID, b.Handle.ID))
	})
	return found, nil
}

// Adopt takes over a container that an earlier run of the node started (as
// found by List), so that Ready, Wait and Stop work on it as on one that
// Start returned. Ready probes it as its starter did: by its health check,
// or the ready path or TCP probe its labels name.
//
// Adopt verifies what the handle can prove: the container h.ID exists
// (else driver.ErrUnknownContainer), it carries io.warmpool.managed=true
// and the driver's other labels, and it is still the run that h describes
// (else driver.ErrNotSame): its State.StartedAt equals h.StartID (a handle
// without one is refused; a restarted container differs), and its
// published host port equals h.Port when h has one. A container that
// exited is garbage: Adopt removes it and returns ErrUnknownContainer.
// Which node, pool and slot it serves is the caller's to check, with List.
//
// Adopting a handle the driver already tracks is a no-op. Adopt fails with
// ErrClosed after Close or Detach.
func (d *Driver) Adopt(ctx context.Context, h driver.Handle) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if h.ID == "" {
		return fmt.Errorf("docker: %w: the handle has no container id", driver.ErrUnknownContainer)
	}
	if c := d.lookup(h.ID); c != nil && c.getStartID() == h.StartID {
		return nil
	}
	if h.StartID == "" {
		return fmt.Errorf("docker: container %s: %w: the handle has no StartID to verify it by", shortID(h.ID), driver.ErrNotSame)
	}
	if d.isClosed() {
		return ErrClosed
	}
	insp, err := d.cli.ContainerInspect(ctx, h.ID, client.ContainerInspectOptions{})
	if cerrdefs.IsNotFound(err) {
		return fmt.Errorf("docker: container %s: %w: it does not exist", shortID(h.ID), driver.ErrUnknownContainer)
	}
	if err != nil {
		return fmt.Errorf("docker: inspect container %s: %w", shortID(h.ID), err)
	}
	info, err := describeContainer(insp.Container)
	if err != nil {
		return fmt.Errorf("docker: container %s: %w", shortID(h.ID), err)
	}
	if info.found.Handle.StartID != h.StartID {
		return fmt.Errorf("docker: container %s: %w: it started at %s, the handle's at %s",
			info.name, driver.ErrNotSame, info.found.Handle.StartID, h.StartID)
	}
	if !info.running {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), apiTimeout)
		defer cancel()
		if err := d.removeID(rctx, insp.Container.ID); err != nil {
			d.log.Warn("cannot remove an exited container", "container", info.name, "err", err)
		}
		return fmt.Errorf("docker: container %s: %w: it %s", info.name, driver.ErrUnknownContainer, info.status)
	}
	if h.Port != 0 && info.found.Handle.Port != h.Port {
		return fmt.Errorf("docker: container %s: %w: its host port is %d, the handle's %d",
			info.name, driver.ErrNotSame, info.found.Handle.Port, h.Port)
	}

	f := info.found
	c := &ctr{
		id:        insp.Container.ID,
		name:      info.name,
		health:    info.health,
		readyPath: info.readyPath,
		log:       d.log.With("pool", f.Pool, "slot", f.Slot, "node", f.Node, "container", info.name, "port", f.Handle.Port, "adopted", true),
		done:      make(chan struct{}),
		startID:   f.Handle.StartID,
		startedAt: f.Handle.StartedAt,
	}
	c.setPort(f.Handle.Port)

	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return ErrClosed
	}
	if old := d.ctrs[c.id]; old != nil {
		d.mu.Unlock()
		// A concurrent Adopt got there first.
		if old.getStartID() == h.StartID {
			return nil
		}
		return fmt.Errorf("docker: container %s: %w: the driver tracks another run of it", info.name, driver.ErrNotSame)
	}
	d.ctrs[c.id] = c
	d.mu.Unlock()
	// It may have died between the inspection and the tracking, when its
	// die event was not ours to handle yet.
	d.check(ctx, c)
	c.log.Debug("container adopted")
	return nil
}

// inspected is what List and Adopt read from a container.
type inspected struct {
	found     driver.Found
	name      string
	running   bool
	status    string // how it ended, for one that does not run
	health    bool
	readyPath string
}

// describeContainer reads a managed container's labels, state and host
// port. It fails with driver.ErrNotSame for a container without the
// driver's labels.
func describeContainer(ic container.InspectResponse) (inspected, error) {
	var info inspected
	if ic.Config == nil || ic.State == nil {
		return info, fmt.Errorf("%w: the daemon told nothing of its config or state", driver.ErrNotSame)
	}
	l := ic.Config.Labels
	if l[LabelManaged] != "true" {
		return info, fmt.Errorf("%w: it has no %s=true label", driver.ErrNotSame, LabelManaged)
	}
	for _, k := range []string{LabelPool, LabelNode, LabelSlot, LabelPort} {
		if _, ok := l[k]; !ok {
			return info, fmt.Errorf("%w: it has no %s label", driver.ErrNotSame, k)
		}
	}
	cport, err := strconv.Atoi(l[LabelPort])
	if err != nil || cport < 1 || cport > 65535 {
		return info, fmt.Errorf("%w: its %s label %q is not a port", driver.ErrNotSame, LabelPort, l[LabelPort])
	}
	st := ic.State
	info.name = strings.TrimPrefix(ic.Name, "/")
	info.running = st.Running && !st.Restarting
	info.status = fmt.Sprintf("exited with status %d", st.ExitCode)
	if st.Status == container.StateCreated {
		info.status = "was never started"
	}
	info.health = hasHealthcheck(ic.Config.Healthcheck) || st.Health != nil
	info.readyPath = l[LabelReadyPath]
	if checkReadyPath(info.readyPath) != nil {
		info.readyPath = ""
	}

	port := cport
	if ic.HostConfig == nil || ic.HostConfig.NetworkMode != "host" {
		p, _ := network.PortFrom(uint16(cport), network.TCP)
		port = hostPort(ic.NetworkSettings, p)
	}
	h := driver.Handle{ID: ic.ID, Port: port, StartID: st.StartedAt}
	h.StartedAt, _ = time.Parse(time.RFC3339Nano, st.StartedAt)
	if port != 0 {
		h.Endpoint = "http://127.0.0.1:" + strconv.Itoa(port)
	}
	info.found = driver.Found{Handle: h, Pool: l[LabelPool], Slot: l[LabelSlot], Node: l[LabelNode]}
	return info, nil
}
