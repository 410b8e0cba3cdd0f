package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warmpool/warmpool/clock"
	"github.com/warmpool/warmpool/driver"
	"github.com/warmpool/warmpool/messages"
)

// Backoff of container starts after consecutive failures: base doubling per
// failure, capped, with ±20% jitter so that pools do not retry in lockstep.
const (
	backoffBase = time.Second
	backoffMax  = time.Minute
)

// Timer ticks and internal messages: unexported, never serialised.
type (
	refreshTick struct{}
	backoffTick struct{}
	// stopPool asks the pool to get ready for a node shutdown. With leave,
	// warm and acquired containers keep running for the next start to adopt;
	// without, every container is stopped and every lease ended. done is
	// closed when no write is in flight and no container is left to stop.
	stopPool struct {
		done  chan struct{}
		leave bool
	}
	// leaseWritten is the outcome of a durable lease write.
	leaseWritten struct {
		id        string
		op        writeOp
		revision  uint64
		expiresAt time.Time
		err       error
	}
)

// NotInfluenceReceiveTimeout marks ticks as housekeeping.
func (refreshTick) NotInfluenceReceiveTimeout() {}
func (backoffTick) NotInfluenceReceiveTimeout() {}

type writeOp uint8

const (
	opNone writeOp = iota
	opCreate
	opExtend
	opDelete
)

// slotView is the pool's picture of one slot, moved by the same Transition
// as the slot actor itself: by the pool's own decisions, and by the events
// the slot reports.
type slotView struct {
	id     string
	pid    *actor.PID
	state  State
	since  time.Time
	handle driver.Handle
	// session holds or (while warming) has claimed the slot; "" if free.
	session string
	// adopted: the container is from an earlier run of the node.
	adopted bool
}

type sessionState uint8

const (
	// pending: waiting for its claimed slot's container to get ready (a cold
	// start, or a container being adopted after a restart).
	pending sessionState = iota + 1
	// leased: holds an acquired slot (or is about to, while the lease's
	// create is in flight).
	leased
)

type session struct {
	id        string
	slot      string
	state     sessionState
	revision  uint64 // fencing token; 0 until the create lands
	createdAt time.Time
	expiresAt time.Time
	cold      bool
	// recovered: the lease was loaded from the store; no create needed.
	recovered bool

	// writing is the durable write in flight; one at a time per session.
	writing writeOp
	// waiters get the lease when the create or extend in flight lands (or
	// the pending container gets ready).
	waiters []func(messages.Lease, error)
	// deadline is the latest of the acquiring callers' deadlines; waitsOn
	// is set when one of them has none.
	deadline time.Time
	waitsOn  bool
	// releasers get the answer when the delete in flight lands.
	releasers []func(messages.Released, error)
	// queued requests are handled again once the write in flight lands.
	queued []any
	// endReason says why a delete was started: "released", "lease expired".
	endReason string
}

// poolActor makes every decision of one pool, one message at a time: which
// slot a session gets, when a lease ends, when to start containers. It never
// does I/O: slot actors run the driver, goroutines write leases, and both
// report back as messages.
type poolActor struct {
	PoolOptions
	log  *slog.Logger
	snap *snapshotWriter

	slots    map[string]*slotView
	pids     map[string]string // actor pid id -> slot id
	sessions map[string]*session
	counts   [Gone + 1]int
	// warmQ and warmingQ hold slot ids in the order they became available;
	// entries that no longer qualify are skipped when popped, so an acquire
	// costs O(1) amortised whatever the pool's size.
	warmQ    []string
	warmingQ []string
	// claimedWarming counts warming slots already promised to a session.
	claimedWarming int
	writes         int // durable lease writes in flight

	started, died int
	eventSeq      uint64
	inputSeq      uint64
	// cur is the input being recorded, nil when not recording.
	cur *Input
	// at is the clock's reading for the message being handled.
	at time.Time
	// writeQ feeds the lease writer goroutines; closed when the pool stops.
	writeQ chan func()
	// share is this node's part of the cluster-wide figures.
	share messages.SetShare

	failures     int
	backoffUntil time.Time
	lastErr      string
	backoffTimer clock.Timer
	refreshTimer clock.Timer
	rand         *rand.Rand

	// paused after ShutdownAll: no refill until the next acquire or warmup.
	paused   bool
	stopping *stopPool
	halted   bool // the actor is stopping: no more decisions
	// leaving is set when the node exits and leaves containers running; the
	// slot actors read it as they stop.
	leaving *atomic.Bool
}

func newPoolActor(o PoolOptions, snap *snapshotWriter) *poolActor {
	return &poolActor{
		PoolOptions: o,
		log:         o.Logger.With("pool", o.Config.Name, "node", o.Node),
		snap:        snap,
		slots:       map[string]*slotView{},
		pids:        map[string]string{},
		sessions:    map[string]*session{},
		rand:        rand.New(rand.NewPCG(o.Seed, o.Seed^0x9e3779b97f4a7c15)),
		leaving:     &atomic.Bool{},
		share:       messages.SetShare{WarmTarget: o.Config.WarmTarget, MaxInstances: o.Config.MaxInstances, Nodes: 1},
	}
}

// Receive handles one message. With a Recorder, every input is recorded
// with the clock's reading, the ids drawn and the events emitted while it is
// handled; in a replay, inputs arrive wrapped so that the replayer knows
// when each is done.
func (p *poolActor) Receive(ctx actor.Context) {
	// One reading of the clock per message: every decision and event of a
	// message carries the same time, which is what a replay reproduces.
	p.at = p.Clock.Now()
	defer func() { p.at = time.Time{} }()
	msg := ctx.Message()
	if r, ok := msg.(replayed); ok {
		defer close(r.done)
		msg = r.msg
		if msg == nil {
			return // a barrier
		}
	}
	if p.Recorder == nil {
		p.handle(ctx, msg)
		return
	}
	in, ok := p.input(msg)
	if !ok {
		p.handle(ctx, msg)
		return
	}
	if in.Kind == InputStart {
		cfg := p.Config
		p.Recorder.Record(Input{Kind: InputHeader, Pool: cfg.Name, Schema: RecordSchema, Time: p.now(),
			Config: &cfg, Node: p.Node, Seed: p.Seed})
	}
	p.inputSeq++
	in.Seq, in.Time = p.inputSeq, p.now()
	p.cur = &in
	p.handle(ctx, msg)
	p.cur = nil
	p.Recorder.Record(in)
}

// replayed wraps a replayed input (nil: a barrier); done is closed once it
// is handled.
type replayed struct {
	msg  any
	done chan struct{}
}

// getState asks for the pool's state, for replays and tests.
type getState struct{ reply chan PoolState }

// holdsQuery asks whether the pool holds, or is making, the session id or
// a lease of id on slot.
type holdsQuery struct {
	id, slot string
	reply    chan bool
}

func (p *poolActor) handle(ctx actor.Context, msg any) {
	switch m := msg.(type) {
	case *actor.Started:
		p.recover(ctx)
		p.log.Info("pool started", "warm_target", p.Config.WarmTarget, "max_instances", p.Config.MaxInstances,
			"adopted", len(p.slots), "leases", len(p.sessions))
		p.refill(ctx)
		p.scheduleRefresh(ctx)
	case slotEvent:
		p.slotEvent(ctx, m)
	case leaseWritten:
		p.leaseWritten(ctx, m)
	case refreshTick:
		p.refresh(ctx)
		p.scheduleRefresh(ctx)
	case backoffTick:
		p.backoffTimer = nil
		p.refill(ctx)
	case stopPool:
		p.stop(ctx, m)
	case *actor.Terminated:
		// While the pool itself stops, its slots stop with it: that changes
		// nothing stored (their containers may be left for the next start).
		if !p.halted {
			p.slotTerminated(ctx, p.pids[m.Who.Id])
		}
	case slotTerminated:
		p.slotTerminated(ctx, m.slot)
	case getState:
		m.reply <- p.state()
	case holdsQuery:
		v := p.slots[m.slot]
		m.reply <- p.sessions[m.id] != nil || v != nil && v.session == m.id
	case *actor.Stopping:
		p.halted = true
		if p.writeQ != nil {
			close(p.writeQ) // the writers finish what is queued, then exit
			p.writeQ = nil
		}
		if p.refreshTimer != nil {
			p.refreshTimer.Stop()
		}
		if p.backoffTimer != nil {
			p.backoffTimer.Stop()
		}
		p.failWaiters(fmt.Errorf("%w: pool %s is stopping", messages.ErrNotReady, p.Config.Name))
	default:
		p.request(ctx, m)
	}
}

// request handles the API's messages; it is also how queued requests are
// handled again once a session's write lands.
func (p *poolActor) request(ctx actor.Context, msg any) {
	switch m := msg.(type) {
	case messages.Acquire:
		p.acquire(ctx, m)
	case messages.Release:
		p.release(ctx, m)
	case messages.Renew:
		p.renew(ctx, m)
	case messages.GetStats:
		m.Reply(p.stats(), nil)
	case messages.Warmup:
		p.warmup(ctx, m)
	case messages.ShutdownAll:
		m.Reply(p.shutdownAll(ctx, "shutdown requested"), nil)
	case messages.SetShare:
		if m.WarmTarget < 0 || m.MaxInstances < 0 || m == p.share {
			return
		}
		p.log.Info("share changed", "warm_target", m.WarmTarget, "max_instances", m.MaxInstances, "nodes", m.Nodes)
		p.share = m
		p.refill(ctx)
	}
}

func (p *poolActor) now() time.Time {
	if !p.at.IsZero() {
		return p.at
	}
	return p.Clock.Now()
}

func (p *poolActor) stoppingErr() error {
	return fmt.Errorf("%w: pool %s is stopping", messages.ErrNotReady, p.Config.Name)
}

// acquire implements the original library's getContainer: sticky, then warm,
// then a cold start, else exhausted. The reply waits for the durable write
// of the lease.
func (p *poolActor) acquire(ctx actor.Context, m messages.Acquire) {
	if err := messages.ValidateID(m.ID); err != nil {
		m.Reply(messages.Lease{}, err)
		return
	}
	if p.stopping != nil {
		m.Reply(messages.Lease{}, p.stoppingErr())
		return
	}
	now := p.now()
	if s, ok := p.sessions[m.ID]; ok {
		switch {
		case s.writing == opDelete:
			s.queued = append(s.queued, m)
		case s.writing != opNone || s.state == pending:
			s.wait(m)
		case !now.Before(s.expiresAt):
			s.queued = append(s.queued, m)
			p.startDelete(ctx, s, "lease expired", nil)
		case !p.holds(s):
			// Its container died: end the lease; the session then gets a
			// new container, never another session's.
			s.queued = append(s.queued, m)
			p.startDelete(ctx, s, "container gone", nil)
		default:
			s.wait(m)
			p.startWrite(ctx, s, opExtend)
		}
		return
	}
	if m.StickyOnly {
		m.Reply(messages.Lease{}, fmt.Errorf("%w: %w: pool %s takes no new session here", messages.ErrNotReady, ErrNoWarm, p.Config.Name))
		return
	}
	p.paused = false
	if v := p.popWarm(); v != nil {
		s := &session{id: m.ID, slot: v.id, state: leased}
		s.wait(m)
		p.sessions[m.ID] = s
		v.session = m.ID
		p.move(v, EvAcquire) // reserved: no one else gets it while the lease is written
		p.startWrite(ctx, s, opCreate)
		p.refill(ctx)
		return
	}
	if m.NoColdStart {
		m.Reply(messages.Lease{}, fmt.Errorf("%w: %w: pool %s", messages.ErrNotReady, ErrNoWarm, p.Config.Name))
		return
	}
	// Nothing warm: wait for a container that is already starting, else
	// start one, else the pool is full.
	v := p.popWarming()
	if v == nil {
		if p.total() >= p.share.MaxInstances {
			p.emit(messages.EventExhausted, "", m.ID, fmt.Sprintf("no warm container and maxInstances (%d) reached", p.share.MaxInstances))
			m.Reply(messages.Lease{}, fmt.Errorf("%w: pool %s has no warm container and runs maxInstances (%d) containers; retry later",
				messages.ErrExhausted, p.Config.Name, p.share.MaxInstances))
			return
		}
		if now.Before(p.backoffUntil) {
			m.Reply(messages.Lease{}, fmt.Errorf("%w: pool %s holds back container starts until %s after %d failures; last: %s",
				messages.ErrNotReady, p.Config.Name, p.backoffUntil.Format(time.RFC3339), p.failures, p.lastErr))
			return
		}
		v = p.spawn(ctx, nil, false)
	}
	v.session = m.ID
	p.claimedWarming++
	p.snapshot(v)
	p.emit(messages.EventColdStart, v.id, m.ID, "no warm container")
	s := &session{id: m.ID, slot: v.id, state: pending, cold: true}
	s.wait(m)
	p.sessions[m.ID] = s
	p.refill(ctx)
}

// wait adds an acquire's caller to the session's waiters.
func (s *session) wait(m messages.Acquire) {
	s.waiters = append(s.waiters, m.Reply)
	if m.Deadline.IsZero() {
		s.waitsOn = true
	} else if m.Deadline.After(s.deadline) {
		s.deadline = m.Deadline
	}
}

// callersGone reports whether every caller that acquired the session has
// stopped waiting by now.
func (s *session) callersGone(now time.Time) bool {
	return !s.waitsOn && !s.deadline.IsZero() && !now.Before(s.deadline)
}

// holds reports whether a leased session's slot is still acquired by it.
func (p *poolActor) holds(s *session) bool {
	v := p.slots[s.slot]
	return v != nil && v.state == Acquired && v.session == s.id
}

func (p *poolActor) release(ctx actor.Context, m messages.Release) {
	if err := messages.ValidateID(m.ID); err != nil {
		m.Reply(messages.Released{}, err)
		return
	}
	s, ok := p.sessions[m.ID]
	switch {
	case !ok:
		m.Reply(messages.Released{}, fmt.Errorf("%w: session %q holds no lease in pool %s", messages.ErrUnknownLease, m.ID, p.Config.Name))
	case s.writing != opNone:
		s.queued = append(s.queued, m)
	case s.state == pending && !s.recovered:
		// A cold start in progress, nothing stored yet: drop the claim.
		p.unclaim(s, fmt.Errorf("%w: session %q was released while its container started", messages.ErrNotReady, s.id))
		m.Reply(messages.Released{Type: messages.TypeReleased, Pool: p.Config.Name, ID: m.ID, Slot: s.slot}, nil)
	default:
		p.startDelete(ctx, s, "released", m.Reply)
	}
}

func (p *poolActor) renew(ctx actor.Context, m messages.Renew) {
	if err := messages.ValidateID(m.ID); err != nil {
		m.Reply(messages.Lease{}, err)
		return
	}
	s, ok := p.sessions[m.ID]
	switch {
	case ok && s.writing == opDelete:
		s.queued = append(s.queued, m)
	case ok && (s.writing != opNone && s.state == leased || s.state == pending && s.recovered):
		s.waiters = append(s.waiters, m.Reply)
		s.waitsOn = true // a renew says no deadline
	case !ok || s.state != leased || !p.now().Before(s.expiresAt) || !p.holds(s):
		m.Reply(messages.Lease{}, fmt.Errorf("%w: session %q holds no live lease in pool %s", messages.ErrUnknownLease, m.ID, p.Config.Name))
	default:
		s.waiters = append(s.waiters, m.Reply)
		p.startWrite(ctx, s, opExtend)
	}
}

// startWrite writes a session's lease (create or extend) off the mailbox.
func (p *poolActor) startWrite(ctx actor.Context, s *session, op writeOp) {
	v := p.slots[s.slot]
	now := p.now()
	if op == opCreate || s.createdAt.IsZero() {
		s.createdAt = now
	}
	rec := LeaseRecord{
		Version: LeaseSchema, Pool: p.Config.Name, ID: s.id, Slot: s.slot, Node: p.Node,
		Endpoint: v.handle.Endpoint, ContainerID: v.handle.ID, StartID: v.handle.StartID,
		CreatedAt: s.createdAt, ExpiresAt: now.Add(p.Config.AcquireTimeout.D()),
	}
	s.writing = op
	p.writes++
	if p.replay {
		return // the outcome comes from the recording
	}
	self, root, store, rev := ctx.Self(), p.Root, p.Leases, s.revision
	p.goWrite(func() {
		var newRev uint64
		var err error
		if op == opCreate {
			newRev, err = store.Create(context.Background(), rec)
		} else {
			newRev, err = store.Update(context.Background(), rec, rev)
		}
		root.Send(self, leaseWritten{id: rec.ID, op: op, revision: newRev, expiresAt: rec.ExpiresAt, err: err})
	})
}

// leaseWriters is how many goroutines a pool keeps for its lease writes:
// enough for the writes in flight under load, and no goroutine to create
// (and grow a stack for) per write.
const leaseWriters = 32

// goWrite runs a lease write off the mailbox: on one of the pool's writer
// goroutines, or on a new one when they are all busy, so that the mailbox
// never waits.
func (p *poolActor) goWrite(f func()) {
	if p.halted {
		go f()
		return
	}
	if p.writeQ == nil {
		p.writeQ = make(chan func(), 4*leaseWriters)
		for range leaseWriters {
			go func(q <-chan func()) {
				for f := range q {
					f()
				}
			}(p.writeQ)
		}
	}
	select {
	case p.writeQ <- f:
	default:
		go f()
	}
}

// startDelete ends a session's lease durably; the slot is freed when the
// delete lands, so a crash in between cannot leave two leases on one slot.
func (p *poolActor) startDelete(ctx actor.Context, s *session, reason string, reply func(messages.Released, error)) {
	if reply != nil {
		s.releasers = append(s.releasers, reply)
	}
	s.endReason = reason
	s.writing = opDelete
	p.writes++
	if p.replay {
		return
	}
	self, root, store, pool, id, rev := ctx.Self(), p.Root, p.Leases, p.Config.Name, s.id, s.revision
	p.goWrite(func() {
		root.Send(self, leaseWritten{id: id, op: opDelete, err: store.Delete(context.Background(), pool, id, rev)})
	})
}

// leaseWritten applies the outcome of a durable write and answers whoever
// waited for it.
func (p *poolActor) leaseWritten(ctx actor.Context, w leaseWritten) {
	p.writes--
	defer p.checkStopped()
	s := p.sessions[w.id]
	if s == nil || s.writing != w.op {
		// The session was abandoned meanwhile (shutdown): a lease this write
		// created or extended must not outlive it.
		if w.err == nil && (w.op == opCreate || w.op == opExtend) {
			p.deleteInBackground(ctx, w.id, w.revision)
		}
		return
	}
	s.writing = opNone
	switch w.op {
	case opCreate, opExtend:
		if w.err != nil {
			p.writeFailed(ctx, s, w)
			break
		}
		s.revision, s.expiresAt = w.revision, w.expiresAt
		if w.op == opCreate && s.callersGone(p.now()) {
			// Written after every caller stopped waiting (a slow write
			// during a NATS leader election, say): nobody will use the
			// session, and left alone it would hold a container until it
			// expired. End it now.
			p.emit(messages.EventLeaseCreated, s.slot, s.id, "")
			p.failSession(s, fmt.Errorf("%w: session %q: its lease was written after every caller stopped waiting", messages.ErrNotReady, s.id))
			p.startDelete(ctx, s, "callers gone", nil)
			return
		}
		if w.op == opCreate {
			p.emit(messages.EventLeaseCreated, s.slot, s.id, "")
		} else {
			p.emit(messages.EventLeaseRenewed, s.slot, s.id, "")
		}
		if v := p.slots[s.slot]; w.op == opCreate && v != nil && v.session == s.id && v.state == Acquired {
			ctx.Send(v.pid, slotAcquire{})
			p.snapshot(v)
		}
		if !p.holds(s) {
			// The container died while the lease was written: end it.
			p.failSession(s, fmt.Errorf("%w: the container for session %q exited", messages.ErrNotReady, s.id))
			p.startDelete(ctx, s, "container gone", nil)
			return
		}
		l := p.lease(s)
		for _, reply := range s.waiters {
			reply(l, nil)
		}
		s.waiters = nil
		s.cold = false // only the replies that waited for the start were cold
	case opDelete:
		lost := errors.Is(w.err, ErrRevisionMismatch)
		if w.err != nil && !lost {
			err := fmt.Errorf("%w: ending the lease of %q failed: %v", messages.ErrNotReady, s.id, w.err)
			for _, reply := range s.releasers {
				reply(messages.Released{}, err)
			}
			s.releasers = nil
			// The lease still holds: the caller retries the release, or
			// the lease is reaped when it expires.
			p.log.Warn("lease delete failed; the lease still holds", "session", s.id, "reason", s.endReason, "err", w.err)
			break
		}
		switch {
		case lost:
			p.emit(messages.EventLeaseRevoked, s.slot, s.id, "lost to another writer")
		case s.endReason == "released":
			p.emit(messages.EventLeaseReleased, s.slot, s.id, "")
		case s.endReason == "lease expired":
			p.emit(messages.EventLeaseExpired, s.slot, s.id, "")
		default:
			p.emit(messages.EventLeaseRevoked, s.slot, s.id, s.endReason)
		}
		replaced := p.endLease(ctx, s, s.endReason, lost)
		for _, reply := range s.releasers {
			reply(messages.Released{Type: messages.TypeReleased, Pool: p.Config.Name, ID: s.id, Slot: s.slot, Replaced: replaced}, nil)
		}
		s.releasers = nil
		p.refill(ctx)
	}
	queued := s.queued
	s.queued = nil
	for _, m := range queued {
		p.request(ctx, m)
	}
}

// writeFailed handles a failed create or extend. A revision mismatch or a
// key taken means another writer owns the lease: this node lost it and must
// not hand out the container, so the slot is drained.
func (p *poolActor) writeFailed(ctx actor.Context, s *session, w leaseWritten) {
	lost := errors.Is(w.err, ErrRevisionMismatch) || errors.Is(w.err, ErrLeaseExists)
	var err error
	switch {
	case lost && w.op == opCreate:
		// Wrapping ErrLeaseExists tells the NATS side to ask the lease's
		// holder (another node) instead.
		err = fmt.Errorf("%w: session %q already holds a lease written by another writer; retry: %w", messages.ErrNotReady, s.id, ErrLeaseExists)
	case lost:
		err = fmt.Errorf("%w: the lease of session %q was taken over by another writer", messages.ErrUnknownLease, s.id)
	default:
		err = fmt.Errorf("%w: writing the lease of session %q failed: %v", messages.ErrNotReady, s.id, w.err)
	}
	p.failSession(s, err)
	v := p.slots[s.slot]
	switch {
	case w.op == opCreate && errors.Is(w.err, ErrOutcomeUnknown):
		// The store may hold a lease of this container for the session,
		// though the caller was told no: the container goes to no one else.
		delete(p.sessions, s.id)
		if v != nil && v.session == s.id {
			v.session = ""
			p.drain(ctx, v, "lease write outcome unknown")
		}
		p.log.Warn("lease create outcome unknown; the container is stopped", "session", s.id, "err", w.err)
	case w.op == opCreate:
		// Never handed out: the container goes back to the pool unless
		// another writer may be using it.
		delete(p.sessions, s.id)
		if v != nil && v.session == s.id && v.state == Acquired {
			v.session = ""
			p.move(v, EvRelease)
			p.warmQ = append([]string{v.id}, p.warmQ...)
		}
		p.log.Warn("lease create failed", "session", s.id, "err", w.err)
	case lost:
		p.emit(messages.EventLeaseRevoked, s.slot, s.id, "lost to another writer")
		delete(p.sessions, s.id)
		if v != nil && v.session == s.id {
			v.session = ""
			p.drain(ctx, v, "lease lost to another writer")
		}
		p.log.Warn("lease lost to another writer", "session", s.id, "err", w.err)
	default:
		p.log.Warn("lease extend failed", "session", s.id, "err", w.err)
	}
}

func (p *poolActor) warmup(ctx actor.Context, m messages.Warmup) {
	if m.Count < 0 {
		m.Reply(messages.WarmupReply{}, fmt.Errorf("%w: warmup count %d is negative", messages.ErrBadRequest, m.Count))
		return
	}
	if p.stopping != nil {
		m.Reply(messages.WarmupReply{}, p.stoppingErr())
		return
	}
	p.paused = false
	n := max(min(m.Count, p.share.MaxInstances-p.total()), 0)
	for range n {
		p.spawn(ctx, nil, false)
	}
	m.Reply(messages.WarmupReply{Type: messages.TypeWarmup, Pool: p.Config.Name, Requested: m.Count, Started: n}, nil)
}

// shutdownAll ends every lease and drains every slot. The pool then stays
// paused, with no container, until the next acquire or warmup.
func (p *poolActor) shutdownAll(ctx actor.Context, reason string) messages.ShutdownReply {
	ended := 0
	for _, id := range sortedKeys(p.sessions) {
		s := p.sessions[id]
		if s.state == leased {
			ended++
		}
		p.abandon(ctx, s, fmt.Errorf("%w: pool %s: %s", messages.ErrNotReady, p.Config.Name, reason))
	}
	stopped := 0
	for _, id := range sortedKeys(p.slots) {
		v := p.slots[id]
		if v.state == Draining || v.state == Gone {
			continue
		}
		v.session = ""
		p.drain(ctx, v, reason)
		stopped++
	}
	p.claimedWarming = 0
	p.warmQ, p.warmingQ = nil, nil
	p.paused = true
	p.log.Info("all containers stopping", "reason", reason, "stopped", stopped, "leases_ended", ended)
	return messages.ShutdownReply{Type: messages.TypeShutdown, Pool: p.Config.Name, Stopped: stopped, LeasesEnded: ended}
}

// abandon drops a session at once, failing whoever waits on it, and deletes
// its stored lease in the background.
func (p *poolActor) abandon(ctx actor.Context, s *session, err error) {
	if s.state == leased {
		p.emit(messages.EventLeaseRevoked, s.slot, s.id, err.Error())
	}
	p.failSession(s, err)
	for _, reply := range s.releasers {
		reply(messages.Released{}, err)
	}
	for _, m := range s.queued {
		failRequest(m, err)
	}
	delete(p.sessions, s.id)
	// A write in flight deletes what it wrote when it lands (leaseWritten).
	if s.revision != 0 && s.writing == opNone {
		p.deleteInBackground(ctx, s.id, s.revision)
	}
}

// deleteInBackground deletes a lease no session holds any more. Its outcome
// matters to no one but the stop, which waits for writes in flight.
func (p *poolActor) deleteInBackground(ctx actor.Context, id string, rev uint64) {
	self, root, store, pool := ctx.Self(), p.Root, p.Leases, p.Config.Name
	p.writes++
	if p.replay {
		return
	}
	p.goWrite(func() {
		root.Send(self, leaseWritten{id: id, op: opNone, err: store.Delete(context.Background(), pool, id, rev)})
	})
}

// stop prepares the pool for a node shutdown (see stopPool).
func (p *poolActor) stop(ctx actor.Context, m stopPool) {
	p.stopping = &m
	if !m.leave {
		p.shutdownAll(ctx, "node stopping")
		p.checkStopped()
		return
	}
	// Leave warm and acquired containers for the next start; fail what
	// waits for a container that will not be ready before the exit, and
	// stop the containers still warming (no snapshot knows them yet).
	for _, id := range sortedKeys(p.sessions) {
		if s := p.sessions[id]; s.state == pending {
			p.failSession(s, p.stoppingErr())
			if !s.recovered {
				p.unclaim(s, p.stoppingErr())
			}
		}
	}
	for _, id := range sortedKeys(p.slots) {
		if v := p.slots[id]; v.state == Warming && !v.adopted {
			p.drain(ctx, v, "node stopping")
		}
	}
	p.checkStopped()
}

func (p *poolActor) checkStopped() {
	if p.stopping == nil || p.stopping.done == nil || p.writes > 0 {
		return
	}
	for _, v := range p.slots {
		if v.state == Draining || (v.state == Warming && !v.adopted) || !p.stopping.leave {
			return
		}
	}
	if p.stopping.leave {
		// Read by every slot actor as it stops: keep the container running.
		p.leaving.Store(true)
	}
	close(p.stopping.done)
	p.stopping.done = nil
}

// unclaim drops a pending session's claim on its warming slot.
func (p *poolActor) unclaim(s *session, err error) {
	p.failSession(s, err)
	delete(p.sessions, s.id)
	if v := p.slots[s.slot]; v != nil && v.session == s.id {
		v.session = ""
		if v.state == Warming {
			p.claimedWarming--
			p.warmingQ = append(p.warmingQ, v.id)
		}
		p.snapshot(v)
	}
}

// endLease frees the slot of a session whose lease is deleted: back to warm,
// or drained, as onRelease says; drained too when the lease was lost to
// another writer. It reports whether the container is replaced.
func (p *poolActor) endLease(ctx actor.Context, s *session, reason string, lost bool) bool {
	delete(p.sessions, s.id)
	v := p.slots[s.slot]
	if v == nil || v.session != s.id {
		return false
	}
	v.session = ""
	if v.state != Acquired {
		if v.state == Warming {
			p.claimedWarming-- // a recovered lease whose container was still being adopted
		}
		p.snapshot(v)
		return false
	}
	if p.log.Enabled(context.Background(), slog.LevelDebug) { // the arguments cost even when not logged
		p.log.Debug("lease ended", "session", s.id, "slot", v.id, "reason", reason)
	}
	if lost || p.Config.OnRelease == messages.OnReleaseReplace {
		p.drain(ctx, v, reason)
		return true
	}
	p.move(v, EvRelease)
	p.warmQ = append(p.warmQ, v.id)
	ctx.Send(v.pid, slotRelease{})
	return false
}

func (p *poolActor) drain(ctx actor.Context, v *slotView, reason string) {
	if v.state == Warming && v.session != "" {
		p.claimedWarming--
	}
	p.moveWhy(v, EvDrain, reason)
	ctx.Send(v.pid, slotDrain{reason: reason})
}

// slotEvent applies what a slot reports about its container.
func (p *poolActor) slotEvent(ctx actor.Context, e slotEvent) {
	v, ok := p.slots[e.Slot]
	if !ok {
		return
	}
	was := v.state
	if e.Event == EvReady {
		v.handle = e.Handle
	}
	if !p.moveWhy(v, e.Event, e.Reason) {
		return
	}
	switch e.Event {
	case EvReady:
		if !v.adopted {
			p.failures, p.backoffUntil, p.lastErr = 0, time.Time{}, ""
		}
		s := p.sessions[v.session]
		switch {
		case s == nil || v.session == "":
			p.warmQ = append(p.warmQ, v.id)
		case s.recovered:
			// An adopted container of a stored lease: the session holds it
			// again, at the stored revision; no write needed.
			p.claimedWarming--
			p.move(v, EvAcquire)
			ctx.Send(v.pid, slotAcquire{})
			s.state = leased
			l := p.lease(s)
			for _, reply := range s.waiters {
				reply(l, nil)
			}
			s.waiters = nil
			p.log.Info("lease recovered", "session", s.id, "slot", v.id)
		default:
			// A cold start completes: the waiting session takes the slot
			// once its lease is written.
			p.claimedWarming--
			p.move(v, EvAcquire)
			s.state = leased
			p.startWrite(ctx, s, opCreate)
		}
	case EvStartFailed, EvExited:
		switch {
		case was == Warming && v.adopted:
			p.log.Warn("adopting a container failed", "slot", v.id, "reason", e.Reason)
		case was == Warming:
			p.startFailed(ctx, e.Reason)
		case was != Draining:
			p.died++
			p.log.Warn("container died", "slot", v.id, "state", was, "reason", e.Reason)
		}
		if s := p.sessions[v.session]; s != nil && v.session != "" {
			p.containerLost(ctx, s, was, e.Reason)
		}
		v.session = ""
		p.snapshot(v)
		p.refill(ctx)
		p.checkStopped()
	case EvStopped:
		p.forget(ctx, v, "container stopped")
		ctx.Stop(v.pid)
	}
}

// slotTerminated handles a slot actor that stopped without reporting gone:
// it failed. Its own Stopping handler stopped the container; forget the slot.
func (p *poolActor) slotTerminated(ctx actor.Context, slot string) {
	if v, ok := p.slots[slot]; ok && v.state != Gone {
		p.log.Error("slot actor terminated unexpectedly", "slot", v.id, "state", v.state)
		p.forget(ctx, v, "slot actor failed")
	}
}

// containerLost handles a session whose container failed or died.
func (p *poolActor) containerLost(ctx actor.Context, s *session, was State, reason string) {
	err := fmt.Errorf("%w: the container for session %q failed: %s", messages.ErrNotReady, s.id, reason)
	if was == Warming {
		p.claimedWarming--
	}
	p.failSession(s, err)
	switch {
	case s.writing != opNone:
		// The write's outcome sees the slot gone and ends the lease then.
	case s.revision != 0:
		p.startDelete(ctx, s, "container gone", nil)
	default:
		delete(p.sessions, s.id)
	}
}

func (p *poolActor) startFailed(ctx actor.Context, reason string) {
	p.failures++
	p.lastErr = reason
	d := min(backoffBase<<min(p.failures-1, 10), backoffMax)
	d = time.Duration(float64(d) * (0.8 + 0.4*p.rand.Float64()))
	p.backoffUntil = p.now().Add(d)
	p.log.Warn("container start failed; backing off", "failures", p.failures, "retry_in", d.Round(time.Millisecond), "reason", reason)
	if p.backoffTimer != nil {
		p.backoffTimer.Stop()
	}
	self, root := ctx.Self(), p.Root
	p.backoffTimer = p.Clock.AfterFunc(d, func() { root.Send(self, backoffTick{}) })
}

// forget drops a slot that is gone (or whose actor failed) and refills.
func (p *poolActor) forget(ctx actor.Context, v *slotView, reason string) {
	if v.state == Warming && v.session != "" {
		p.claimedWarming--
	}
	p.counts[v.state]--
	v.state = Gone
	p.snapshot(v)
	delete(p.slots, v.id)
	delete(p.pids, v.pid.Id)
	if s := p.sessions[v.session]; s != nil && v.session != "" {
		p.abandon(ctx, s, fmt.Errorf("%w: %s", messages.ErrNotReady, reason))
	}
	p.refill(ctx)
	p.checkStopped()
}

// refresh reaps expired leases; the refill follows.
func (p *poolActor) refresh(ctx actor.Context) {
	now := p.now()
	var expired []*session
	for _, s := range p.sessions {
		if s.state == leased && s.writing == opNone && !now.Before(s.expiresAt) {
			expired = append(expired, s)
		}
	}
	slices.SortFunc(expired, func(a, b *session) int {
		if c := a.expiresAt.Compare(b.expiresAt); c != 0 {
			return c
		}
		return strings.Compare(a.id, b.id)
	})
	for _, s := range expired {
		p.log.Info("lease expired", "session", s.id, "slot", s.slot)
		p.startDelete(ctx, s, "lease expired", nil)
	}
	before := p.started
	p.refill(ctx)
	p.emit(messages.EventRefresh, "", "", fmt.Sprintf("expired=%d started=%d warm=%d total=%d", len(expired), p.started-before, p.counts[Warm], p.total()))
}

// refill starts containers until warm plus unclaimed warming reach warmTarget,
// within maxInstances and outside a backoff.
func (p *poolActor) refill(ctx actor.Context) {
	if p.paused || p.stopping != nil || p.now().Before(p.backoffUntil) {
		return
	}
	for p.available() < p.share.WarmTarget && p.total() < p.share.MaxInstances {
		p.spawn(ctx, nil, false)
	}
}

func (p *poolActor) available() int {
	return p.counts[Warm] + p.counts[Warming] - p.claimedWarming
}

func (p *poolActor) total() int {
	return p.counts[Warming] + p.counts[Warm] + p.counts[Acquired] + p.counts[Draining]
}

// spawn starts a slot actor: for a new container, or (adopt set) for one
// from an earlier run, which drainAtOnce stops instead of keeping.
func (p *poolActor) spawn(ctx actor.Context, adopt *driver.Found, drainAtOnce bool) *slotView {
	var id string
	if adopt != nil {
		id = adopt.Slot
	} else {
		id = p.NewID()
		if p.cur != nil {
			p.cur.NewIDs = append(p.cur.NewIDs, id)
		}
	}
	spec := driver.Spec{Pool: p.Config.Name, Slot: id, Node: p.Node, Template: p.Config.Template}
	sa := &slotActor{id: id, spec: spec, drv: p.Driver, clock: p.Clock, root: p.Root, log: p.log.With("slot", id),
		drainAtOnce: drainAtOnce, leaving: p.leaving, inert: p.replay}
	if adopt != nil {
		h := adopt.Handle
		sa.adopt = &h
	}
	props := actor.PropsFromProducer(func() actor.Actor { return sa },
		actor.WithSupervisor(actor.NewOneForOneStrategy(0, 0, func(any) actor.Directive { return actor.StopDirective })))
	pid, err := ctx.SpawnNamed(props, id)
	if err != nil {
		// Only a duplicate name fails; ids are unique, so this is a bug.
		p.log.Error("spawning a slot failed", "slot", id, "err", err)
		pid = ctx.Spawn(props)
	}
	v := &slotView{id: id, pid: pid, state: Warming, since: p.now(), adopted: adopt != nil}
	if adopt != nil {
		v.handle = adopt.Handle
	}
	p.slots[id] = v
	p.pids[pid.Id] = id
	p.counts[Warming]++
	if drainAtOnce {
		p.moveWhy(v, EvDrain, "a container no snapshot or lease owns")
	} else {
		p.warmingQ = append(p.warmingQ, v.id)
		p.snapshot(v)
		reason := ""
		if adopt != nil {
			reason = "adopting a container of an earlier run"
		}
		p.emit(messages.EventSlotWarming, v.id, "", reason)
	}
	if adopt == nil {
		p.started++
	}
	return v
}

// move applies an event to the pool's view of a slot; false if it does not
// apply (a late report for a slot the pool already moved on).
func (p *poolActor) move(v *slotView, ev Event) bool { return p.moveWhy(v, ev, "") }

// moveWhy is move with the reason its events carry.
func (p *poolActor) moveWhy(v *slotView, ev Event, reason string) bool {
	step, err := Transition(v.state, ev, p.now())
	if err != nil {
		p.log.Debug("slot event ignored", "slot", v.id, "err", err)
		return false
	}
	p.counts[v.state]--
	p.counts[step.To]++
	v.state, v.since = step.To, step.At
	p.snapshot(v)
	switch {
	case step.From == step.To:
	case step.To == Warm && step.From == Warming:
		p.emit(messages.EventSlotWarm, v.id, "", reason)
	case step.To == Warm:
		p.emit(messages.EventSlotReleased, v.id, "", reason)
	case step.To == Acquired:
		p.emit(messages.EventSlotAcquired, v.id, v.session, reason)
	case step.To == Draining:
		if ev == EvStartFailed || ev == EvExited {
			p.emit(messages.EventSlotFailed, v.id, v.session, reason)
		}
		p.emit(messages.EventSlotDraining, v.id, v.session, reason)
	case step.To == Gone:
		p.emit(messages.EventSlotStopped, v.id, "", reason)
	}
	return true
}

// emit hands an event to the sink, numbered in the order of the pool's
// decisions.
func (p *poolActor) emit(kind, slot, session, reason string) {
	if p.Events == nil && p.cur == nil {
		return
	}
	p.eventSeq++
	e := messages.Event{
		Type: messages.TypeEvent, Seq: p.eventSeq, Time: p.now(), Kind: kind,
		Pool: p.Config.Name, Node: p.Node, Slot: slot, Session: session, Reason: reason,
	}
	if p.cur != nil {
		p.cur.Events = append(p.cur.Events, e)
	}
	if p.Events != nil {
		p.Events.Emit(e)
	}
}

// snapshot queues the slot's current state for the snapshot store.
func (p *poolActor) snapshot(v *slotView) {
	if p.snap == nil {
		return
	}
	p.snap.put(SlotSnapshot{
		Version: SnapshotSchema, Pool: p.Config.Name, Node: p.Node, Slot: v.id, State: v.state.String(),
		Handle: v.handle, Session: v.session, Since: v.since, UpdatedAt: p.now(),
	})
}

func (p *poolActor) popWarm() *slotView {
	for len(p.warmQ) > 0 {
		v := p.slots[p.warmQ[0]]
		p.warmQ = p.warmQ[1:]
		if v != nil && v.state == Warm && v.session == "" {
			return v
		}
	}
	return nil
}

func (p *poolActor) popWarming() *slotView {
	for len(p.warmingQ) > 0 {
		v := p.slots[p.warmingQ[0]]
		p.warmingQ = p.warmingQ[1:]
		if v != nil && v.state == Warming && v.session == "" && !v.adopted {
			return v
		}
	}
	return nil
}

func (p *poolActor) lease(s *session) messages.Lease {
	v := p.slots[s.slot]
	return messages.Lease{
		Type: messages.TypeLease, Pool: p.Config.Name, ID: s.id, Slot: s.slot,
		Endpoint: v.handle.Endpoint, Node: p.Node, ExpiresAt: s.expiresAt, Cold: s.cold, Revision: s.revision,
	}
}

func (p *poolActor) stats() messages.Stats {
	st := messages.Stats{
		Type: messages.TypeStats, Pool: p.Config.Name, Node: p.Node,
		Warm: p.counts[Warm], Acquired: p.counts[Acquired], Warming: p.counts[Warming], Draining: p.counts[Draining],
		Total: p.total(), Started: p.started, Died: p.died, StartFailures: p.failures, LastError: p.lastErr,
		Paused: p.paused, Config: p.Config, Share: p.share,
	}
	for _, s := range p.sessions {
		st.Waiting += len(s.waiters)
	}
	if p.now().Before(p.backoffUntil) {
		t := p.backoffUntil
		st.BackoffUntil = &t
	}
	return st
}

func (p *poolActor) failSession(s *session, err error) {
	for _, w := range s.waiters {
		w(messages.Lease{}, err)
	}
	s.waiters = nil
}

func (p *poolActor) failWaiters(err error) {
	for _, id := range sortedKeys(p.sessions) {
		s := p.sessions[id]
		p.failSession(s, err)
		for _, r := range s.releasers {
			r(messages.Released{}, err)
		}
		s.releasers = nil
		for _, m := range s.queued {
			failRequest(m, err)
		}
		s.queued = nil
	}
}

func (p *poolActor) scheduleRefresh(ctx actor.Context) {
	self, root := ctx.Self(), p.Root
	p.refreshTimer = p.Clock.AfterFunc(p.Config.RefreshInterval.D(), func() { root.Send(self, refreshTick{}) })
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
