package actors

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
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

// Timer ticks: unexported, never serialised.
type (
	refreshTick struct{}
	backoffTick struct{}
	// stopPool asks the pool to drain every slot for a node shutdown; done is
	// closed once no slot is left.
	stopPool struct{ done chan struct{} }
)

// NotInfluenceReceiveTimeout marks ticks as housekeeping.
func (refreshTick) NotInfluenceReceiveTimeout() {}
func (backoffTick) NotInfluenceReceiveTimeout() {}

// slotView is the pool's picture of one slot, moved by the same Transition
// as the slot actor itself: by the pool's own decisions, and by the events
// the slot reports.
type slotView struct {
	id       string
	pid      *actor.PID
	state    State
	since    time.Time
	endpoint string
	// session holds or (while warming) has claimed the slot; "" if free.
	session string
}

type sessionState uint8

const (
	// pending: waiting for a cold start of its claimed slot.
	pending sessionState = iota + 1
	// leased: holds an acquired slot.
	leased
)

type session struct {
	id        string
	slot      string
	state     sessionState
	expiresAt time.Time
	cold      bool
	waiters   []func(messages.Lease, error)
}

// poolActor makes every decision of one pool, one message at a time: which
// slot a session gets, when a lease ends, when to start containers. It never
// does I/O; slot actors do, and report back.
type poolActor struct {
	PoolOptions
	log *slog.Logger

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

	started, died int

	failures     int
	backoffUntil time.Time
	lastErr      string
	backoffTimer clock.Timer
	refreshTimer clock.Timer
	rand         *rand.Rand

	// paused after ShutdownAll: no refill until the next acquire or warmup.
	paused   bool
	stopping *stopPool
}

func newPoolActor(o PoolOptions) *poolActor {
	return &poolActor{
		PoolOptions: o,
		log:         o.Logger.With("pool", o.Config.Name, "node", o.Node),
		slots:       map[string]*slotView{},
		pids:        map[string]string{},
		sessions:    map[string]*session{},
		rand:        rand.New(rand.NewPCG(o.Seed, o.Seed^0x9e3779b97f4a7c15)),
	}
}

func (p *poolActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		p.log.Info("pool started", "warm_target", p.Config.WarmTarget, "max_instances", p.Config.MaxInstances)
		p.refill(ctx)
		p.scheduleRefresh(ctx)
	case messages.Acquire:
		p.acquire(ctx, m)
	case messages.Release:
		p.release(ctx, m)
	case messages.Renew:
		p.renew(m)
	case messages.GetStats:
		m.Reply(p.stats(), nil)
	case messages.Warmup:
		p.warmup(ctx, m)
	case messages.ShutdownAll:
		m.Reply(p.shutdownAll(ctx, "shutdown requested"), nil)
	case slotEvent:
		p.slotEvent(ctx, m)
	case refreshTick:
		p.refresh(ctx)
		p.scheduleRefresh(ctx)
	case backoffTick:
		p.backoffTimer = nil
		p.refill(ctx)
	case stopPool:
		p.stopping = &m
		p.shutdownAll(ctx, "node stopping")
		p.checkStopped()
	case *actor.Terminated:
		// A slot actor stopped without reporting gone: it failed. Its own
		// Stopping handler stopped the container; forget the slot.
		if v, ok := p.slots[p.pids[m.Who.Id]]; ok && v.state != Gone {
			p.log.Error("slot actor terminated unexpectedly", "slot", v.id, "state", v.state)
			p.forget(ctx, v, "slot actor failed")
		}
	case *actor.Stopping:
		if p.refreshTimer != nil {
			p.refreshTimer.Stop()
		}
		if p.backoffTimer != nil {
			p.backoffTimer.Stop()
		}
		p.failWaiters(fmt.Errorf("%w: pool %s is stopping", messages.ErrNotReady, p.Config.Name))
	}
}

func (p *poolActor) now() time.Time { return p.Clock.Now() }

// acquire implements the original library's getContainer: sticky, then warm,
// then a cold start, else exhausted.
func (p *poolActor) acquire(ctx actor.Context, m messages.Acquire) {
	if err := messages.ValidateID(m.ID); err != nil {
		m.Reply(messages.Lease{}, err)
		return
	}
	if p.stopping != nil {
		m.Reply(messages.Lease{}, fmt.Errorf("%w: pool %s is stopping", messages.ErrNotReady, p.Config.Name))
		return
	}
	now := p.now()
	if s, ok := p.sessions[m.ID]; ok {
		switch {
		case s.state == pending:
			s.waiters = append(s.waiters, m.Reply)
			return
		case !now.Before(s.expiresAt):
			p.endLease(ctx, s, "lease expired")
		case p.slots[s.slot] == nil || p.slots[s.slot].state != Acquired:
			// Its container died: the session gets a new one, never another's.
			delete(p.sessions, s.id)
		default:
			s.expiresAt = now.Add(p.Config.AcquireTimeout.D())
			m.Reply(p.lease(s, false), nil)
			return
		}
	}
	p.paused = false
	if v := p.popWarm(); v != nil {
		s := &session{id: m.ID, slot: v.id, state: leased, expiresAt: now.Add(p.Config.AcquireTimeout.D())}
		p.sessions[m.ID] = s
		v.session = m.ID
		p.move(v, EvAcquire)
		ctx.Send(v.pid, slotAcquire{})
		m.Reply(p.lease(s, false), nil)
		p.refill(ctx)
		return
	}
	// Nothing warm: wait for a container that is already starting, else
	// start one, else the pool is full.
	v := p.popWarming()
	if v == nil {
		if p.total() >= p.Config.MaxInstances {
			m.Reply(messages.Lease{}, fmt.Errorf("%w: pool %s has no warm container and runs maxInstances (%d) containers; retry later",
				messages.ErrExhausted, p.Config.Name, p.Config.MaxInstances))
			return
		}
		if now.Before(p.backoffUntil) {
			m.Reply(messages.Lease{}, fmt.Errorf("%w: pool %s holds back container starts until %s after %d failures; last: %s",
				messages.ErrNotReady, p.Config.Name, p.backoffUntil.Format(time.RFC3339), p.failures, p.lastErr))
			return
		}
		v = p.spawn(ctx)
	}
	v.session = m.ID
	p.claimedWarming++
	p.sessions[m.ID] = &session{id: m.ID, slot: v.id, state: pending, cold: true, waiters: []func(messages.Lease, error){m.Reply}}
	p.refill(ctx)
}

func (p *poolActor) release(ctx actor.Context, m messages.Release) {
	if err := messages.ValidateID(m.ID); err != nil {
		m.Reply(messages.Released{}, err)
		return
	}
	s, ok := p.sessions[m.ID]
	if !ok {
		m.Reply(messages.Released{}, fmt.Errorf("%w: session %q holds no lease in pool %s", messages.ErrUnknownLease, m.ID, p.Config.Name))
		return
	}
	replaced := p.endLease(ctx, s, "released")
	m.Reply(messages.Released{Type: messages.TypeReleased, Pool: p.Config.Name, ID: m.ID, Slot: s.slot, Replaced: replaced}, nil)
	p.refill(ctx)
}

func (p *poolActor) renew(m messages.Renew) {
	if err := messages.ValidateID(m.ID); err != nil {
		m.Reply(messages.Lease{}, err)
		return
	}
	s, ok := p.sessions[m.ID]
	now := p.now()
	if !ok || s.state != leased || !now.Before(s.expiresAt) || p.slots[s.slot] == nil || p.slots[s.slot].state != Acquired {
		m.Reply(messages.Lease{}, fmt.Errorf("%w: session %q holds no live lease in pool %s", messages.ErrUnknownLease, m.ID, p.Config.Name))
		return
	}
	s.expiresAt = now.Add(p.Config.AcquireTimeout.D())
	m.Reply(p.lease(s, false), nil)
}

func (p *poolActor) warmup(ctx actor.Context, m messages.Warmup) {
	if m.Count < 0 {
		m.Reply(messages.WarmupReply{}, fmt.Errorf("%w: warmup count %d is negative", messages.ErrBadRequest, m.Count))
		return
	}
	if p.stopping != nil {
		m.Reply(messages.WarmupReply{}, fmt.Errorf("%w: pool %s is stopping", messages.ErrNotReady, p.Config.Name))
		return
	}
	p.paused = false
	n := min(m.Count, p.Config.MaxInstances-p.total())
	for range n {
		p.spawn(ctx)
	}
	m.Reply(messages.WarmupReply{Type: messages.TypeWarmup, Pool: p.Config.Name, Requested: m.Count, Started: max(n, 0)}, nil)
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
		p.failSession(s, fmt.Errorf("%w: pool %s: %s", messages.ErrNotReady, p.Config.Name, reason))
		delete(p.sessions, id)
	}
	stopped := 0
	for _, id := range sortedKeys(p.slots) {
		v := p.slots[id]
		if v.state == Draining || v.state == Gone {
			continue
		}
		v.session = ""
		p.move(v, EvDrain)
		ctx.Send(v.pid, slotDrain{reason: reason})
		stopped++
	}
	p.claimedWarming = 0
	p.warmQ, p.warmingQ = nil, nil
	p.paused = true
	p.log.Info("all containers stopping", "reason", reason, "stopped", stopped, "leases_ended", ended)
	return messages.ShutdownReply{Type: messages.TypeShutdown, Pool: p.Config.Name, Stopped: stopped, LeasesEnded: ended}
}

// endLease ends a session's lease and returns its container to the pool or
// drains it, as onRelease says. It reports whether the container is replaced.
func (p *poolActor) endLease(ctx actor.Context, s *session, reason string) bool {
	delete(p.sessions, s.id)
	v := p.slots[s.slot]
	if v == nil || v.session != s.id {
		return false
	}
	v.session = ""
	if s.state == pending {
		p.claimedWarming--
		p.failSession(s, fmt.Errorf("%w: session %q was released while its container started", messages.ErrNotReady, s.id))
		p.warmingQ = append(p.warmingQ, v.id)
		return false
	}
	if v.state != Acquired {
		return false
	}
	p.log.Debug("lease ended", "session", s.id, "slot", v.id, "reason", reason)
	if p.Config.OnRelease == messages.OnReleaseReplace {
		p.move(v, EvDrain)
		ctx.Send(v.pid, slotDrain{reason: reason})
		return true
	}
	p.move(v, EvRelease)
	p.warmQ = append(p.warmQ, v.id)
	ctx.Send(v.pid, slotRelease{})
	return false
}

// slotEvent applies what a slot reports about its container.
func (p *poolActor) slotEvent(ctx actor.Context, e slotEvent) {
	v, ok := p.slots[e.Slot]
	if !ok {
		return
	}
	was := v.state
	if !p.move(v, e.Event) {
		return
	}
	switch e.Event {
	case EvReady:
		v.endpoint = e.Endpoint
		p.failures, p.backoffUntil, p.lastErr = 0, time.Time{}, ""
		if s := p.sessions[v.session]; s != nil && v.session != "" {
			// A cold start completes: the waiting session takes the slot.
			p.claimedWarming--
			p.move(v, EvAcquire)
			ctx.Send(v.pid, slotAcquire{})
			s.state, s.expiresAt = leased, p.now().Add(p.Config.AcquireTimeout.D())
			l := p.lease(s, true)
			for _, w := range s.waiters {
				w(l, nil)
			}
			s.waiters = nil
		} else {
			p.warmQ = append(p.warmQ, v.id)
		}
	case EvStartFailed, EvExited:
		if was == Warming {
			p.startFailed(ctx, e.Reason)
		} else if was != Draining {
			p.died++
			p.log.Warn("container died", "slot", v.id, "state", was, "reason", e.Reason)
		}
		if s := p.sessions[v.session]; s != nil && v.session != "" {
			if s.state == pending {
				p.claimedWarming--
			}
			p.failSession(s, fmt.Errorf("%w: the container for session %q failed: %s", messages.ErrNotReady, s.id, e.Reason))
			delete(p.sessions, s.id)
		}
		v.session = ""
		p.refill(ctx)
	case EvStopped:
		p.forget(ctx, v, "container stopped")
		ctx.Stop(v.pid)
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
	p.counts[v.state]--
	delete(p.slots, v.id)
	delete(p.pids, v.pid.Id)
	if s := p.sessions[v.session]; s != nil && v.session != "" {
		if s.state == pending {
			p.claimedWarming--
		}
		p.failSession(s, fmt.Errorf("%w: %s", messages.ErrNotReady, reason))
		delete(p.sessions, s.id)
	}
	p.refill(ctx)
	p.checkStopped()
}

func (p *poolActor) checkStopped() {
	if p.stopping != nil && len(p.slots) == 0 && p.stopping.done != nil {
		close(p.stopping.done)
		p.stopping.done = nil
	}
}

// refresh reaps expired leases; the refill follows.
func (p *poolActor) refresh(ctx actor.Context) {
	now := p.now()
	var expired []*session
	for _, s := range p.sessions {
		if s.state == leased && !now.Before(s.expiresAt) {
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
		p.endLease(ctx, s, "lease expired")
	}
	p.refill(ctx)
}

// refill starts containers until warm plus unclaimed warming reach warmTarget,
// within maxInstances and outside a backoff.
func (p *poolActor) refill(ctx actor.Context) {
	if p.paused || p.stopping != nil || p.now().Before(p.backoffUntil) {
		return
	}
	for p.available() < p.Config.WarmTarget && p.total() < p.Config.MaxInstances {
		p.spawn(ctx)
	}
}

func (p *poolActor) available() int {
	return p.counts[Warm] + p.counts[Warming] - p.claimedWarming
}

func (p *poolActor) total() int {
	return p.counts[Warming] + p.counts[Warm] + p.counts[Acquired] + p.counts[Draining]
}

func (p *poolActor) spawn(ctx actor.Context) *slotView {
	id := p.NewID()
	spec := driver.Spec{Pool: p.Config.Name, Slot: id, Node: p.Node, Template: p.Config.Template}
	sa := &slotActor{id: id, spec: spec, drv: p.Driver, clock: p.Clock, root: p.Root, log: p.log.With("slot", id)}
	props := actor.PropsFromProducer(func() actor.Actor { return sa },
		actor.WithSupervisor(actor.NewOneForOneStrategy(0, 0, func(any) actor.Directive { return actor.StopDirective })))
	pid, err := ctx.SpawnNamed(props, id)
	if err != nil {
		// Only a duplicate name fails; ids are unique, so this is a bug.
		p.log.Error("spawning a slot failed", "slot", id, "err", err)
		pid = ctx.Spawn(props)
	}
	v := &slotView{id: id, pid: pid, state: Warming, since: p.now()}
	p.slots[id] = v
	p.pids[pid.Id] = id
	p.started++
	p.counts[Warming]++
	p.warmingQ = append(p.warmingQ, v.id)
	return v
}

// move applies an event to the pool's view of a slot; false if it does not
// apply (a late report for a slot the pool already moved on).
func (p *poolActor) move(v *slotView, ev Event) bool {
	step, err := Transition(v.state, ev, p.now())
	if err != nil {
		p.log.Debug("slot event ignored", "slot", v.id, "err", err)
		return false
	}
	p.counts[v.state]--
	p.counts[step.To]++
	v.state, v.since = step.To, step.At
	return true
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
		if v != nil && v.state == Warming && v.session == "" {
			return v
		}
	}
	return nil
}

func (p *poolActor) lease(s *session, cold bool) messages.Lease {
	v := p.slots[s.slot]
	return messages.Lease{
		Type: messages.TypeLease, Pool: p.Config.Name, ID: s.id, Slot: s.slot,
		Endpoint: v.endpoint, Node: p.Node, ExpiresAt: s.expiresAt, Cold: cold,
	}
}

func (p *poolActor) stats() messages.Stats {
	st := messages.Stats{
		Type: messages.TypeStats, Pool: p.Config.Name, Node: p.Node,
		Warm: p.counts[Warm], Acquired: p.counts[Acquired], Warming: p.counts[Warming], Draining: p.counts[Draining],
		Total: p.total(), Started: p.started, Died: p.died, StartFailures: p.failures, LastError: p.lastErr, Paused: p.paused, Config: p.Config,
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
		p.failSession(p.sessions[id], err)
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
