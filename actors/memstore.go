package actors

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// MemoryLeases is a LeaseStore in memory, with the same compare-and-set
// rules as the KV store: for actor tests, and for a pool run without NATS.
// It is safe for concurrent use.
type MemoryLeases struct {
	mu    sync.Mutex
	rev   uint64
	items map[string]StoredLease
	// Fail, when set, makes every write fail with its result.
	fail func(op string, r LeaseRecord) error
}

// NewMemoryLeases returns an empty store.
func NewMemoryLeases() *MemoryLeases { return &MemoryLeases{items: map[string]StoredLease{}} }

func leaseKey(pool, id string) string { return pool + "\x00" + id }

// FailWith makes later writes call f first and fail with its error when it
// returns one; nil restores normal writes.
func (m *MemoryLeases) FailWith(f func(op string, r LeaseRecord) error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fail = f
}

func (m *MemoryLeases) check(op string, r LeaseRecord) error {
	if m.fail != nil {
		return m.fail(op, r)
	}
	return nil
}

// Create implements LeaseStore.
func (m *MemoryLeases) Create(ctx context.Context, r LeaseRecord) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check("create", r); err != nil {
		return 0, err
	}
	k := leaseKey(r.Pool, r.ID)
	if _, ok := m.items[k]; ok {
		return 0, fmt.Errorf("%w: %s/%s", ErrLeaseExists, r.Pool, r.ID)
	}
	m.rev++
	r.Version = LeaseSchema
	m.items[k] = StoredLease{Record: r, Revision: m.rev}
	return m.rev, nil
}

// Update implements LeaseStore.
func (m *MemoryLeases) Update(ctx context.Context, r LeaseRecord, rev uint64) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check("update", r); err != nil {
		return 0, err
	}
	k := leaseKey(r.Pool, r.ID)
	if cur, ok := m.items[k]; !ok || cur.Revision != rev {
		return 0, fmt.Errorf("%w: %s/%s at revision %d", ErrRevisionMismatch, r.Pool, r.ID, rev)
	}
	m.rev++
	r.Version = LeaseSchema
	m.items[k] = StoredLease{Record: r, Revision: m.rev}
	return m.rev, nil
}

// Delete implements LeaseStore.
func (m *MemoryLeases) Delete(ctx context.Context, pool, id string, rev uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check("delete", LeaseRecord{Pool: pool, ID: id}); err != nil {
		return err
	}
	k := leaseKey(pool, id)
	if cur, ok := m.items[k]; !ok || cur.Revision != rev {
		return fmt.Errorf("%w: %s/%s at revision %d", ErrRevisionMismatch, pool, id, rev)
	}
	delete(m.items, k)
	return nil
}

// List implements LeaseStore.
func (m *MemoryLeases) List(ctx context.Context, pool string) ([]StoredLease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []StoredLease
	for _, l := range m.items {
		if l.Record.Pool == pool {
			out = append(out, l)
		}
	}
	slices.SortFunc(out, func(a, b StoredLease) int { return strings.Compare(a.Record.ID, b.Record.ID) })
	return out, nil
}

// Overwrite writes r whatever is stored, as another writer would, and
// returns the new revision.
func (m *MemoryLeases) Overwrite(r LeaseRecord) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rev++
	m.items[leaseKey(r.Pool, r.ID)] = StoredLease{Record: r, Revision: m.rev}
	return m.rev
}

// MemorySnapshots is a SnapshotStore in memory, safe for concurrent use.
type MemorySnapshots struct {
	mu    sync.Mutex
	items map[string]SlotSnapshot
	puts  int
}

// NewMemorySnapshots returns an empty store.
func NewMemorySnapshots() *MemorySnapshots {
	return &MemorySnapshots{items: map[string]SlotSnapshot{}}
}

// Put implements SnapshotStore.
func (m *MemorySnapshots) Put(ctx context.Context, s SlotSnapshot) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.puts++
	k := s.Pool + "\x00" + s.Node + "\x00" + s.Slot
	if s.State == Gone.String() {
		delete(m.items, k)
		return nil
	}
	s.Version = SnapshotSchema
	m.items[k] = s
	return nil
}

// List implements SnapshotStore.
func (m *MemorySnapshots) List(ctx context.Context, pool, node string) ([]SlotSnapshot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []SlotSnapshot
	for _, s := range m.items {
		if s.Pool == pool && s.Node == node {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b SlotSnapshot) int { return strings.Compare(a.Slot, b.Slot) })
	return out, nil
}
