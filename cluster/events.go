package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/warmpool/warmpool/actors"
	"github.com/warmpool/warmpool/messages"
)

// The event stream: every pool's events, one JetStream message per batch of
// a pool's events, on the pool's subject.
const (
	// EventStreamName is the stream that keeps the events.
	EventStreamName = "WARMPOOL_EVENTS"
	// EventSubjectPrefix is followed by the pool's name: a pool's events are
	// published on warmpool.events.<pool>.
	EventSubjectPrefix = "warmpool.events."
)

// Defaults of the event stream and publisher.
const (
	DefaultEventsMaxAge = 24 * time.Hour
	// DefaultEventsMaxBytes is no size cap: the age bounds the stream. A cap
	// is reserved on disk when the stream is created, so a default one would
	// keep a node from starting on a machine short of disk.
	DefaultEventsMaxBytes  = int64(-1)
	DefaultEventQueueSize  = 65536
	DefaultEventBatchSize  = 512
	DefaultEventBatchDelay = 50 * time.Millisecond
)

const (
	// maxBatchBytes closes a batch early: exit reasons carry a container's
	// last lines, and 512 long events would pass NATS's 1 MiB max payload.
	maxBatchBytes = 256 << 10
	// A batch that cannot be published is tried publishAttempts times, each
	// bounded by publishTimeout, then dropped.
	publishAttempts = 3
	publishTimeout  = 5 * time.Second
	publishBackoff  = 100 * time.Millisecond
	// dropWarnInterval spaces the warnings about dropped events.
	dropWarnInterval = 10 * time.Second
	// sinceSlack starts a Since query this much earlier in the stream: a
	// batch is stored after the events it holds (up to the batch delay plus
	// retries), and the server's clock may differ a little from the node's.
	// The events themselves are then filtered by their own time.
	sinceSlack = time.Minute
	// maxBadEvents bounds the errors ReadEvents keeps about unreadable
	// messages; the rest are counted.
	maxBadEvents = 10
)

// Event stream errors.
var (
	// ErrNoEventStream is returned by ReadEvents when the NATS system has no
	// event stream: no node that publishes events has run on it.
	ErrNoEventStream = errors.New("no event stream")
	// ErrBadEvent is wrapped, per stream message and line, by the error
	// ReadEvents returns after reading on, for a line that is not a
	// warmpool.v1.event JSON object. The line is skipped.
	ErrBadEvent = errors.New("unreadable event")
)

// EventSubject is the subject of pool's events.
func EventSubject(pool string) string { return EventSubjectPrefix + pool }

// EventStreamOptions configure the event stream. Zero fields take the
// defaults. The stream discards its oldest events past either limit.
type EventStreamOptions struct {
	// MaxAge is how long events are kept, at least a second. Default 24h.
	MaxAge time.Duration `json:"max_age"`
	// MaxBytes bounds the stream's size, at least 1 MiB; -1 (the default)
	// sets no cap. JetStream reserves a cap on the server's disk when the
	// stream is created.
	MaxBytes int64 `json:"max_bytes"`
	// Replicas of the stream, 1 to 5. Default 1.
	Replicas int `json:"replicas"`
}

func (o EventStreamOptions) withDefaults() EventStreamOptions {
	if o.MaxAge == 0 {
		o.MaxAge = DefaultEventsMaxAge
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultEventsMaxBytes
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	return o
}

func (o EventStreamOptions) valid() error {
	switch {
	case o.MaxAge < time.Second:
		return fmt.Errorf("%w: events.max_age is %s, must be at least 1s", messages.ErrConfigValidation, o.MaxAge)
	case o.MaxBytes != -1 && o.MaxBytes < 1<<20:
		return fmt.Errorf("%w: events.max_bytes is %d, must be -1 (no cap) or at least 1 MiB (%d)", messages.ErrConfigValidation, o.MaxBytes, 1<<20)
	case o.Replicas < 1 || o.Replicas > 5:
		return fmt.Errorf("%w: events.replicas is %d, must be 1 to 5", messages.ErrConfigValidation, o.Replicas)
	}
	return nil
}

// OpenEventStream creates the event stream, or updates it to o: subjects
// warmpool.events.>, file storage, limits retention, oldest discarded first.
func OpenEventStream(ctx context.Context, js jetstream.JetStream, o EventStreamOptions) (jetstream.Stream, error) {
	o = o.withDefaults()
	if err := o.valid(); err != nil {
		return nil, err
	}
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        EventStreamName,
		Description: "warmpool pool events: JSON lines of warmpool.v1.event, one message per batch of a pool's events",
		Subjects:    []string{EventSubjectPrefix + ">"},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		Storage:     jetstream.FileStorage,
		MaxAge:      o.MaxAge,
		MaxBytes:    o.MaxBytes,
		Replicas:    o.Replicas,
	})
	if err != nil {
		if isStorageExceeded(err) {
			return nil, fmt.Errorf("opening the event stream %s: %w (JetStream reserves its max bytes, %d, on disk: lower the events max bytes)",
				EventStreamName, err, o.MaxBytes)
		}
		return nil, fmt.Errorf("opening the event stream %s: %w", EventStreamName, err)
	}
	return s, nil
}

// isStorageExceeded is the server's "insufficient storage resources" or
// "insufficient resources" (their codes are not in nats.go).
func isStorageExceeded(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == 10047 || apiErr.ErrorCode == 10023)
}

// EventPublisherOptions configure an EventPublisher. Zero fields take the
// defaults.
type EventPublisherOptions struct {
	// QueueSize bounds the events waiting to be published; past it events
	// are dropped, never waited for. Default 65536.
	QueueSize int `json:"queue_size"`
	// BatchSize is the most events of one pool in one stream message.
	// Default 512.
	BatchSize int `json:"batch_size"`
	// BatchDelay is the longest an event waits for its batch to fill.
	// Default 50ms.
	BatchDelay time.Duration `json:"batch_delay"`
	// Logger gets the publisher's warnings; default slog.Default().
	Logger *slog.Logger `json:"-"`
}

func (o EventPublisherOptions) withDefaults() EventPublisherOptions {
	if o.QueueSize == 0 {
		o.QueueSize = DefaultEventQueueSize
	}
	if o.BatchSize == 0 {
		o.BatchSize = DefaultEventBatchSize
	}
	if o.BatchDelay == 0 {
		o.BatchDelay = DefaultEventBatchDelay
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

func (o EventPublisherOptions) valid() error {
	switch {
	case o.QueueSize < 1:
		return fmt.Errorf("%w: events queue size is %d, must be at least 1", messages.ErrConfigValidation, o.QueueSize)
	case o.BatchSize < 1:
		return fmt.Errorf("%w: events batch size is %d, must be at least 1", messages.ErrConfigValidation, o.BatchSize)
	case o.BatchDelay < 0:
		return fmt.Errorf("%w: events batch delay is %s, must not be negative", messages.ErrConfigValidation, o.BatchDelay)
	}
	return nil
}

// EventPublisherStats count what an EventPublisher did with the events it
// was given.
type EventPublisherStats struct {
	// Published counts the events in acknowledged stream messages.
	Published uint64 `json:"published"`
	// Messages counts the acknowledged stream messages (batches).
	Messages uint64 `json:"messages"`
	// Dropped counts the events dropped because the queue was full, or
	// because they came after Close.
	Dropped uint64 `json:"dropped"`
	// Failed counts the events dropped because their batch could not be
	// published, or was still queued when Close gave up.
	Failed uint64 `json:"failed"`
}

// EventPublisher is an actors.EventSink that publishes the events to the
// event stream. Emit only queues: a goroutine collects each pool's events
// for up to BatchDelay or BatchSize events and publishes them as one stream
// message of JSON lines, waiting for the server's acknowledgement. Batching
// matters on the lease hot path: the server fsyncs every message. A pool's
// batches are published in order, one at a time. Safe for concurrent use.
type EventPublisher struct {
	js    jetstream.JetStream
	o     EventPublisherOptions
	log   *slog.Logger
	queue chan messages.Event
	// full tells the goroutine that a batch's worth of events waits, queued
	// or in its open batches (held).
	full chan struct{}
	held atomic.Int64
	// idPrefix makes the batches' message ids unique, so that a retried
	// publish whose first attempt did land is not stored twice.
	idPrefix string

	closing   chan struct{}
	closeOnce sync.Once
	closed    atomic.Bool
	done      chan struct{}
	// ctx ends the publishes in flight when Close gives up.
	ctx    context.Context
	cancel context.CancelFunc

	published, messages, dropped, failed atomic.Uint64

	// Owned by the goroutine.
	batchSeq      uint64
	reportedDrops uint64
	lastDropWarn  time.Time
}

var _ actors.EventSink = (*EventPublisher)(nil)

// eventBatch is a pool's events waiting to be published, as JSON lines.
type eventBatch struct {
	pool  string
	data  []byte
	count int
}

// NewEventPublisher starts a publisher on js. The event stream must exist
// (see OpenEventStream) for its publishes to be acknowledged. Close stops it.
func NewEventPublisher(js jetstream.JetStream, o EventPublisherOptions) (*EventPublisher, error) {
	o = o.withDefaults()
	if err := o.valid(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &EventPublisher{
		js: js, o: o, log: o.Logger.With("component", "events"),
		queue:    make(chan messages.Event, o.QueueSize),
		full:     make(chan struct{}, 1),
		idPrefix: uuid.NewString()[:8],
		closing:  make(chan struct{}),
		done:     make(chan struct{}),
		ctx:      ctx, cancel: cancel,
	}
	go p.run()
	return p, nil
}

// Emit implements actors.EventSink: it queues e and never waits. When the
// queue is full, or after Close, e is dropped and counted; a gap in a pool's
// Seq numbers tells readers.
func (p *EventPublisher) Emit(e messages.Event) {
	if p.closed.Load() {
		p.dropped.Add(1)
		return
	}
	select {
	case p.queue <- e:
		if len(p.queue)+int(p.held.Load()) >= p.o.BatchSize {
			select {
			case p.full <- struct{}{}:
			default:
			}
		}
	default:
		p.dropped.Add(1)
	}
}

// Stats returns the publisher's counts so far.
func (p *EventPublisher) Stats() EventPublisherStats {
	return EventPublisherStats{
		Published: p.published.Load(), Messages: p.messages.Load(),
		Dropped: p.dropped.Load(), Failed: p.failed.Load(),
	}
}

// Close publishes the queued events and stops the publisher. ctx bounds the
// wait: when it ends, the publishes in flight are abandoned and the events
// still queued are dropped, and Close says how many. Events emitted after
// Close are dropped.
func (p *EventPublisher) Close(ctx context.Context) error {
	p.closeOnce.Do(func() {
		p.closed.Store(true)
		close(p.closing)
	})
	before := p.failed.Load()
	select {
	case <-p.done:
		p.cancel()
		return nil
	case <-ctx.Done():
	}
	p.cancel()
	<-p.done // quick: every publish now fails at once
	return fmt.Errorf("event publisher: %d events not published: %w", p.failed.Load()-before, ctx.Err())
}

// run collects the queued events into per-pool batches and publishes them.
func (p *EventPublisher) run() {
	defer close(p.done)
	batches := map[string]*eventBatch{}
	var order []string // pools with a batch, oldest first
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	flushAll := func() {
		for _, pool := range order {
			p.publish(batches[pool])
			delete(batches, pool)
		}
		order = order[:0]
		timer.Stop()
	}
	add := func(e messages.Event) {
		if err := messages.ValidatePoolName(e.Pool); err != nil {
			p.failed.Add(1)
			p.log.Warn("dropping an event of a pool whose name is not a subject token", "pool", e.Pool, "err", err)
			return
		}
		b := batches[e.Pool]
		if b == nil {
			b = &eventBatch{pool: e.Pool}
			batches[e.Pool] = b
			order = append(order, e.Pool)
			if len(order) == 1 {
				timer.Reset(p.o.BatchDelay)
			}
		}
		b.data = append(e.AppendJSON(b.data), '\n')
		b.count++
		p.held.Add(1)
		if b.count >= p.o.BatchSize || len(b.data) >= maxBatchBytes {
			p.publish(b)
			delete(batches, e.Pool)
			order = deleteString(order, e.Pool)
			if len(order) == 0 {
				timer.Stop()
			}
		}
	}
	drain := func() {
		for {
			select {
			case e := <-p.queue:
				add(e)
			default:
				return
			}
		}
	}
	// The first event opens a batch; the events after it wait in the queue
	// until the batch delay ends (or a batch's worth is queued) and are
	// then taken at once. Waking for every event cost more than encoding it.
	for {
		var first <-chan messages.Event // only with no batch open
		if len(order) == 0 {
			first = p.queue
		} else if n := len(p.queue); n > 0 && n+int(p.held.Load()) >= p.o.BatchSize {
			// A batch's worth came in while Emit could not yet count the
			// events held here.
			drain()
			continue
		}
		select {
		case e := <-first:
			add(e)
		case <-timer.C:
			drain()
			flushAll()
		case <-p.full:
			drain()
		case <-p.closing:
			drain()
			flushAll()
			p.warnDrops(true)
			return
		}
		p.warnDrops(false)
	}
}

// publish publishes one batch, retrying a few times with backoff; a batch
// that still fails is dropped with a warning.
func (p *EventPublisher) publish(b *eventBatch) {
	defer p.held.Add(-int64(b.count))
	p.batchSeq++
	id := fmt.Sprintf("%s-%d", p.idPrefix, p.batchSeq)
	subject := EventSubject(b.pool)
	backoff := publishBackoff
	var err error
	for attempt := 1; attempt <= publishAttempts; attempt++ {
		if p.ctx.Err() != nil {
			err = p.ctx.Err()
			break
		}
		ctx, cancel := context.WithTimeout(p.ctx, publishTimeout)
		_, err = p.js.Publish(ctx, subject, b.data, jetstream.WithMsgID(id))
		cancel()
		if err == nil {
			p.published.Add(uint64(b.count))
			p.messages.Add(1)
			return
		}
		if attempt == publishAttempts {
			break
		}
		select {
		case <-time.After(backoff):
		case <-p.ctx.Done():
		}
		backoff *= 4
	}
	p.failed.Add(uint64(b.count))
	p.log.Warn("publishing events failed; dropped them", "pool", b.pool, "events", b.count, "subject", subject, "err", err)
}

// warnDrops logs the events dropped since the last warning, at most once
// every dropWarnInterval unless final.
func (p *EventPublisher) warnDrops(final bool) {
	d := p.dropped.Load()
	if d == p.reportedDrops || (!final && time.Since(p.lastDropWarn) < dropWarnInterval) {
		return
	}
	p.log.Warn("event queue full: events dropped", "dropped", d-p.reportedDrops, "dropped_total", d, "queue_size", p.o.QueueSize)
	p.reportedDrops, p.lastDropWarn = d, time.Now()
}

func deleteString(s []string, v string) []string {
	for i, x := range s {
		if x == v {
			return append(s[:i], s[i+1:]...)
		}
	}
	return s
}

// EventQuery selects events. Zero fields select everything.
type EventQuery struct {
	// Pool selects one pool's events.
	Pool string `json:"pool,omitempty"`
	// Session selects the life of one session: its events, and the events
	// of each slot it held from the session's first event naming the slot
	// until the slot is released, warm again or stopped (slot.released
	// carries no session: the slot is nobody's by then).
	Session string `json:"session,omitempty"`
	// Slot selects one slot's events.
	Slot string `json:"slot,omitempty"`
	// Since selects the events from this time on.
	Since time.Time `json:"since,omitzero"`
	// Follow keeps reading new events until ctx ends; without it ReadEvents
	// returns once it has read what the stream held when it started.
	Follow bool `json:"follow,omitempty"`
}

func (q EventQuery) valid() error {
	if q.Pool != "" {
		if err := messages.ValidatePoolName(q.Pool); err != nil {
			return fmt.Errorf("%w: pool: %v", messages.ErrBadRequest, err)
		}
	}
	if q.Session != "" {
		if err := messages.ValidateID(q.Session); err != nil {
			return err
		}
	}
	return nil
}

// ReadEvents calls each with the events that q selects, in the order they
// were published (a pool's in the order the pool made them), from an
// ordered consumer on the event stream. Without q.Follow it returns once it
// has read every message the stream held when it started; with q.Follow it
// reads on until ctx ends, and then returns nil.
//
// A message that is not JSON lines of events is skipped, as is each bad
// line in one, and reading goes on: the error returned at the end wraps
// ErrBadEvent for each (naming the stream sequence and line), alongside the
// events each was given. An error from each stops the read and is returned.
// It returns an error wrapping ErrNoEventStream when there is no stream.
func ReadEvents(ctx context.Context, js jetstream.JetStream, q EventQuery, each func(messages.Event) error) error {
	if err := q.valid(); err != nil {
		return err
	}
	stream, err := js.Stream(ctx, EventStreamName)
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("%w: stream %s does not exist (has a warmpool node with events run on this NATS system?)", ErrNoEventStream, EventStreamName)
		}
		return fmt.Errorf("reading the event stream %s: %w", EventStreamName, err)
	}
	var last uint64
	if !q.Follow {
		info, err := stream.Info(ctx)
		if err != nil {
			return fmt.Errorf("reading the event stream %s: %w", EventStreamName, err)
		}
		if info.State.Msgs == 0 {
			return nil
		}
		last = info.State.LastSeq
	}
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy, InactiveThreshold: time.Minute}
	if q.Pool != "" {
		cfg.FilterSubjects = []string{EventSubject(q.Pool)}
	}
	if !q.Since.IsZero() {
		start := q.Since.Add(-sinceSlack)
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &start
	}
	cons, err := stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("reading the event stream %s: %w", EventStreamName, err)
	}
	msgs, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("reading the event stream %s: %w", EventStreamName, err)
	}
	defer func() {
		msgs.Stop()
		// The server would drop the consumer once idle; no need to wait.
		if info := cons.CachedInfo(); info != nil {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			_ = js.DeleteConsumer(dctx, EventStreamName, info.Name)
			cancel()
		}
	}()
	if !q.Follow {
		// Nothing selected (a Since past the last event, a pool with none):
		// no message will come to say so.
		info, err := cons.Info(ctx)
		if err != nil {
			return fmt.Errorf("reading the event stream %s: %w", EventStreamName, err)
		}
		if info.NumPending == 0 && info.Delivered.Consumer == 0 {
			return nil
		}
	}
	sel := newEventSelector(q)
	var bad badEvents
	for {
		msg, err := msgs.Next(jetstream.NextContext(ctx))
		if err != nil {
			if q.Follow && ctx.Err() != nil {
				return bad.err()
			}
			return errors.Join(fmt.Errorf("reading the event stream %s: %w", EventStreamName, err), bad.err())
		}
		meta, err := msg.Metadata()
		if err != nil {
			return errors.Join(fmt.Errorf("reading the event stream %s: %w", EventStreamName, err), bad.err())
		}
		seq := meta.Sequence.Stream
		if !q.Follow && seq > last {
			return bad.err() // published after the read began
		}
		events, errs := decodeEventBatch(seq, msg.Data())
		bad.add(errs...)
		for _, e := range events {
			if sel.match(e) {
				if err := each(e); err != nil {
					return err
				}
			}
		}
		if !q.Follow && (seq >= last || meta.NumPending == 0) {
			return bad.err()
		}
	}
}

// decodeEventBatch splits a stream message into its events. A line that is
// not an event is skipped and reported.
func decodeEventBatch(seq uint64, data []byte) ([]messages.Event, []error) {
	var events []messages.Event
	var errs []error
	for n := 1; len(data) > 0; n++ {
		var line []byte
		line, data, _ = bytes.Cut(data, []byte{'\n'})
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var e messages.Event
		if err := json.Unmarshal(line, &e); err != nil {
			errs = append(errs, fmt.Errorf("%w: stream sequence %d, line %d: %v", ErrBadEvent, seq, n, err))
			continue
		}
		if e.Type != messages.TypeEvent {
			errs = append(errs, fmt.Errorf("%w: stream sequence %d, line %d: type %q, want %q", ErrBadEvent, seq, n, e.Type, messages.TypeEvent))
			continue
		}
		events = append(events, e)
	}
	return events, errs
}

// eventSelector applies a query to events read in order; following a
// session's slots needs the events that came before.
type eventSelector struct {
	q    EventQuery
	held map[string]bool // slots that serve q.Session
}

func newEventSelector(q EventQuery) *eventSelector {
	return &eventSelector{q: q, held: map[string]bool{}}
}

func (s *eventSelector) match(e messages.Event) bool {
	if s.q.Pool != "" && e.Pool != s.q.Pool {
		return false
	}
	if !s.inSession(e) {
		return false
	}
	if s.q.Slot != "" && e.Slot != s.q.Slot {
		return false
	}
	return s.q.Since.IsZero() || !e.Time.Before(s.q.Since)
}

// inSession follows q.Session's slots; it sees every event, before the
// other filters, so that it knows which slots the session holds.
func (s *eventSelector) inSession(e messages.Event) bool {
	if s.q.Session == "" {
		return true
	}
	switch {
	case e.Session == s.q.Session:
		if e.Slot != "" {
			s.held[e.Slot] = true
		}
		return true
	case e.Slot == "" || !s.held[e.Slot]:
		return false
	case e.Session != "":
		delete(s.held, e.Slot) // another session's now
		return false
	}
	switch e.Kind {
	case messages.EventSlotReleased, messages.EventSlotWarm, messages.EventSlotStopped:
		delete(s.held, e.Slot)
	}
	return true
}

// badEvents collects the errors about unreadable events, a bounded number.
type badEvents struct {
	errs []error
	more int
}

func (b *badEvents) add(errs ...error) {
	for _, err := range errs {
		if len(b.errs) < maxBadEvents {
			b.errs = append(b.errs, err)
		} else {
			b.more++
		}
	}
}

func (b *badEvents) err() error {
	if b.more > 0 {
		return errors.Join(append(b.errs, fmt.Errorf("%w: and %d more", ErrBadEvent, b.more))...)
	}
	return errors.Join(b.errs...)
}
