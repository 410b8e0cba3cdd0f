package cluster

import (
	"context"
	"errors"
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
	node   *Node
	reply  replier
	pool   string
	verb   string
	id     string
	data   []byte
	direct bool // already forwarded once: answer here
}

// orForward answers from the local pool, unless the local pool does not
// hold the session and another live node's lease does: then the request
// goes to that node, whose reply is relayed as it is. The local pool learns
// that from a failed create (the lease exists), an unknown lease, or being
// full; only then is the lease read, so the hot path reads nothing.
func orForward[T any](fw forwarding) func(T, error) {
	answer := respond[T](fw.reply)
	if fw.direct || fw.node.leases == nil {
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
			if !fw.forward() {
				answer(v, err)
			}
		}()
	}
}

// forward sends the request to the lease's holder and relays its reply; it
// reports false when there is no other holder to ask.
func (fw forwarding) forward() bool {
	ctx, cancel := context.WithTimeout(context.Background(), forwardTimeout)
	defer cancel()
	l, ok, err := fw.node.leases.Get(ctx, fw.pool, fw.id)
	if err != nil || !ok || l.Record.Node == fw.node.opts.NodeID {
		return false
	}
	if !time.Now().Before(l.Record.ExpiresAt) {
		// Expired, and its node has not reaped it (it may be down): end it
		// at its revision, so the caller's retry gets a new container. A
		// holder that renewed meanwhile changed the revision: then nothing
		// is deleted.
		if err := fw.node.leases.Delete(ctx, fw.pool, fw.id, l.Revision); err == nil {
			fw.node.log.Info("ended another node's expired lease", "pool", fw.pool, "session", fw.id, "holder", l.Record.Node)
		}
		return false
	}
	msg, err := fw.node.nc.RequestMsgWithContext(ctx, &nats.Msg{
		Subject: nodeSubject(l.Record.Node, fw.pool, fw.verb), Data: fw.data,
	})
	if err != nil {
		fw.node.log.Debug("forwarding to the lease's node failed", "pool", fw.pool, "session", fw.id, "holder", l.Record.Node, "err", err)
		return false
	}
	fw.reply.publish(&nats.Msg{Data: msg.Data, Header: msg.Header})
	return true
}
