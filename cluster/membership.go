package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/warmpool/warmpool/messages"
)

// Defaults of MembershipOptions.
const (
	DefaultHeartbeatInterval = time.Second
	DefaultDeadAfter         = 5 * time.Second
)

const (
	heartbeatType = "warmpool.v1.heartbeat"
	nodesSubject  = "warmpool.v1.nodes."
	// flushTimeout bounds Leave's flush when its ctx has no deadline.
	flushTimeout = 5 * time.Second
)

// ErrMembershipClosed is returned by Leave after Close or Leave.
var ErrMembershipClosed = errors.New("membership closed")

// Share is node's part of a cluster-wide total (warmTarget, maxInstances)
// split among the live nodes: each gets total/len(nodes), and the first
// total%len(nodes) in sorted order get one more. Ids are sorted and
// de-duplicated so that every node, given the same live set, computes the
// same split without talking to the others. A node not in nodes, an empty
// nodes or a negative total gets 0.
func Share(total int, nodes []string, node string) int {
	if total <= 0 {
		return 0
	}
	ids := slices.Compact(slices.Sorted(slices.Values(nodes)))
	i, ok := slices.BinarySearch(ids, node)
	if !ok {
		return 0
	}
	n := total / len(ids)
	if i < total%len(ids) {
		n++
	}
	return n
}

// PoolLoad is what a node reports of one of its pools.
type PoolLoad struct {
	Warm     int `json:"warm"`
	Warming  int `json:"warming"`
	Acquired int `json:"acquired"`
	Draining int `json:"draining"`
	Total    int `json:"total"`
}

// Member is a live node as last heard.
type Member struct {
	Node  string              `json:"node"`
	Pools map[string]PoolLoad `json:"pools"`
	// LastSeen is the local time its last heartbeat arrived (for itself,
	// when it last sent one): the sender's clock is never trusted.
	LastSeen time.Time `json:"last_seen"`
	// Draining: the node takes no new sessions and leaves when its last
	// lease ends.
	Draining bool `json:"draining"`
}

// MembershipOptions configure a Membership. Zero fields take the defaults.
type MembershipOptions struct {
	// Node is this node's id, 1 to 128 of [A-Za-z0-9_-]; required.
	Node string `json:"node"`
	// Interval between heartbeats, at least 1ms. Default 1s.
	Interval time.Duration `json:"interval"`
	// DeadAfter is how long a silent node stays live; more than
	// 2*Interval so one lost heartbeat does not kill a node. Default 5s.
	// A node is declared dead at most DeadAfter + Interval/2 after its last
	// heartbeat arrived.
	DeadAfter time.Duration `json:"dead_after"`
	// Logger gets the logs; default slog.Default().
	Logger *slog.Logger `json:"-"`
	// Load, when set, is called before each heartbeat for what this node
	// reports of its pools.
	Load func() map[string]PoolLoad `json:"-"`
	// OnChange, when set, is called with the sorted ids of the live nodes
	// that are not draining: once at start, then each time the set
	// changes, in order, from one goroutine. It must not call Close or
	// Leave.
	OnChange func(live []string) `json:"-"`
	// OnDead, when set, is called with the id of a node declared dead by
	// silence (not one that left), from its own goroutine.
	OnDead func(node string) `json:"-"`
}

func (o MembershipOptions) withDefaults() MembershipOptions {
	if o.Interval == 0 {
		o.Interval = DefaultHeartbeatInterval
	}
	if o.DeadAfter == 0 {
		o.DeadAfter = DefaultDeadAfter
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

func (o MembershipOptions) valid() error {
	if err := validName("node", o.Node); err != nil {
		return fmt.Errorf("%w: membership.node %q must be 1 to %d characters of [A-Za-z0-9_-]",
			messages.ErrConfigValidation, o.Node, maxNameLength)
	}
	if o.Interval < time.Millisecond {
		return fmt.Errorf("%w: membership.interval is %s, must be at least 1ms", messages.ErrConfigValidation, o.Interval)
	}
	if o.DeadAfter <= 2*o.Interval {
		return fmt.Errorf("%w: membership.dead_after is %s, must be more than 2*interval (%s)",
			messages.ErrConfigValidation, o.DeadAfter, 2*o.Interval)
	}
	return nil
}

// heartbeat is the message a node publishes every Interval.
type heartbeat struct {
	Type     string              `json:"type"`
	Node     string              `json:"node"`
	Seq      uint64              `json:"seq"`
	SentAt   time.Time           `json:"sent_at"`
	Pools    map[string]PoolLoad `json:"pools"`
	Leaving  bool                `json:"leaving"`
	Draining bool                `json:"draining,omitempty"`
}

// Membership tracks the live nodes by their heartbeats on
// warmpool.v1.nodes.<node>. It is safe for concurrent use.
type Membership struct {
	nc  *nats.Conn
	o   MembershipOptions
	log *slog.Logger
	sub *nats.Subscription

	// seq is touched by the run goroutine only, or by Leave after it ended.
	seq uint64
	// lastCheck is when run last looked for silent nodes (run only).
	lastCheck time.Time

	mu      sync.Mutex
	self    Member
	members map[string]Member // the others

	malformed atomic.Int64
	draining  atomic.Bool

	// pending holds the live sets OnChange has yet to see.
	nmu     sync.Mutex
	pending [][]string
	wake    chan struct{}

	stop     chan struct{}
	wg       sync.WaitGroup
	stopOnce sync.Once
}

// NewMembership joins: it subscribes to the others' heartbeats, sends its
// first one, and keeps sending them until Close or Leave. nc stays the
// caller's.
func NewMembership(nc *nats.Conn, o MembershipOptions) (*Membership, error) {
	o = o.withDefaults()
	if err := o.valid(); err != nil {
		return nil, err
	}
	if nc == nil {
		return nil, fmt.Errorf("%w: membership needs a NATS connection", messages.ErrConfigValidation)
	}
	m := &Membership{
		nc:      nc,
		o:       o,
		log:     o.Logger.With("node", o.Node),
		self:    Member{Node: o.Node},
		members: map[string]Member{},
		wake:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
	}
	// A buffer so a burst of heartbeats does not make a slow consumer.
	msgs := make(chan *nats.Msg, 1024)
	sub, err := nc.ChanSubscribe(nodesSubject+"*", msgs)
	if err != nil {
		return nil, fmt.Errorf("subscribe to heartbeats: %w", err)
	}
	m.sub = sub
	m.publish(false)
	m.notify()
	m.wg.Add(2)
	go m.run(msgs)
	go m.notifyLoop()
	return m, nil
}

// Live returns the live nodes, itself included, sorted by node.
func (m *Membership) Live() []Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	live := make([]Member, 0, len(m.members)+1)
	live = append(live, m.self)
	for _, mb := range m.members {
		live = append(live, mb)
	}
	for i := range live {
		live[i].Pools = maps.Clone(live[i].Pools)
	}
	slices.SortFunc(live, func(a, b Member) int { return strings.Compare(a.Node, b.Node) })
	return live
}

// Malformed counts the messages on the heartbeat subjects that were ignored
// because they were not valid heartbeats.
func (m *Membership) Malformed() int64 { return m.malformed.Load() }

// Close stops heartbeating without telling the others, who declare the node
// dead after DeadAfter. It waits for the goroutines to end.
func (m *Membership) Close() { m.halt() }

// MostWarm names the other live node, not draining, with the most warm
// containers of pool by its last heartbeat (ties to the lowest id); "" when
// none has one. It copies nothing: it runs on every acquire.
func (m *Membership) MostWarm(pool string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	best, most := "", 0
	for id, mb := range m.members {
		if mb.Draining {
			continue
		}
		if w := mb.Pools[pool].Warm; w > most || w == most && w > 0 && id < best {
			best, most = id, w
		}
	}
	return best
}

// SetDraining marks this node as draining in its heartbeats; the serving
// set (OnChange) leaves it out at once.
func (m *Membership) SetDraining() {
	if m.draining.Swap(true) {
		return
	}
	m.mu.Lock()
	m.self.Draining = true
	m.mu.Unlock()
	m.notify()
}

// Leave stops heartbeating and sends a last heartbeat saying the node is
// leaving, so the others drop it at once. ctx bounds the flush.
func (m *Membership) Leave(ctx context.Context) error {
	if !m.halt() {
		return ErrMembershipClosed
	}
	m.publish(true)
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, flushTimeout)
		defer cancel()
	}
	if err := m.nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("flush leaving heartbeat: %w", err)
	}
	return nil
}

// halt stops the goroutines; it reports whether this call did.
func (m *Membership) halt() bool {
	first := false
	m.stopOnce.Do(func() {
		first = true
		if err := m.sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			m.log.Warn("unsubscribing from heartbeats failed", "err", err)
		}
		close(m.stop)
		m.wg.Wait()
	})
	return first
}

func (m *Membership) run(msgs <-chan *nats.Msg) {
	defer m.wg.Done()
	beat := time.NewTicker(m.o.Interval)
	defer beat.Stop()
	check := time.NewTicker(m.o.Interval / 2)
	defer check.Stop()
	for {
		select {
		case <-m.stop:
			return
		case msg := <-msgs:
			m.receive(msg)
		case <-beat.C:
			m.publish(false)
		case <-check.C:
			// The heartbeats already here first: after a stall of this
			// process they are what says the others are alive.
			for drained := false; !drained; {
				select {
				case msg := <-msgs:
					m.receive(msg)
				default:
					drained = true
				}
			}
			m.expire(time.Now())
		}
	}
}

func (m *Membership) publish(leaving bool) {
	var pools map[string]PoolLoad
	if m.o.Load != nil {
		pools = maps.Clone(m.o.Load())
	}
	if pools == nil {
		pools = map[string]PoolLoad{}
	}
	m.seq++
	now := time.Now()
	draining := m.draining.Load()
	data, err := json.Marshal(heartbeat{
		Type: heartbeatType, Node: m.o.Node, Seq: m.seq, SentAt: now.UTC(), Pools: pools, Leaving: leaving, Draining: draining,
	})
	if err != nil {
		m.log.Warn("encoding heartbeat failed", "err", err)
		return
	}
	m.mu.Lock()
	m.self = Member{Node: m.o.Node, Pools: pools, LastSeen: now, Draining: draining}
	m.mu.Unlock()
	if err := m.nc.Publish(nodesSubject+m.o.Node, data); err != nil {
		m.log.Warn("publishing heartbeat failed", "err", err)
	}
}

func (m *Membership) receive(msg *nats.Msg) {
	var hb heartbeat
	if err := json.Unmarshal(msg.Data, &hb); err != nil ||
		hb.Type != heartbeatType || msg.Subject != nodesSubject+hb.Node || validName("node", hb.Node) != nil {
		m.malformed.Add(1)
		m.log.Debug("ignoring malformed heartbeat", "subject", msg.Subject, "err", err)
		return
	}
	if hb.Node == m.o.Node {
		return // our own, or a twin's: either way we are live
	}
	m.mu.Lock()
	prev, known := m.members[hb.Node]
	if hb.Leaving {
		delete(m.members, hb.Node)
	} else {
		m.members[hb.Node] = Member{Node: hb.Node, Pools: hb.Pools, LastSeen: time.Now(), Draining: hb.Draining}
	}
	m.mu.Unlock()
	switch {
	case known && !hb.Leaving && prev.Draining != hb.Draining:
		m.log.Info("node draining", "member", hb.Node, "draining", hb.Draining)
		m.notify()
	case hb.Leaving && known:
		m.log.Info("node left", "member", hb.Node)
		m.notify()
	case !hb.Leaving && !known:
		m.log.Info("node joined", "member", hb.Node)
		m.notify()
	}
}

func (m *Membership) expire(now time.Time) {
	var dead []string
	// Time this node was not looking (a stopped process, a suspended
	// machine, a long pause, a loaded CPU) says nothing of the others:
	// their silence is counted in the time it watched only, so a node that
	// wakes up does not declare every other one dead and revoke its leases.
	var missed time.Duration
	if !m.lastCheck.IsZero() {
		missed = now.Sub(m.lastCheck) - m.o.Interval/2
	}
	m.lastCheck = now
	m.mu.Lock()
	if missed > 0 {
		for id, mb := range m.members {
			if mb.LastSeen = mb.LastSeen.Add(missed); mb.LastSeen.After(now) {
				mb.LastSeen = now
			}
			m.members[id] = mb
		}
	}
	for id, mb := range m.members {
		if now.Sub(mb.LastSeen) > m.o.DeadAfter {
			delete(m.members, id)
			dead = append(dead, id)
		}
	}
	m.mu.Unlock()
	if missed > m.o.Interval {
		m.log.Warn("this node stalled: the others' silence meanwhile does not count", "stall", missed.Round(time.Millisecond))
	}
	for _, id := range dead {
		m.log.Warn("node declared dead", "member", id, "dead_after", m.o.DeadAfter)
		if m.o.OnDead != nil {
			go m.o.OnDead(id)
		}
	}
	if len(dead) > 0 {
		m.notify()
	}
}

// notify queues the current live set for OnChange. It runs on one
// goroutine at a time (NewMembership, then run), so sets queue in order.
func (m *Membership) notify() {
	if m.o.OnChange == nil {
		return
	}
	// The nodes that serve: live and not draining (a draining node has no
	// share of the pools).
	ids := []string{}
	for _, mb := range m.Live() {
		if !mb.Draining {
			ids = append(ids, mb.Node)
		}
	}
	m.nmu.Lock()
	m.pending = append(m.pending, ids)
	m.nmu.Unlock()
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// notifyLoop calls OnChange apart from run, so a slow callback does not
// delay heartbeats and get this node declared dead.
func (m *Membership) notifyLoop() {
	defer m.wg.Done()
	for {
		select {
		case <-m.stop:
			return
		case <-m.wake:
		}
		for {
			select {
			case <-m.stop:
				return
			default:
			}
			m.nmu.Lock()
			if len(m.pending) == 0 {
				m.nmu.Unlock()
				break
			}
			ids := m.pending[0]
			m.pending = m.pending[1:]
			m.nmu.Unlock()
			m.o.OnChange(ids)
		}
	}
}
