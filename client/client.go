package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/warmpool/warmpool/messages"
)

// DefaultTimeout bounds a request whose ctx has no deadline. It is long because
// an acquire that finds no warm container waits for a cold start, which the
// node bounds by the pool's startTimeout (default 60s).
const DefaultTimeout = 75 * time.Second

// Sentinel errors, the same values as in package messages so that errors.Is
// matches an error whether it was found here or decoded from a node's reply.
var (
	// ErrBadRequest is returned for a request a node (or this client) rejects
	// as malformed: a negative warmup count, an invalid pool name.
	ErrBadRequest = messages.ErrBadRequest
	// ErrInvalidID is returned, before anything is sent, for a session id that
	// is empty, longer than messages.MaxIDLength bytes or not valid UTF-8.
	ErrInvalidID = messages.ErrInvalidID
	// ErrUnknownPool is returned when the answering node does not run the pool.
	ErrUnknownPool = messages.ErrUnknownPool
	// ErrUnknownLease is returned by ReleaseContainer and Renew when the id
	// holds no lease (never acquired, released, or expired).
	ErrUnknownLease = messages.ErrUnknownLease
	// ErrExhausted is returned by GetContainer when no container is warm and
	// the pool runs maxInstances containers. It is retryable.
	ErrExhausted = messages.ErrExhausted
	// ErrNotReady is returned by GetContainer when the cold-started container
	// failed or was not ready in time, or the pool is shutting down. It is
	// retryable.
	ErrNotReady = messages.ErrNotReady
	// ErrInternal is returned for a failure inside warmpool, including a reply
	// this client cannot decode.
	ErrInternal = messages.ErrInternal
)

// ErrNoNode is returned when no warmpool node serves the request's subject,
// most likely because none runs on this NATS system (a node that runs other
// pools answers ErrUnknownPool). The error wraps nats.ErrNoResponders too. It
// is retryable, since a node may be (re)starting; bound retries with ctx.
var ErrNoNode = errors.New("no warmpool node answers")

// WireError is the error decoded from a node's error reply; use errors.As to
// read its code and status.
type WireError = messages.WireError

// Option configures a Client.
type Option func(*Client)

// WithTimeout sets the bound of a request whose ctx has no deadline
// (DefaultTimeout if unset). A d of zero or less keeps the default: a request
// without any bound would hang forever on a node that never answers.
func WithTimeout(d time.Duration) Option {
	return func(c *Client) {
		if d > 0 {
			c.timeout = d
		}
	}
}

// Client sends requests to warmpool nodes over a NATS connection. It is safe
// for concurrent use. It does not own the connection: closing it is the
// caller's business.
type Client struct {
	nc      *nats.Conn
	timeout time.Duration
}

// New returns a Client that talks over nc.
func New(nc *nats.Conn, opts ...Option) *Client {
	c := &Client{nc: nc, timeout: DefaultTimeout}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Pool returns a handle on the named pool. The name is checked on each call,
// so that Pool stays chainable: c.Pool("web").GetContainer(ctx, id).
func (c *Client) Pool(name string) *Pool {
	return &Pool{c: c, name: name}
}

// Pool is one pool of a warmpool cluster. It is safe for concurrent use.
type Pool struct {
	c    *Client
	name string
}

// Name returns the pool's name.
func (p *Pool) Name() string { return p.name }

// Client is the client the pool belongs to.
func (p *Pool) Client() *Client { return p.c }

// GetContainer acquires a container for the session id: the same id gets the
// same container until it is released or its lease expires. When no container
// is warm it waits for a cold start (Lease.Cold is then true).
func (p *Pool) GetContainer(ctx context.Context, id string) (messages.Lease, error) {
	var l messages.Lease
	err := p.session(ctx, messages.VerbAcquire, id, messages.TypeLease, &l)
	return l, err
}

// ReleaseContainer ends the session's lease; the container goes back to the
// pool warm, or is replaced (Released.Replaced) per the pool's onRelease.
func (p *Pool) ReleaseContainer(ctx context.Context, id string) (messages.Released, error) {
	var r messages.Released
	err := p.session(ctx, messages.VerbRelease, id, messages.TypeReleased, &r)
	return r, err
}

// Renew extends the session's lease by the pool's acquireTimeout.
func (p *Pool) Renew(ctx context.Context, id string) (messages.Lease, error) {
	var l messages.Lease
	err := p.session(ctx, messages.VerbRenew, id, messages.TypeLease, &l)
	return l, err
}

// Stats returns the counts of the pool's containers as one node sees them.
func (p *Pool) Stats(ctx context.Context) (messages.Stats, error) {
	var s messages.Stats
	err := p.call(ctx, messages.VerbStats, struct{}{}, messages.TypeStats, &s)
	return s, err
}

// Warmup asks the pool to start n more containers, within maxInstances.
func (p *Pool) Warmup(ctx context.Context, n int) (messages.WarmupReply, error) {
	var w messages.WarmupReply
	if n < 0 {
		return w, fmt.Errorf("%w: warmup count %d is negative", ErrBadRequest, n)
	}
	err := p.call(ctx, messages.VerbWarmup, messages.WarmupRequest{Count: n}, messages.TypeWarmup, &w)
	return w, err
}

// ShutdownAll stops every container of the pool and ends every lease.
func (p *Pool) ShutdownAll(ctx context.Context) (messages.ShutdownReply, error) {
	var s messages.ShutdownReply
	err := p.call(ctx, messages.VerbShutdown, struct{}{}, messages.TypeShutdown, &s)
	return s, err
}

func (p *Pool) session(ctx context.Context, verb, id, wantType string, out any) error {
	// Checked here as well as on the node so that a bad id costs no round
	// trip and fails the same way whether or not a node runs.
	if err := messages.ValidateID(id); err != nil {
		return fmt.Errorf("%s in pool %s: %w", verb, p.name, err)
	}
	return p.call(ctx, verb, messages.SessionRequest{ID: id}, wantType, out)
}

// call sends one request and decodes its reply into out, which must be a
// pointer to a reply struct whose type string is wantType.
// Drain tells node to stop taking new sessions, serve its sessions until
// their leases end, then leave; its share of the pools goes to the others.
func (c *Client) Drain(ctx context.Context, node string) (messages.DrainReply, error) {
	var r messages.DrainReply
	if node == "" || strings.ContainsAny(node, ".*> \t") {
		return r, fmt.Errorf("drain: %w: %q is not a node id", ErrBadRequest, node)
	}
	return r, c.request(ctx, messages.DrainSubject(node), struct{}{}, messages.TypeDraining, &r)
}

func (p *Pool) call(ctx context.Context, verb string, body any, wantType string, out any) error {
	if err := messages.ValidatePoolName(p.name); err != nil {
		return fmt.Errorf("%s: %w: %v", verb, ErrBadRequest, err)
	}
	return p.c.request(ctx, messages.Subject(p.name, verb), body, wantType, out)
}

// request sends one request and decodes its reply or its error.
func (c *Client) request(ctx context.Context, subject string, body any, wantType string, out any) error {
	data, err := messages.Encode(body)
	if err != nil {
		return fmt.Errorf("%s: encode the request: %w", subject, err)
	}
	start := time.Now()
	// The node learns how long the caller waits: ctx's deadline, else the
	// client's timeout.
	wait := c.timeout
	dl, hasDeadline := ctx.Deadline()
	if hasDeadline {
		wait = time.Until(dl)
	}
	req := &nats.Msg{Subject: subject, Data: data,
		Header: nats.Header{messages.TimeoutHeader: []string{strconv.FormatInt(wait.Milliseconds(), 10)}}}
	var msg *nats.Msg
	switch {
	case hasDeadline:
		msg, err = c.nc.RequestMsgWithContext(ctx, req)
	case ctx.Done() == nil:
		// Never cancelled: a timer bounds the wait, not a context (the
		// hot path).
		if msg, err = c.nc.RequestMsg(req, wait); errors.Is(err, nats.ErrTimeout) {
			err = context.DeadlineExceeded
		}
	default:
		tctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		msg, err = c.nc.RequestMsgWithContext(tctx, req)
	}
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return &noNodeError{subject: subject}
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: no reply within %s: %w", subject, time.Since(start).Round(time.Millisecond), err)
	case err != nil:
		return fmt.Errorf("%s: %w", subject, err)
	}
	if code := msg.Header.Get(micro.ErrorCodeHeader); code != "" {
		// A header that is not a number still marks a failure; 500 makes
		// DecodeError fall back to internal when the body does not help.
		status, convErr := strconv.Atoi(code)
		if convErr != nil {
			status = 500
		}
		return fmt.Errorf("%s: %w", subject, messages.DecodeError(status, msg.Header.Get(micro.ErrorHeader), msg.Data))
	}
	return decodeReply(subject, msg.Data, wantType, out)
}

func decodeReply(subject string, data []byte, wantType string, out any) error {
	// One pass: every reply type carries its type string in a Type field,
	// read back after the decode (the hot path decodes each reply once).
	err := messages.Decode(data, out)
	var syntax *json.SyntaxError
	if errors.As(err, &syntax) {
		return fmt.Errorf("%w: %s: the reply is not JSON: %v", ErrInternal, subject, err)
	}
	// An empty type is tolerated; a different one means a node speaking
	// another version of the API, whose fields may not mean what ours do.
	var typ string
	switch o := out.(type) {
	case *messages.Lease: // the hot path: no reflection
		typ = o.Type
	case *messages.Released:
		typ = o.Type
	default:
		if v := reflect.ValueOf(out); v.Kind() == reflect.Pointer && v.Elem().Kind() == reflect.Struct {
			if f := v.Elem().FieldByName("Type"); f.IsValid() && f.Kind() == reflect.String {
				typ = f.String()
			}
		}
	}
	if typ != "" && typ != wantType {
		return fmt.Errorf("%w: %s: the reply is a %q, want %q", ErrInternal, subject, typ, wantType)
	}
	if err != nil {
		return fmt.Errorf("%w: %s: the reply does not decode as %s: %v", ErrInternal, subject, wantType, err)
	}
	return nil
}

// noNodeError wraps both ErrNoNode and nats.ErrNoResponders, so callers may
// test for either.
type noNodeError struct{ subject string }

func (e *noNodeError) Error() string {
	return fmt.Sprintf("%s on %s; is `warmpool serve` running?", ErrNoNode, e.subject)
}

func (e *noNodeError) Unwrap() []error { return []error{ErrNoNode, nats.ErrNoResponders} }

// IsRetryable reports whether the same request may succeed later: the node
// said so (ErrExhausted, ErrNotReady), or no node answered (ErrNoNode). An
// expired or cancelled ctx is not retryable, so that a retry loop on a
// deadline-bounded ctx ends when the deadline does.
func IsRetryable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return false
	}
	var we *WireError
	if errors.As(err, &we) {
		return we.Retryable()
	}
	return errors.Is(err, ErrNoNode) || errors.Is(err, ErrExhausted) || errors.Is(err, ErrNotReady)
}
