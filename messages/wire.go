package messages

import (
	"fmt"
	"time"
	"unicode/utf8"
)

// Type strings carried by every reply body, so that a reader can tell what it
// holds and which version of the API wrote it.
const (
	TypeLease    = "warmpool.v1.lease"
	TypeReleased = "warmpool.v1.released"
	TypeStats    = "warmpool.v1.stats"
	TypeWarmup   = "warmpool.v1.warmup"
	TypeShutdown = "warmpool.v1.shutdown"
	TypeDraining = "warmpool.v1.draining"
)

// MaxIDLength is the longest session id accepted, in bytes.
const MaxIDLength = 256

// ValidateID checks a session id: non-empty, valid UTF-8, at most MaxIDLength
// bytes. Any other string is accepted: ids are opaque to warmpool.
func ValidateID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%w: the id is empty", ErrInvalidID)
	case len(id) > MaxIDLength:
		return fmt.Errorf("%w: the id is %d bytes, at most %d are allowed", ErrInvalidID, len(id), MaxIDLength)
	case !utf8.ValidString(id):
		return fmt.Errorf("%w: the id is not valid UTF-8", ErrInvalidID)
	}
	return nil
}

// SessionRequest is the body of acquire, release and renew.
type SessionRequest struct {
	ID string `json:"id"`
}

// WarmupRequest is the body of warmup.
type WarmupRequest struct {
	Count int `json:"count"`
}

// Lease is the reply to acquire and renew: which container the session holds
// and until when.
type Lease struct {
	Type string `json:"type"`
	Pool string `json:"pool"`
	// ID is the session id the lease belongs to.
	ID string `json:"id"`
	// Slot is the id of the pool slot (and so of the container) held.
	Slot string `json:"slot"`
	// Endpoint is the container's base URL, e.g. http://127.0.0.1:41234.
	Endpoint string `json:"endpoint"`
	// Node is the id of the node that runs the container.
	Node string `json:"node"`
	// ExpiresAt is when the lease is auto-released unless renewed.
	ExpiresAt time.Time `json:"expires_at"`
	// Cold is true when no warm container was free and the caller waited for
	// one to start.
	Cold bool `json:"cold"`
	// Revision is the lease's fencing token: it grows with every write of the
	// lease. Zero where the lease is not stored durably.
	Revision uint64 `json:"revision,omitempty"`
}

// Released is the reply to release.
type Released struct {
	Type string `json:"type"`
	Pool string `json:"pool"`
	ID   string `json:"id"`
	Slot string `json:"slot"`
	// Replaced is true when the container was destroyed (onRelease: replace)
	// instead of going back to the pool as warm.
	Replaced bool `json:"replaced"`
}

// Stats is the reply to stats: the original library's {warm, acquired, warming,
// total, config}, plus draining and the state of container starts.
type Stats struct {
	Type     string `json:"type"`
	Pool     string `json:"pool"`
	Node     string `json:"node"`
	Warm     int    `json:"warm"`
	Acquired int    `json:"acquired"`
	Warming  int    `json:"warming"`
	Draining int    `json:"draining"`
	Total    int    `json:"total"`
	// Waiting counts acquires waiting for a cold start.
	Waiting int `json:"waiting"`
	// Started counts containers the pool started since it began; Died those
	// that exited on their own after they were ready.
	Started int `json:"started"`
	Died    int `json:"died"`
	// StartFailures counts consecutive failed container starts; zero after a
	// success.
	StartFailures int `json:"start_failures"`
	// BackoffUntil is set while starts are held back after failures.
	BackoffUntil *time.Time `json:"backoff_until,omitempty"`
	// LastError is the most recent start failure, if any.
	LastError string `json:"last_error,omitempty"`
	// Nodes breaks the counts down by node when several nodes run the pool;
	// then the counts above are the sums over the live nodes (other nodes'
	// as of their last heartbeat). Empty for a node alone.
	Nodes []NodeCounts `json:"nodes,omitempty"`
	// Share is this node's part of the pool's warmTarget and maxInstances
	// (Config holds the cluster-wide figures).
	Share SetShare `json:"share"`
	// Paused is true after shutdown: the pool keeps no container warm until
	// the next acquire or warmup.
	Paused bool       `json:"paused"`
	Config PoolConfig `json:"config"`
}

// WarmupReply is the reply to warmup.
type WarmupReply struct {
	Type string `json:"type"`
	Pool string `json:"pool"`
	// Requested is the count asked for; Started how many starts began (fewer
	// when maxInstances caps them).
	Requested int `json:"requested"`
	Started   int `json:"started"`
}

// ShutdownReply is the reply to shutdown.
type ShutdownReply struct {
	Type string `json:"type"`
	Pool string `json:"pool"`
	// Stopped counts containers told to stop; LeasesEnded the leases ended.
	Stopped     int `json:"stopped"`
	LeasesEnded int `json:"leases_ended"`
}

// NodeCounts is one node's counts of a pool in Stats.
type NodeCounts struct {
	Node     string `json:"node"`
	Warm     int    `json:"warm"`
	Acquired int    `json:"acquired"`
	Warming  int    `json:"warming"`
	Draining int    `json:"draining"`
	Total    int    `json:"total"`
}

// DrainReply is the reply to a drain request.
type DrainReply struct {
	Type string `json:"type"`
	Node string `json:"node"`
	// Acquired counts the sessions the node still serves before it leaves.
	Acquired int `json:"acquired"`
}
