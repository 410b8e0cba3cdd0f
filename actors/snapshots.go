package actors

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// snapshotWriter writes slot snapshots behind the pool, off its mailbox. Only
// a slot's latest snapshot matters, so snapshots queued for the same slot
// collapse into one write: under load a slot that moves ten times between
// two writes costs one write, not ten (see snapshotCoalesce).
type snapshotWriter struct {
	store SnapshotStore
	log   *slog.Logger

	mu      sync.Mutex
	pending map[string]SlotSnapshot
	busy    bool
	wake    chan struct{}
	hurry   chan struct{} // a flush: write now, gather no longer
	idle    *sync.Cond
	closed  bool
}

func newSnapshotWriter(store SnapshotStore, log *slog.Logger) *snapshotWriter {
	w := &snapshotWriter{store: store, log: log, pending: map[string]SlotSnapshot{}, wake: make(chan struct{}, 1), hurry: make(chan struct{}, 1)}
	w.idle = sync.NewCond(&w.mu)
	go w.run()
	return w
}

// put queues a snapshot; it never blocks.
func (w *snapshotWriter) put(s SlotSnapshot) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.pending[s.Slot] = s
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// snapshotCoalesce is how long the writer lets snapshots gather before it
// writes them: a slot that is acquired and released many times in that
// window costs one write. Snapshots lag the pool by about this much; the
// lease, which recovery trusts first, is written before every reply.
const snapshotCoalesce = 250 * time.Millisecond

func (w *snapshotWriter) run() {
	gather := time.NewTimer(snapshotCoalesce)
	gather.Stop()
	for range w.wake {
		for {
			w.mu.Lock()
			if len(w.pending) == 0 {
				w.busy = false
				w.idle.Broadcast()
				w.mu.Unlock()
				break
			}
			w.busy = true
			w.mu.Unlock()
			// Gather before every batch, the first and the ones after it:
			// under load snapshots keep coming while a batch is written,
			// and writing them at once would write a busy slot every few
			// milliseconds instead of once a coalescing period.
			gather.Reset(snapshotCoalesce)
			select {
			case <-gather.C:
			case <-w.hurry:
				gather.Stop()
			}
			w.mu.Lock()
			batch := w.pending
			w.pending = map[string]SlotSnapshot{}
			w.mu.Unlock()
			for _, s := range batch {
				w.write(s)
			}
		}
	}
}

func (w *snapshotWriter) write(s SlotSnapshot) {
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := w.store.Put(ctx, s)
		cancel()
		if err == nil {
			return
		}
		if attempt == 2 {
			// The next transition of the slot writes it again; recovery
			// trusts the driver and the leases over a stale snapshot.
			w.log.Warn("writing a slot snapshot failed", "slot", s.Slot, "state", s.State, "err", err)
			return
		}
		time.Sleep(time.Duration(attempt+1) * 100 * time.Millisecond)
	}
}

// flush waits until every queued snapshot is written or ctx ends.
func (w *snapshotWriter) flush(ctx context.Context) error {
	select {
	case w.hurry <- struct{}{}:
	default:
	}
	done := make(chan struct{})
	go func() {
		w.mu.Lock()
		for len(w.pending) > 0 || w.busy {
			w.idle.Wait()
		}
		w.mu.Unlock()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// close stops the writer once the queue is empty; later puts are dropped.
func (w *snapshotWriter) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.closed = true
		close(w.wake)
	}
}
