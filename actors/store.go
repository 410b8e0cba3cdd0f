package actors

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/warmpool/warmpool/driver"
	"github.com/warmpool/warmpool/messages"
)

// Schema versions of what the stores hold. A reader refuses a newer version
// rather than misreading it.
const (
	LeaseSchema    = 1
	SnapshotSchema = 1
)

// Store errors, wrapped by LeaseStore implementations.
var (
	// ErrLeaseExists: Create found the key taken by another writer's lease.
	ErrLeaseExists = errors.New("lease already exists")
	// ErrRevisionMismatch: the stored lease changed since the revision the
	// writer holds; the writer lost it and must not use it.
	ErrRevisionMismatch = errors.New("lease revision mismatch")
	// ErrOutcomeUnknown: the write may or may not have landed (it timed out,
	// say while the store elected a new leader). A create with this outcome
	// may have recorded the container as the session's: the pool does not
	// hand that container to anyone else.
	ErrOutcomeUnknown = errors.New("lease write outcome unknown")
	// ErrNoWarm: an acquire with NoColdStart found nothing warm for a new
	// session. It wraps messages.ErrNotReady where it reaches a caller.
	ErrNoWarm = errors.New("no warm container here")
)

// LeaseRecord is a lease as stored: what recovery needs to give the session
// its container back.
type LeaseRecord struct {
	Version  int    `json:"version"`
	Pool     string `json:"pool"`
	ID       string `json:"id"`
	Slot     string `json:"slot"`
	Node     string `json:"node"`
	Endpoint string `json:"endpoint"`
	// ContainerID and StartID name the container (driver.Handle's ID and
	// StartID), so that recovery can adopt it on the lease's word alone:
	// the lease is written before the reply, the slot's snapshot after.
	ContainerID string    `json:"container_id"`
	StartID     string    `json:"start_id,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	ExpiresAt   time.Time `json:"expires_at"`
}

// AppendJSON appends r encoded as encoding/json would encode it: a lease is
// written on every acquire and release.
func (r LeaseRecord) AppendJSON(b []byte) []byte {
	b = append(b, `{"version":`...)
	b = strconv.AppendInt(b, int64(r.Version), 10)
	b = append(b, `,"pool":`...)
	b = messages.AppendJSONString(b, r.Pool)
	b = append(b, `,"id":`...)
	b = messages.AppendJSONString(b, r.ID)
	b = append(b, `,"slot":`...)
	b = messages.AppendJSONString(b, r.Slot)
	b = append(b, `,"node":`...)
	b = messages.AppendJSONString(b, r.Node)
	b = append(b, `,"endpoint":`...)
	b = messages.AppendJSONString(b, r.Endpoint)
	b = append(b, `,"container_id":`...)
	b = messages.AppendJSONString(b, r.ContainerID)
	if r.StartID != "" {
		b = append(b, `,"start_id":`...)
		b = messages.AppendJSONString(b, r.StartID)
	}
	b = append(b, `,"created_at":"`...)
	b = r.CreatedAt.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","expires_at":"`...)
	b = r.ExpiresAt.AppendFormat(b, time.RFC3339Nano)
	return append(b, `"}`...)
}

// StoredLease is a lease record with its revision, the fencing token.
type StoredLease struct {
	Record   LeaseRecord
	Revision uint64
}

// LeaseStore keeps leases durably with compare-and-set writes. The pool calls
// it from goroutines, never from its mailbox. Session ids are arbitrary
// strings: implementations encode them into keys.
//
// The pool sets no deadline on a write: a store bounds each write itself,
// retries included (LeaseKV: 20 s, above a NATS cluster's leader election,
// during which writes pause and then go through). A write that fails or
// times out fails the request as not ready, and the caller retries; one
// whose outcome is unknown wraps ErrOutcomeUnknown.
type LeaseStore interface {
	// Create writes a new lease; ErrLeaseExists if the id already has one.
	Create(ctx context.Context, r LeaseRecord) (revision uint64, err error)
	// Update rewrites a lease held at revision; ErrRevisionMismatch if it
	// changed since.
	Update(ctx context.Context, r LeaseRecord, revision uint64) (uint64, error)
	// Delete removes a lease held at revision; ErrRevisionMismatch if it
	// changed since.
	Delete(ctx context.Context, pool, id string, revision uint64) error
	// List returns every lease of pool.
	List(ctx context.Context, pool string) ([]StoredLease, error)
}

// SlotSnapshot is one slot as stored, rewritten on every transition.
type SlotSnapshot struct {
	Version int    `json:"version"`
	Pool    string `json:"pool"`
	Node    string `json:"node"`
	Slot    string `json:"slot"`
	State   string `json:"state"`
	// Handle is the container, known once it is ready.
	Handle driver.Handle `json:"handle"`
	// Session holds or has claimed the slot.
	Session   string    `json:"session,omitempty"`
	Since     time.Time `json:"since"`
	UpdatedAt time.Time `json:"updated_at"`
}

// SnapshotStore keeps the latest snapshot of every slot.
type SnapshotStore interface {
	// Put writes a slot's snapshot; one in state "gone" may be deleted.
	Put(ctx context.Context, s SlotSnapshot) error
	// List returns the snapshots of node's slots in pool.
	List(ctx context.Context, pool, node string) ([]SlotSnapshot, error)
}
