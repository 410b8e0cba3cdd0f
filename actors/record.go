package actors

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warmpool/warmpool/driver"
	"github.com/warmpool/warmpool/messages"
)

// RecordSchema is the version of the recording format.
const RecordSchema = 1

// Input kinds in a recording.
const (
	InputHeader     = "header"
	InputStart      = "start"
	InputAcquire    = "acquire"
	InputRelease    = "release"
	InputRenew      = "renew"
	InputStats      = "stats"
	InputWarmup     = "warmup"
	InputShutdown   = "shutdown"
	InputSlot       = "slot"
	InputLease      = "lease"
	InputRefresh    = "refresh"
	InputBackoff    = "backoff"
	InputStop       = "stop"
	InputTerminated = "terminated"
	InputShare      = "share"
)

// Input is one message the pool actor handled, as recorded: what it was,
// when (the pool's clock when it was handled), the ids the pool drew while
// handling it, and the events it emitted. A log of Inputs replays into a
// fresh pool to the same events and state: everything else the pool
// decides from is its config, its seed, and these.
type Input struct {
	// Kind is one of the Input* constants.
	Kind string    `json:"kind"`
	Pool string    `json:"pool"`
	Seq  uint64    `json:"seq,omitempty"`
	Time time.Time `json:"time"`

	// Header: the pool's config, node and seed (Kind "header").
	Schema int                  `json:"schema,omitempty"`
	Config *messages.PoolConfig `json:"config,omitempty"`
	Node   string               `json:"node,omitempty"`
	Seed   uint64               `json:"seed,omitempty"`

	// Requests: the session id, or warmup's count.
	ID          string    `json:"id,omitempty"`
	Count       int       `json:"count,omitempty"`
	NoColdStart bool      `json:"no_cold_start,omitempty"`
	StickyOnly  bool      `json:"sticky_only,omitempty"`
	Deadline    time.Time `json:"deadline,omitzero"`
	// Start: what recovery started from.
	Recovery *Recovery `json:"recovery,omitempty"`
	// Slot: a slot's report (Kind "slot", "terminated").
	Slot *SlotInput `json:"slot,omitempty"`
	// Lease: the outcome of a durable lease write.
	Lease *LeaseInput `json:"lease,omitempty"`
	// Stop: whether containers are left running.
	Leave bool `json:"leave,omitempty"`
	// Share: the node's new share of the pool.
	Share *messages.SetShare `json:"share,omitempty"`

	// NewIDs are the slot ids drawn while handling the input.
	NewIDs []string `json:"new_ids,omitempty"`
	// Events are the events emitted while handling the input.
	Events []messages.Event `json:"events,omitempty"`
}

// SlotInput is a slot's report.
type SlotInput struct {
	Slot   string        `json:"slot"`
	Event  string        `json:"event,omitempty"`
	Handle driver.Handle `json:"handle"`
	Reason string        `json:"reason,omitempty"`
}

// LeaseInput is the outcome of a lease write.
type LeaseInput struct {
	ID        string    `json:"id"`
	Op        string    `json:"op"`
	Revision  uint64    `json:"revision,omitempty"`
	ExpiresAt time.Time `json:"expires_at"`
	// Err is "" (success), "exists", "mismatch", or the error's text.
	Err string `json:"err,omitempty"`
}

// Recorder receives a pool's inputs, from the pool's mailbox, in order.
// Record may block briefly (a recording run trades speed for a full log)
// but must not fail silently: a gap makes the log unreplayable.
type Recorder interface {
	Record(Input)
}

var opNames = [...]string{opNone: "none", opCreate: "create", opExtend: "extend", opDelete: "delete"}

func opByName(s string) (writeOp, error) {
	for i, n := range opNames {
		if n == s {
			return writeOp(i), nil
		}
	}
	return 0, fmt.Errorf("unknown lease op %q", s)
}

func eventByName(s string) (Event, error) {
	for i, n := range eventNames {
		if i > 0 && n == s {
			return Event(i), nil
		}
	}
	return 0, fmt.Errorf("unknown slot event %q", s)
}

func errClass(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrLeaseExists):
		return "exists"
	case errors.Is(err, ErrRevisionMismatch):
		return "mismatch"
	case errors.Is(err, ErrOutcomeUnknown):
		return "unknown"
	default:
		return err.Error()
	}
}

func errFromClass(c string) error {
	switch c {
	case "":
		return nil
	case "exists":
		return ErrLeaseExists
	case "mismatch":
		return ErrRevisionMismatch
	case "unknown":
		return ErrOutcomeUnknown
	default:
		return errors.New(c)
	}
}

// input describes a message for the recording; ok is false for messages
// that are not inputs (lifecycle noise, internal queries).
func (p *poolActor) input(msg any) (in Input, ok bool) {
	in = Input{Pool: p.Config.Name}
	switch m := msg.(type) {
	case *actor.Started:
		in.Kind, in.Recovery = InputStart, p.Recovery
	case messages.Acquire:
		in.Kind, in.ID, in.NoColdStart, in.StickyOnly, in.Deadline = InputAcquire, m.ID, m.NoColdStart, m.StickyOnly, m.Deadline
	case messages.Release:
		in.Kind, in.ID = InputRelease, m.ID
	case messages.Renew:
		in.Kind, in.ID = InputRenew, m.ID
	case messages.GetStats:
		in.Kind = InputStats
	case messages.Warmup:
		in.Kind, in.Count = InputWarmup, m.Count
	case messages.ShutdownAll:
		in.Kind = InputShutdown
	case messages.SetShare:
		in.Kind, in.Share = InputShare, &m
	case slotEvent:
		in.Kind = InputSlot
		in.Slot = &SlotInput{Slot: m.Slot, Event: m.Event.String(), Handle: m.Handle, Reason: m.Reason}
	case leaseWritten:
		in.Kind = InputLease
		in.Lease = &LeaseInput{ID: m.id, Op: opNames[m.op], Revision: m.revision, ExpiresAt: m.expiresAt, Err: errClass(m.err)}
	case refreshTick:
		in.Kind = InputRefresh
	case backoffTick:
		in.Kind = InputBackoff
	case stopPool:
		in.Kind, in.Leave = InputStop, m.leave
	case *actor.Terminated:
		slot, known := p.pids[m.Who.Id]
		if !known || p.halted {
			return in, false
		}
		in.Kind, in.Slot = InputTerminated, &SlotInput{Slot: slot}
	default:
		return in, false
	}
	return in, true
}

// message rebuilds the message an input was; replies go to reply.
func (in Input) message(reply func(any, error)) (any, error) {
	switch in.Kind {
	case InputAcquire:
		return messages.Acquire{ID: in.ID, NoColdStart: in.NoColdStart, StickyOnly: in.StickyOnly, Deadline: in.Deadline, Reply: func(l messages.Lease, err error) { reply(l, err) }}, nil
	case InputRelease:
		return messages.Release{ID: in.ID, Reply: func(r messages.Released, err error) { reply(r, err) }}, nil
	case InputRenew:
		return messages.Renew{ID: in.ID, Reply: func(l messages.Lease, err error) { reply(l, err) }}, nil
	case InputStats:
		return messages.GetStats{Reply: func(s messages.Stats, err error) { reply(s, err) }}, nil
	case InputWarmup:
		return messages.Warmup{Count: in.Count, Reply: func(w messages.WarmupReply, err error) { reply(w, err) }}, nil
	case InputShutdown:
		return messages.ShutdownAll{Reply: func(s messages.ShutdownReply, err error) { reply(s, err) }}, nil
	case InputSlot:
		if in.Slot == nil {
			return nil, errors.New("slot input without slot")
		}
		ev, err := eventByName(in.Slot.Event)
		if err != nil {
			return nil, err
		}
		return slotEvent{Slot: in.Slot.Slot, Event: ev, Endpoint: in.Slot.Handle.Endpoint, Handle: in.Slot.Handle, Reason: in.Slot.Reason}, nil
	case InputLease:
		if in.Lease == nil {
			return nil, errors.New("lease input without lease")
		}
		op, err := opByName(in.Lease.Op)
		if err != nil {
			return nil, err
		}
		return leaseWritten{id: in.Lease.ID, op: op, revision: in.Lease.Revision, expiresAt: in.Lease.ExpiresAt, err: errFromClass(in.Lease.Err)}, nil
	case InputShare:
		if in.Share == nil {
			return nil, errors.New("share input without share")
		}
		return *in.Share, nil
	case InputRefresh:
		return refreshTick{}, nil
	case InputBackoff:
		return backoffTick{}, nil
	case InputStop:
		return stopPool{done: make(chan struct{}), leave: in.Leave}, nil
	case InputTerminated:
		if in.Slot == nil {
			return nil, errors.New("terminated input without slot")
		}
		return slotTerminated{slot: in.Slot.Slot}, nil
	}
	return nil, fmt.Errorf("unknown input kind %q", in.Kind)
}

// slotTerminated is a replayed *actor.Terminated of a slot actor.
type slotTerminated struct{ slot string }

// WriterRecorder writes inputs as JSON lines to a writer, off the pool's
// mailbox: Record queues, a goroutine writes.
type WriterRecorder struct {
	mu     sync.Mutex
	w      *bufio.Writer
	c      io.Closer
	ch     chan Input
	done   chan struct{}
	err    error
	closed bool
}

// NewWriterRecorder records to w; Close flushes and closes it (when it is an
// io.Closer).
func NewWriterRecorder(w io.Writer) *WriterRecorder {
	r := &WriterRecorder{w: bufio.NewWriterSize(w, 1<<16), ch: make(chan Input, 1<<14), done: make(chan struct{})}
	if c, ok := w.(io.Closer); ok {
		r.c = c
	}
	go r.run()
	return r
}

// Record implements Recorder. It blocks while the queue is full; after
// Close it drops the input.
func (r *WriterRecorder) Record(in Input) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.ch <- in
}

func (r *WriterRecorder) run() {
	defer close(r.done)
	enc := json.NewEncoder(r.w)
	for in := range r.ch {
		if err := enc.Encode(in); err != nil && r.err == nil {
			r.err = err // read only after done is closed
		}
	}
}

// Close writes what is queued and closes the writer. Record must not be
// called after.
func (r *WriterRecorder) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	close(r.ch)
	r.mu.Unlock()
	<-r.done
	r.mu.Lock()
	defer r.mu.Unlock()
	err := r.err
	if ferr := r.w.Flush(); err == nil {
		err = ferr
	}
	if r.c != nil {
		if cerr := r.c.Close(); err == nil {
			err = cerr
		}
	}
	return err
}

// ReadInputs parses a recording: one Input per line; blank lines are
// skipped. Errors name the line.
func ReadInputs(rd io.Reader) ([]Input, error) {
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 1<<16), 64<<20)
	var out []Input
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		var in Input
		if err := json.Unmarshal([]byte(text), &in); err != nil {
			return nil, fmt.Errorf("recording line %d: %w", line, err)
		}
		if in.Kind == InputHeader && in.Schema > RecordSchema {
			return nil, fmt.Errorf("recording line %d: schema %d is newer than this warmpool's %d", line, in.Schema, RecordSchema)
		}
		out = append(out, in)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading the recording: %w", err)
	}
	return out, nil
}
