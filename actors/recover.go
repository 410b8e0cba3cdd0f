package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warmpool/warmpool/driver"
	"github.com/warmpool/warmpool/messages"
)

// Recovery is what a pool starts from after a restart: the leases and slot
// snapshots it stored, and the containers its driver still runs for it.
type Recovery struct {
	Leases    []StoredLease
	Snapshots []SlotSnapshot
	Found     []driver.Found
}

// LoadRecovery reads a pool's stored state and asks the driver what runs.
// It does I/O, so it runs before the pool actor starts, never inside it.
func LoadRecovery(ctx context.Context, o PoolOptions) (Recovery, error) {
	var r Recovery
	var err error
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Leases != nil {
		if r.Leases, err = o.Leases.List(ctx, o.Config.Name); err != nil {
			return r, fmt.Errorf("pool %s: loading leases: %w", o.Config.Name, err)
		}
	}
	if o.Snapshots != nil {
		if r.Snapshots, err = o.Snapshots.List(ctx, o.Config.Name, o.Node); err != nil {
			return r, fmt.Errorf("pool %s: loading slot snapshots: %w", o.Config.Name, err)
		}
	}
	found, err := o.Driver.List(ctx, o.Node)
	if errors.Is(err, errors.ErrUnsupported) {
		// A driver that cannot list (the process driver off Linux): start
		// without adopting; stored leases whose containers cannot be found
		// are ended, so sessions get new containers.
		o.Logger.Warn("the driver cannot list containers; nothing is adopted", "pool", o.Config.Name, "err", err)
		err = nil
	}
	if err != nil {
		return r, fmt.Errorf("pool %s: listing containers: %w", o.Config.Name, err)
	}
	for _, f := range found {
		if f.Pool == o.Config.Name {
			r.Found = append(r.Found, f)
		}
	}
	return r, nil
}

// recover rebuilds the pool from its Recovery, deciding in one message so
// that nothing interleaves:
//   - a running container that a live snapshot or an unexpired lease owns,
//     with the same handle, is adopted (it must answer again before use);
//   - a running container that no snapshot owns is stopped;
//   - a snapshot whose container is gone is deleted;
//   - an unexpired lease whose container is adopted is restored, so the
//     session gets the same container; any other lease is deleted, so the
//     session's next acquire gets a new container, never another's.
func (p *poolActor) recover(ctx actor.Context) {
	r := p.Recovery
	if r == nil {
		return
	}
	now := p.now()
	snaps := map[string]SlotSnapshot{}
	for _, s := range r.Snapshots {
		snaps[s.Slot] = s
	}
	// A lease is written before its reply, a snapshot after the fact: a live
	// lease that names a container is as good an owner as a snapshot.
	leased := map[string]LeaseRecord{}
	for _, l := range r.Leases {
		if l.Record.Node == p.Node && now.Before(l.Record.ExpiresAt) {
			leased[l.Record.Slot] = l.Record
		}
	}
	found := slices.Clone(r.Found)
	slices.SortFunc(found, func(a, b driver.Found) int { return strings.Compare(a.Slot, b.Slot) })
	adopted, orphans := 0, 0
	for _, f := range found {
		s, ok := snaps[f.Slot]
		delete(snaps, f.Slot)
		l, isLeased := leased[f.Slot]
		bySnapshot := ok && (s.State == Warm.String() || s.State == Acquired.String()) &&
			s.Handle.ID == f.Handle.ID && s.Handle.StartID == f.Handle.StartID
		byLease := isLeased && l.ContainerID == f.Handle.ID && l.StartID == f.Handle.StartID
		// A container a session used whose lease is over (expired while the
		// node was down, or revoked by another node while this one was
		// declared dead) is stopped, never handed to another session.
		used := ok && s.State == Acquired.String() && !byLease
		keep := (bySnapshot || byLease) && !used && p.slots[f.Slot] == nil
		if keep {
			p.spawn(ctx, &f, false)
			adopted++
		} else {
			p.log.Info("stopping a container no snapshot owns", "slot", f.Slot, "container", f.Handle.ID)
			p.spawn(ctx, &f, true)
			orphans++
		}
	}
	for _, slot := range sortedKeys(snaps) {
		s := snaps[slot]
		s.State = Gone.String()
		if p.snap != nil {
			p.snap.put(s)
		}
	}
	restored, ended := 0, 0
	for _, l := range r.Leases {
		rec := l.Record
		v := p.slots[rec.Slot]
		switch {
		case rec.Node != p.Node:
			continue // another node's lease
		case !now.Before(rec.ExpiresAt):
			p.log.Info("lease expired while the node was down", "session", rec.ID, "slot", rec.Slot)
			p.emit(messages.EventLeaseExpired, rec.Slot, rec.ID, "expired while the node was down")
		case v == nil || !v.adopted || v.state != Warming || v.session != "":
			p.log.Info("lease's container is gone; the session gets a new one", "session", rec.ID, "slot", rec.Slot)
			p.emit(messages.EventLeaseRevoked, rec.Slot, rec.ID, "its container is gone")
		default:
			v.session = rec.ID
			p.claimedWarming++
			p.snapshot(v)
			p.sessions[rec.ID] = &session{
				id: rec.ID, slot: rec.Slot, state: pending, recovered: true,
				revision: l.Revision, createdAt: rec.CreatedAt, expiresAt: rec.ExpiresAt,
			}
			restored++
			continue
		}
		p.deleteInBackground(ctx, rec.ID, l.Revision)
		ended++
	}
	p.log.Info("recovered", "adopted", adopted, "orphans_stopped", orphans, "leases_restored", restored, "leases_ended", ended)
}
