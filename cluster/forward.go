package cluster

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/warmpool/warmpool/actors"
	"github.com/warmpool/warmpool/messages"
)

// forwardTimeout bounds a forwarded request; an acquire forwarded to the
// lease's holder never waits for a cold start there.
const forwardTimeout = 10 * time.Second

// nodeSubject is the subject on which node serves verb for pool itself.
func nodeSubject(node, pool, verb string) string {
	return messages.SubjectPrefix + ".node." + node + "." + pool + "." + verb
}

// forwarding is what a session request needs to be sent on to the node that
// holds the session's lease, when several nodes share a NATS system and the
// queue group brought the request here.
type forwarding struct {
	node  *Node
	reply replier
	pool  string
	verb  string
	id    string
	data  []byte
	// hops counts how often the request was forwarded; a request is
	// forwarded at most maxHops times, so forwards never loop.
	hops int
	// deadline is when the caller stops waiting (zero: not said). A
	// request past it is not forwarded: an acquire that reached a node
	// after its caller gave up, and after the session was released, would
	// make a session nobody knows of.
	deadline time.Time
}

// errCallerGone answers a request whose caller has stopped waiting.
var errCallerGone = fmt.Errorf("%w: the caller stopped waiting; the request was not forwarded", messages.ErrNotReady)

func (fw forwarding) expired() bool {
	return !fw.deadline.IsZero() && !time.Now().Before(fw.deadline)
}

// hopsHeader carries a forwarded request's hop count.
const hopsHeader = "Warmpool-Hops"

// placementHeader marks an acquire sent to another node for its warm
// containers. The node serves it only from a warm container (or a session
// it holds); with none left (the heartbeat that named it was old) it
// answers with the header set to placementNone, and the sender serves the
// session itself, cold start included: cold starts happen on the nodes the
// requests reach, not all on the node that was warmest a moment ago.
const (
	placementHeader = "Warmpool-Placement"
	placementWarm   = "warm"
	placementNone   = "none"
)

// maxHops bounds forwarding: to a node with a warm container, then at most
// once more, to the lease's holder.
const maxHops = 2

func hopsOf(h string) int {
	n, err := strconv.Atoi(h)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// orForward answers from the local pool, unless the local pool does not
// hold the session and another live node's lease does: then the request
// goes to that node, whose reply is relayed as it is. The local pool learns
// that from a failed create (the lease exists), an unknown lease, or being
// full; only then is the lease read, so the hot path reads nothing.
func orForward[T any](fw forwarding) func(T, error) {
	answer := respond[T](fw.reply)
	if fw.hops >= maxHops || fw.node.leases == nil {
		return answer
	}
	return func(v T, err error) {
		if err == nil || !(errors.Is(err, actors.ErrLeaseExists) || errors.Is(err, messages.ErrUnknownLease) ||
			errors.Is(err, messages.ErrExhausted)) {
			answer(v, err)
			return
		}
		// Off the pool's mailbox: a lease read and a request.
		go func() {
			switch ok, ferr := fw.forward(); {
			case ok:
			case ferr != nil:
				// Another node may hold the session: the local answer
				// (no such lease, say) could be wrong. Retryable.
				answer(v, fmt.Errorf("%w: session %q: this node does not hold it, and %v", messages.ErrNotReady, fw.id, ferr))
			default:
				answer(v, err)
			}
		}()
	}
}

// forward sends the request to the lease's holder and relays its reply.
// It reports false with no error when no other node holds the session, and
// an error when that is not known: the lease could not be read, or its
// holder did not answer.
func (fw forwarding) forward() (bool, error) {
	if fw.expired() {
		return false, errCallerGone
	}
	ctx, cancel := context.WithTimeout(context.Background(), forwardTimeout)
	defer cancel()
	l, ok, err := fw.node.leases.Lookup(ctx, fw.pool, fw.id)
	if err != nil {
		return false, fmt.Errorf("its lease could not be read: %w", err)
	}
	if !ok {
		return false, nil
	}
	if l.Record.Node == fw.node.opts.NodeID {
		fw.node.dropOrphan(ctx, fw.pool, l)
		return false, nil
	}
	if !time.Now().Before(l.Record.ExpiresAt) {
		// Expired, and its node has not reaped it (it may be down): end it
		// at its revision, so the caller's retry gets a new container. A
		// holder that renewed meanwhile changed the revision: then nothing
		// is deleted.
		if err := fw.node.leases.Delete(ctx, fw.pool, fw.id, l.Revision); err != nil {
			return false, fmt.Errorf("its expired lease could not be ended: %w", err)
		}
		fw.node.log.Info("ended another node's expired lease", "pool", fw.pool, "session", fw.id, "holder", l.Record.Node)
		return false, nil
	}
	if fw.expired() {
		return false, errCallerGone
	}
	if !fw.to(ctx, l.Record.Node, false) {
		return false, fmt.Errorf("node %s, which holds its lease, did not answer", l.Record.Node)
	}
	return true, nil
}

// to sends the request to node and relays its reply; false if node did not
// answer, or, for a placement, had no warm container after all.
func (fw forwarding) to(ctx context.Context, node string, placement bool) bool {
	req := &nats.Msg{Subject: nodeSubject(node, fw.pool, fw.verb), Data: fw.data, Header: nats.Header{}}
	req.Header.Set(hopsHeader, strconv.Itoa(fw.hops+1))
	if placement {
		req.Header.Set(placementHeader, placementWarm)
	}
	if !fw.deadline.IsZero() {
		left := time.Until(fw.deadline)
		if left <= 0 {
			return false
		}
		req.Header.Set(messages.TimeoutHeader, strconv.FormatInt(max(left.Milliseconds(), 1), 10))
		if left < forwardTimeout {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, left)
			defer cancel()
		}
	}
	msg, err := fw.node.nc.RequestMsgWithContext(ctx, req)
	if err != nil {
		fw.node.log.Debug("forwarding failed", "pool", fw.pool, "session", fw.id, "to", node, "err", err)
		return false
	}
	if msg.Header.Get(placementHeader) == placementNone {
		return false
	}
	fw.reply.publish(&nats.Msg{Data: msg.Data, Header: msg.Header})
	return true
}

// placed is the reply of an acquire another node sent here for a warm
// container: nothing warm is answered with the placement header, so that
// the sender serves the session itself.
func placed(fw forwarding) func(messages.Lease, error) {
	local := orForward[messages.Lease](fw)
	return func(l messages.Lease, err error) {
		if !errors.Is(err, actors.ErrNoWarm) {
			local(l, err)
			return
		}
		fw.reply.failWith(err, placementHeader, placementNone)
	}
}

// placeOr is the reply of an acquire sent with NoColdStart: when the pool
// has nothing warm for the new session, the request goes to a node that
// has (by its last heartbeat); if that fails, or there is none any more,
// the local pool serves it after all, cold start included.
func placeOr(fw forwarding, pool *actors.Pool) func(messages.Lease, error) {
	local := orForward[messages.Lease](fw)
	return func(l messages.Lease, err error) {
		if !errors.Is(err, actors.ErrNoWarm) {
			local(l, err)
			return
		}
		go func() {
			if fw.expired() {
				local(l, errCallerGone)
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), forwardTimeout)
			defer cancel()
			// The node with the most warm containers serves only from a
			// warm one; then a draining node's new session goes to any node
			// that serves, cold start included.
			if target := fw.node.warmElsewhere(fw.pool); target != "" && fw.to(ctx, target, true) {
				return
			}
			if fw.node.draining.Load() {
				if target := fw.node.servingElsewhere(); target != "" && fw.to(ctx, target, false) {
					return
				}
			}
			if fw.expired() {
				local(l, errCallerGone)
				return
			}
			pool.Send(messages.Acquire{ID: fw.id, Deadline: fw.deadline, Reply: local})
		}()
	}
}

// warmElsewhere names the live node, other than this one and not
// draining, with the most warm containers of pool by the last heartbeats;
// "" when none has any.
func (n *Node) warmElsewhere(pool string) string {
	if n.members == nil {
		return ""
	}
	return n.members.MostWarm(pool)
}

// servingElsewhere names the first live node, other than this one, that is
// not draining; "" when there is none.
func (n *Node) servingElsewhere() string {
	if n.members == nil {
		return ""
	}
	for _, m := range n.members.Live() {
		if m.Node != n.opts.NodeID && !m.Draining {
			return m.Node
		}
	}
	return ""
}

// dropOrphan deletes a stored lease of this node that its pool does not
// hold, and reports whether it did: a lease write whose outcome was unknown (it timed out, and the pool
// stopped the container) left it behind, and it would refuse the session a
// new lease until it expired. The delete is at the lease's revision: a
// lease written since is kept. The caller's retry then gets a container.
func (n *Node) dropOrphan(ctx context.Context, pool string, l actors.StoredLease) bool {
	p := n.pools[pool]
	if p == nil {
		return false
	}
	if held, err := p.Holds(ctx, l.Record.ID, l.Record.Slot); err != nil || held {
		return false
	}
	if err := n.leases.Delete(ctx, pool, l.Record.ID, l.Revision); err != nil {
		return false
	}
	n.log.Warn("ended an orphaned lease of this node", "pool", pool, "session", l.Record.ID, "slot", l.Record.Slot)
	return true
}
