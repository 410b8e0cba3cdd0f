package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/warmpool/warmpool/messages"
)

// maxCallerWait bounds the Warmpool-Timeout a node takes as a deadline; a
// caller that says it waits longer is taken to wait as long as it takes.
const maxCallerWait = 24 * time.Hour

// serve registers the micro service: one endpoint per verb, on a wildcard
// subject so that any pool name reaches a handler.
func (n *Node) serve() error {
	svc, err := micro.AddService(n.nc, micro.Config{
		Name:        messages.ServiceName,
		Version:     messages.ServiceVersion,
		Description: "warmpool: warm containers handed out by session id",
		Metadata:    map[string]string{"node": n.opts.NodeID, "pools": strings.Join(n.PoolNames(), ",")},
	})
	if err != nil {
		return fmt.Errorf("adding the micro service: %w", err)
	}
	n.svc = svc
	for _, verb := range messages.Verbs {
		subject := messages.Subject("*", verb)
		if err := svc.AddEndpoint(verb, micro.HandlerFunc(n.handle), micro.WithEndpointSubject(subject)); err != nil {
			return fmt.Errorf("adding endpoint %s: %w", subject, err)
		}
	}
	// Node-directed endpoints: another node forwards a session's request
	// here when this node holds its lease.
	for _, verb := range []string{messages.VerbAcquire, messages.VerbRenew, messages.VerbRelease} {
		subject := nodeSubject(n.opts.NodeID, "*", verb)
		if err := svc.AddEndpoint("node-"+verb, micro.HandlerFunc(n.handle), micro.WithEndpointSubject(subject),
			micro.WithEndpointQueueGroupDisabled()); err != nil {
			return fmt.Errorf("adding endpoint %s: %w", subject, err)
		}
	}
	// Ping: a node about to be declared dead is asked first.
	if err := svc.AddEndpoint("node-ping", micro.HandlerFunc(n.handlePing), micro.WithEndpointSubject(pingSubject(n.opts.NodeID)),
		micro.WithEndpointQueueGroupDisabled()); err != nil {
		return fmt.Errorf("adding the ping endpoint: %w", err)
	}
	// Drain: node-level, on warmpool.v1.node.<node>.drain.
	if err := svc.AddEndpoint("node-drain", micro.HandlerFunc(n.handleDrain), micro.WithEndpointSubject(messages.DrainSubject(n.opts.NodeID)),
		micro.WithEndpointQueueGroupDisabled()); err != nil {
		return fmt.Errorf("adding the drain endpoint: %w", err)
	}
	// Subscriptions are sent asynchronously: flush so that the node answers
	// as soon as Start returns.
	if err := n.nc.FlushTimeout(10 * time.Second); err != nil {
		return fmt.Errorf("registering the service with NATS: %w", err)
	}
	return nil
}

// handle decodes a request and hands it to the pool actor. It never waits for
// the pool: the reply is published from the pool's callback, so a slow cold
// start does not hold up other requests.
func (n *Node) handle(req micro.Request) {
	reply := replier{nc: n.nc, subject: req.Reply(), node: n}
	var buf [6]string
	tokens := splitSubject(req.Subject(), buf[:0])
	// warmpool.v1.<pool>.<verb>, or warmpool.v1.node.<node>.<pool>.<verb>
	// for a request another node forwarded here: that one is served here
	// and never forwarded again.
	direct := len(tokens) == 6 && tokens[2] == "node"
	var deadline time.Time
	if ms, err := strconv.ParseInt(req.Headers().Get(messages.TimeoutHeader), 10, 64); err == nil {
		if ms <= 0 {
			reply.fail(fmt.Errorf("%w: the caller stopped waiting (%s %d); nothing was done", messages.ErrNotReady, messages.TimeoutHeader, ms))
			return
		}
		if ms < maxCallerWait.Milliseconds() {
			deadline = time.Now().Add(time.Duration(ms) * time.Millisecond)
		} // longer (time.Duration would overflow): no deadline
	}
	hops := 0
	if direct {
		hops = max(1, hopsOf(req.Headers().Get(hopsHeader)))
		tokens = append(tokens[:2], tokens[4], tokens[5])
	}
	if len(tokens) != 4 {
		reply.fail(fmt.Errorf("%w: subject %q is not warmpool.v1.<pool>.<verb>", messages.ErrBadRequest, req.Subject()))
		return
	}
	poolName, verb := tokens[2], tokens[3]
	pool := n.pools[poolName]
	if pool == nil {
		reply.fail(fmt.Errorf("%w: this node runs no pool %q (it runs %s)", messages.ErrUnknownPool, poolName, strings.Join(n.PoolNames(), ", ")))
		return
	}
	data := req.Data()
	switch verb {
	case messages.VerbAcquire, messages.VerbRenew, messages.VerbRelease:
		var body messages.SessionRequest
		if err := decode(data, &body); err != nil {
			reply.fail(err)
			return
		}
		if err := messages.ValidateID(body.ID); err != nil {
			reply.fail(err)
			return
		}
		fw := forwarding{node: n, reply: reply, pool: poolName, verb: verb, id: body.ID, data: data, hops: hops, deadline: deadline}
		switch verb {
		case messages.VerbAcquire:
			if direct && req.Headers().Get(placementHeader) == placementWarm {
				// Sent here for a warm container: no cold start here, and
				// no new session at all if this node drains meanwhile.
				draining := n.draining.Load()
				pool.Send(messages.Acquire{ID: body.ID, NoColdStart: true, StickyOnly: draining, Deadline: deadline, Reply: placed(fw)})
				break
			}
			if !direct && n.draining.Load() {
				// No new session here: a session this node holds is served,
				// a new one goes to a node that serves.
				pool.Send(messages.Acquire{ID: body.ID, StickyOnly: true, Deadline: deadline, Reply: placeOr(fw, pool)})
				break
			}
			if !direct && n.warmElsewhere(poolName) != "" {
				// Another node has a warm container: a new session goes
				// there rather than waiting for a cold start here.
				pool.Send(messages.Acquire{ID: body.ID, NoColdStart: true, Deadline: deadline, Reply: placeOr(fw, pool)})
				break
			}
			pool.Send(messages.Acquire{ID: body.ID, Deadline: deadline, Reply: orForward[messages.Lease](fw)})
		case messages.VerbRenew:
			pool.Send(messages.Renew{ID: body.ID, Reply: orForward[messages.Lease](fw)})
		default:
			pool.Send(messages.Release{ID: body.ID, Reply: orForward[messages.Released](fw)})
		}
	case messages.VerbStats:
		answer := respond[messages.Stats](reply)
		pool.Send(messages.GetStats{Reply: func(st messages.Stats, err error) {
			if err == nil {
				st = n.clusterStats(poolName, st)
			}
			answer(st, err)
		}})
	case messages.VerbWarmup:
		var body struct {
			Count *int `json:"count"`
		}
		if err := decode(data, &body); err != nil {
			reply.fail(err)
			return
		}
		if body.Count == nil || *body.Count < 0 {
			reply.fail(fmt.Errorf("%w: warmup needs {\"count\": N} with N >= 0", messages.ErrBadRequest))
			return
		}
		pool.Send(messages.Warmup{Count: *body.Count, Reply: respond[messages.WarmupReply](reply)})
	case messages.VerbShutdown:
		pool.Send(messages.ShutdownAll{Reply: respond[messages.ShutdownReply](reply)})
	default:
		reply.fail(fmt.Errorf("%w: unknown verb %q", messages.ErrBadRequest, verb))
	}
}

// splitSubject appends subject's tokens to tokens: strings.Split without
// the allocation, for a buffer large enough.
func splitSubject(subject string, tokens []string) []string {
	for {
		i := strings.IndexByte(subject, '.')
		if i < 0 {
			return append(tokens, subject)
		}
		tokens = append(tokens, subject[:i])
		subject = subject[i+1:]
	}
}

// decode parses a JSON object body strictly enough to catch mistakes: one
// object, no trailing data. Unknown fields are allowed so that newer clients
// can talk to older nodes.
func decode(data []byte, v any) error {
	if messages.DecodeFast(data, v) {
		return nil // exactly one object, as below
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return fmt.Errorf("%w: the body is empty; send a JSON object", messages.ErrBadRequest)
	}
	// Decode would take a null for an object and leave v as it is.
	if body := bytes.TrimLeft(data, " \t\r\n"); len(body) == 0 || body[0] != '{' {
		return fmt.Errorf("%w: the body is not a JSON object", messages.ErrBadRequest)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: the body is not the expected JSON object: %v", messages.ErrBadRequest, err)
	}
	// Not dec.More, which is false before a stray '}' or ']'.
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: the body has data after the JSON object", messages.ErrBadRequest)
	}
	return nil
}

// replier publishes a reply directly: micro's Request.Respond records its
// outcome in the request, which races with the service's bookkeeping once
// the handler has returned.
type replier struct {
	nc      *nats.Conn
	subject string
	node    *Node
}

func respond[T any](r replier) func(T, error) {
	return func(v T, err error) {
		if err != nil {
			r.fail(err)
			return
		}
		data, merr := messages.Encode(v)
		if merr != nil {
			r.fail(merr)
			return
		}
		r.publish(&nats.Msg{Data: data})
	}
}

func (r replier) fail(err error) { r.failWith(err) }

// failWith answers err, with more headers as key, value pairs.
func (r replier) failWith(err error, headers ...string) {
	body := messages.NewErrorBody(err)
	data, _ := json.Marshal(body)
	msg := &nats.Msg{Data: data, Header: nats.Header{}}
	for i := 0; i+1 < len(headers); i += 2 {
		msg.Header.Set(headers[i], headers[i+1])
	}
	msg.Header.Set(micro.ErrorCodeHeader, strconv.Itoa(body.Status))
	// A header is one line; exit reasons carry the container's last lines.
	msg.Header.Set(micro.ErrorHeader, strings.Join(strings.Fields(body.Message), " "))
	r.publish(msg)
}

func (r replier) publish(msg *nats.Msg) {
	if r.subject == "" {
		return // a publish without a reply subject: nobody to answer
	}
	msg.Subject = r.subject
	if err := r.nc.PublishMsg(msg); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		// The requester times out and retries; there is no one else to tell.
		r.node.log.Warn("publishing a reply failed", "subject", r.subject, "err", err)
	}
}

// clusterStats turns this node's stats of a pool into the cluster's: the
// other live nodes' counts from their last heartbeats, summed, with a
// breakdown by node. A node alone answers its own stats unchanged.
func (n *Node) clusterStats(pool string, local messages.Stats) messages.Stats {
	if n.members == nil {
		return local
	}
	live := n.members.Live()
	if len(live) < 2 {
		return local
	}
	st := local
	st.Warm, st.Acquired, st.Warming, st.Draining, st.Total = 0, 0, 0, 0, 0
	for _, m := range live {
		c := messages.NodeCounts{Node: m.Node}
		if m.Node == n.opts.NodeID {
			c.Warm, c.Acquired, c.Warming, c.Draining, c.Total = local.Warm, local.Acquired, local.Warming, local.Draining, local.Total
		} else {
			l := m.Pools[pool]
			c.Warm, c.Acquired, c.Warming, c.Draining, c.Total = l.Warm, l.Acquired, l.Warming, l.Draining, l.Total
		}
		st.Nodes = append(st.Nodes, c)
		st.Warm += c.Warm
		st.Acquired += c.Acquired
		st.Warming += c.Warming
		st.Draining += c.Draining
		st.Total += c.Total
	}
	return st
}

// pingSubject is where node answers that it runs.
func pingSubject(node string) string { return messages.SubjectPrefix + ".node." + node + ".ping" }

func (n *Node) handlePing(req micro.Request) {
	_ = req.Respond([]byte(`{"type":"warmpool.v1.pong","node":"` + n.opts.NodeID + `"}`))
}

// answers reports whether node answers a ping within a second: a node whose
// heartbeats stopped reaching the others may still run.
func (n *Node) answers(node string) bool {
	_, err := n.nc.Request(pingSubject(node), nil, time.Second)
	return err == nil
}

func (n *Node) handleDrain(req micro.Request) {
	reply := replier{nc: n.nc, subject: req.Reply(), node: n}
	n.Drain()
	held := 0
	for _, p := range n.pools {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if st, err := p.Stats(ctx); err == nil {
			held += st.Acquired
		}
		cancel()
	}
	respond[messages.DrainReply](reply)(messages.DrainReply{Type: messages.TypeDraining, Node: n.opts.NodeID, Acquired: held}, nil)
}
