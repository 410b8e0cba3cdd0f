package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/warmpool/warmpool/client"
	"github.com/warmpool/warmpool/messages"
	"github.com/warmpool/warmpool/testkit"
)

// startServer runs an embedded nats-server on a random port for one test.
func startServer(t *testing.T) *server.Server { return testkit.StartNATS(t) }

func connect(t *testing.T, srv *server.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// fakeNode is a hand-written stand-in for a warmpool node: a micro service
// with the real service name and subjects whose answers each test scripts.
type fakeNode struct {
	mu       sync.Mutex
	received []received
	// answer replies to one request; nil answers nothing (the client then
	// times out).
	answer func(pool, verb string, req micro.Request)
}

type received struct {
	subject string
	body    string
}

func (f *fakeNode) requests() []received {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]received(nil), f.received...)
}

func startFake(t *testing.T, nc *nats.Conn, answer func(pool, verb string, req micro.Request)) *fakeNode {
	t.Helper()
	f := &fakeNode{answer: answer}
	svc, err := micro.AddService(nc, micro.Config{Name: messages.ServiceName, Version: messages.ServiceVersion})
	if err != nil {
		t.Fatalf("add service: %v", err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	for _, verb := range messages.Verbs {
		handler := micro.HandlerFunc(func(req micro.Request) {
			tokens := strings.Split(req.Subject(), ".")
			f.mu.Lock()
			f.received = append(f.received, received{subject: req.Subject(), body: string(req.Data())})
			f.mu.Unlock()
			if f.answer != nil {
				f.answer(tokens[2], tokens[3], req)
			}
		})
		if err := svc.AddEndpoint(verb, handler, micro.WithEndpointSubject(messages.Subject("*", verb))); err != nil {
			t.Fatalf("add endpoint %s: %v", verb, err)
		}
	}
	// The round trip makes sure the server has registered the endpoints'
	// subscriptions before a client on another connection sends to them.
	if err := nc.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	return f
}

// replyError answers the way a warmpool node does: micro error headers plus
// an ErrorBody.
func replyError(req micro.Request, err error) {
	b := messages.NewErrorBody(err)
	data, _ := json.Marshal(b)
	_ = req.Error(strconv.Itoa(b.Status), b.Message, data)
}

var expires = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// happyNode answers every verb with a fixed, recognisable reply.
func happyNode(pool, verb string, req micro.Request) {
	var id messages.SessionRequest
	_ = json.Unmarshal(req.Data(), &id)
	switch verb {
	case messages.VerbAcquire, messages.VerbRenew:
		_ = req.RespondJSON(messages.Lease{Type: messages.TypeLease, Pool: pool, ID: id.ID, Slot: "slot-1",
			Endpoint: "http://127.0.0.1:40001", Node: "n1", ExpiresAt: expires, Cold: verb == messages.VerbAcquire, Revision: 7})
	case messages.VerbRelease:
		_ = req.RespondJSON(messages.Released{Type: messages.TypeReleased, Pool: pool, ID: id.ID, Slot: "slot-1", Replaced: true})
	case messages.VerbStats:
		_ = req.RespondJSON(messages.Stats{Type: messages.TypeStats, Pool: pool, Node: "n1", Warm: 2, Acquired: 1, Total: 3,
			Config: messages.DefaultPoolConfig(pool)})
	case messages.VerbWarmup:
		var w messages.WarmupRequest
		_ = json.Unmarshal(req.Data(), &w)
		_ = req.RespondJSON(messages.WarmupReply{Type: messages.TypeWarmup, Pool: pool, Requested: w.Count, Started: w.Count - 1})
	case messages.VerbShutdown:
		_ = req.RespondJSON(messages.ShutdownReply{Type: messages.TypeShutdown, Pool: pool, Stopped: 4, LeasesEnded: 2})
	}
}

func TestRoundTrips(t *testing.T) {
	srv := startServer(t)
	fake := startFake(t, connect(t, srv), happyNode)
	web := client.New(connect(t, srv)).Pool("web")
	ctx := context.Background()

	lease, err := web.GetContainer(ctx, "sess 1/ü")
	if err != nil {
		t.Fatalf("GetContainer: %v", err)
	}
	want := messages.Lease{Type: messages.TypeLease, Pool: "web", ID: "sess 1/ü", Slot: "slot-1",
		Endpoint: "http://127.0.0.1:40001", Node: "n1", ExpiresAt: expires, Cold: true, Revision: 7}
	if lease != want {
		t.Errorf("GetContainer = %+v, want %+v", lease, want)
	}

	renewed, err := web.Renew(ctx, "s2")
	if err != nil || renewed.ID != "s2" || renewed.Cold {
		t.Errorf("Renew = %+v, %v", renewed, err)
	}
	rel, err := web.ReleaseContainer(ctx, "s3")
	if err != nil || rel != (messages.Released{Type: messages.TypeReleased, Pool: "web", ID: "s3", Slot: "slot-1", Replaced: true}) {
		t.Errorf("ReleaseContainer = %+v, %v", rel, err)
	}
	st, err := web.Stats(ctx)
	if err != nil || st.Warm != 2 || st.Acquired != 1 || st.Total != 3 || st.Config.Name != "web" || st.Config.AcquireTimeout.D() != messages.DefaultAcquireTimeout {
		t.Errorf("Stats = %+v, %v", st, err)
	}
	wu, err := web.Warmup(ctx, 5)
	if err != nil || wu != (messages.WarmupReply{Type: messages.TypeWarmup, Pool: "web", Requested: 5, Started: 4}) {
		t.Errorf("Warmup = %+v, %v", wu, err)
	}
	sd, err := web.ShutdownAll(ctx)
	if err != nil || sd != (messages.ShutdownReply{Type: messages.TypeShutdown, Pool: "web", Stopped: 4, LeasesEnded: 2}) {
		t.Errorf("ShutdownAll = %+v, %v", sd, err)
	}

	// What went on the wire: the subjects and bodies a node decodes.
	wantSent := []received{
		{"warmpool.v1.web.acquire", `{"id":"sess 1/ü"}`},
		{"warmpool.v1.web.renew", `{"id":"s2"}`},
		{"warmpool.v1.web.release", `{"id":"s3"}`},
		{"warmpool.v1.web.stats", `{}`},
		{"warmpool.v1.web.warmup", `{"count":5}`},
		{"warmpool.v1.web.shutdown", `{}`},
	}
	got := fake.requests()
	if len(got) != len(wantSent) {
		t.Fatalf("sent %d requests %v, want %d", len(got), got, len(wantSent))
	}
	for i := range got {
		if got[i] != wantSent[i] {
			t.Errorf("request %d = %+v, want %+v", i, got[i], wantSent[i])
		}
	}
}

func TestErrorReplies(t *testing.T) {
	tests := []struct {
		name      string
		reply     func(micro.Request)
		sentinel  error
		status    int
		retryable bool
	}{
		{"invalid id", bodyErr(messages.ErrInvalidID), client.ErrInvalidID, 400, false},
		{"bad request", bodyErr(messages.ErrBadRequest), client.ErrBadRequest, 400, false},
		{"unknown pool", bodyErr(messages.ErrUnknownPool), client.ErrUnknownPool, 404, false},
		{"unknown lease", bodyErr(messages.ErrUnknownLease), client.ErrUnknownLease, 404, false},
		{"exhausted", bodyErr(messages.ErrExhausted), client.ErrExhausted, 503, true},
		{"not ready", bodyErr(messages.ErrNotReady), client.ErrNotReady, 503, true},
		{"internal", bodyErr(messages.ErrInternal), client.ErrInternal, 500, false},
		{"unclassified", bodyErr(errors.New("disk on fire")), client.ErrInternal, 500, false},
		// Replies without an ErrorBody fall back on the header's status.
		{"bare 400", headerErr("400"), client.ErrBadRequest, 400, false},
		{"bare 404", headerErr("404"), client.ErrUnknownPool, 404, false},
		{"bare 503", headerErr("503"), client.ErrNotReady, 503, true},
		{"bare 500", headerErr("500"), client.ErrInternal, 500, false},
		{"bare non-numeric", headerErr("oops"), client.ErrInternal, 500, false},
	}
	srv := startServer(t)
	var mu sync.Mutex
	var reply func(micro.Request)
	startFake(t, connect(t, srv), func(_, _ string, req micro.Request) {
		mu.Lock()
		r := reply
		mu.Unlock()
		r(req)
	})
	web := client.New(connect(t, srv)).Pool("web")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			reply = tt.reply
			mu.Unlock()
			_, err := web.GetContainer(context.Background(), "s1")
			if !errors.Is(err, tt.sentinel) {
				t.Fatalf("err = %v, want one wrapping %v", err, tt.sentinel)
			}
			var we *client.WireError
			if !errors.As(err, &we) {
				t.Fatalf("err = %T %v, want a WireError inside", err, err)
			}
			if we.Body.Status != tt.status {
				t.Errorf("status = %d, want %d", we.Body.Status, tt.status)
			}
			if got := client.IsRetryable(err); got != tt.retryable {
				t.Errorf("IsRetryable = %v, want %v", got, tt.retryable)
			}
			if !strings.Contains(err.Error(), "warmpool.v1.web.acquire") {
				t.Errorf("err %q does not name the subject", err)
			}
		})
	}
}

func bodyErr(sentinel error) func(micro.Request) {
	return func(req micro.Request) { replyError(req, fmt.Errorf("%w: detail", sentinel)) }
}

func headerErr(code string) func(micro.Request) {
	return func(req micro.Request) { _ = req.Error(code, "something failed", nil) }
}

func TestNoNode(t *testing.T) {
	srv := startServer(t)
	web := client.New(connect(t, srv)).Pool("web")
	_, err := web.GetContainer(context.Background(), "s1")
	if !errors.Is(err, client.ErrNoNode) || !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("err = %v, want ErrNoNode and nats.ErrNoResponders", err)
	}
	if !strings.Contains(err.Error(), "warmpool.v1.web.acquire") || !strings.Contains(err.Error(), "warmpool serve") {
		t.Errorf("err %q should name the subject and the command to run", err)
	}
	if !client.IsRetryable(err) {
		t.Error("ErrNoNode should be retryable: a node may be starting")
	}
}

func TestTimeout(t *testing.T) {
	srv := startServer(t)
	startFake(t, connect(t, srv), nil) // receives, never answers

	t.Run("ctx deadline", func(t *testing.T) {
		web := client.New(connect(t, srv)).Pool("web")
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, err := web.GetContainer(ctx, "s1")
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want context.DeadlineExceeded", err)
		}
		if client.IsRetryable(err) {
			t.Error("a spent deadline must not be retryable, or a retry loop spins")
		}
	})
	t.Run("default timeout", func(t *testing.T) {
		web := client.New(connect(t, srv), client.WithTimeout(50*time.Millisecond)).Pool("web")
		start := time.Now()
		_, err := web.Stats(context.Background())
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want context.DeadlineExceeded", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("took %s, want about 50ms", d)
		}
	})
	t.Run("default timeout under a cancellable ctx", func(t *testing.T) {
		web := client.New(connect(t, srv), client.WithTimeout(50*time.Millisecond)).Pool("web")
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		start := time.Now()
		_, err := web.GetContainer(ctx, "s1")
		if !errors.Is(err, context.DeadlineExceeded) || client.IsRetryable(err) {
			t.Fatalf("err = %v (retryable %v), want context.DeadlineExceeded, not retryable", err, client.IsRetryable(err))
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("took %s, want about 50ms", d)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		web := client.New(connect(t, srv)).Pool("web")
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := web.Renew(ctx, "s1")
		if !errors.Is(err, context.Canceled) || client.IsRetryable(err) {
			t.Fatalf("err = %v (retryable %v), want context.Canceled, not retryable", err, client.IsRetryable(err))
		}
	})
}

func TestRejectedBeforeSending(t *testing.T) {
	srv := startServer(t)
	fake := startFake(t, connect(t, srv), happyNode)
	c := client.New(connect(t, srv))
	ctx := context.Background()
	calls := []struct {
		name string
		call func() error
		want error
	}{
		{"empty id", func() error { _, err := c.Pool("web").GetContainer(ctx, ""); return err }, client.ErrInvalidID},
		{"long id", func() error {
			_, err := c.Pool("web").Renew(ctx, strings.Repeat("x", messages.MaxIDLength+1))
			return err
		}, client.ErrInvalidID},
		{"non-UTF-8 id", func() error { _, err := c.Pool("web").ReleaseContainer(ctx, "a\xffb"); return err }, client.ErrInvalidID},
		{"pool with a dot", func() error { _, err := c.Pool("a.b").GetContainer(ctx, "s1"); return err }, client.ErrBadRequest},
		{"pool wildcard", func() error { _, err := c.Pool("*").Stats(ctx); return err }, client.ErrBadRequest},
		{"empty pool", func() error { _, err := c.Pool("").ShutdownAll(ctx); return err }, client.ErrBadRequest},
		{"negative warmup", func() error { _, err := c.Pool("web").Warmup(ctx, -1); return err }, client.ErrBadRequest},
	}
	for _, tt := range calls {
		if err := tt.call(); !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
		}
	}
	// A longest valid id does go out, which also flushes anything a rejected
	// call might have sent before it.
	if _, err := c.Pool("web").GetContainer(ctx, strings.Repeat("x", messages.MaxIDLength)); err != nil {
		t.Fatalf("id of MaxIDLength bytes: %v", err)
	}
	if got := fake.requests(); len(got) != 1 {
		t.Errorf("the node received %d requests %v, want only the valid one", len(got), got)
	}
}

func TestUndecodableReplies(t *testing.T) {
	tests := []struct {
		name string
		body string
	}{
		{"not JSON", "hello"},
		{"other type", `{"type":"warmpool.v2.lease","id":"s1"}`},
		{"wrong field type", `{"type":"warmpool.v1.lease","id":5}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startServer(t)
			startFake(t, connect(t, srv), func(_, _ string, req micro.Request) { _ = req.Respond([]byte(tt.body)) })
			_, err := client.New(connect(t, srv)).Pool("web").GetContainer(context.Background(), "s1")
			if !errors.Is(err, client.ErrInternal) {
				t.Fatalf("err = %v, want ErrInternal", err)
			}
		})
	}
}

func TestIsRetryable(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errors.New("other"), false},
		{fmt.Errorf("x: %w", client.ErrExhausted), true},
		{fmt.Errorf("x: %w", client.ErrNotReady), true},
		{fmt.Errorf("x: %w", client.ErrNoNode), true},
		{fmt.Errorf("x: %w", client.ErrUnknownLease), false},
		{fmt.Errorf("x: %w", client.ErrInvalidID), false},
		{context.DeadlineExceeded, false},
		{fmt.Errorf("%w after %w", client.ErrNotReady, context.DeadlineExceeded), false},
		{messages.ErrorBody{Code: messages.CodeExhausted, Retryable: true}.Error(), true},
		{messages.ErrorBody{Code: messages.CodeInternal}.Error(), false},
	}
	for _, tt := range tests {
		if got := client.IsRetryable(tt.err); got != tt.want {
			t.Errorf("IsRetryable(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

// TestCallerWaitHeader: every request says how long its caller waits, so
// that a node neither forwards nor keeps a session past it: the ctx's
// deadline when it has one, else the client's timeout.
func TestCallerWaitHeader(t *testing.T) {
	srv := startServer(t)
	waits := make(chan string, 8)
	startFake(t, connect(t, srv), func(pool, verb string, req micro.Request) {
		waits <- req.Headers().Get(messages.TimeoutHeader)
		happyNode(pool, verb, req)
	})
	web := client.New(connect(t, srv), client.WithTimeout(7*time.Second)).Pool("web")
	deadline, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	cancellable, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	for _, tc := range []struct {
		name     string
		ctx      context.Context
		min, max int64
	}{
		{"deadline", deadline, 2000, 3000},
		{"background", context.Background(), 7000, 7000},
		{"cancellable", cancellable, 6000, 7000},
	} {
		if _, err := web.GetContainer(tc.ctx, "s1"); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		ms, err := strconv.ParseInt(<-waits, 10, 64)
		if err != nil || ms < tc.min || ms > tc.max {
			t.Errorf("%s: %s = %d (%v), want %d to %d", tc.name, messages.TimeoutHeader, ms, err, tc.min, tc.max)
		}
	}
}
