package messages

import "time"

// Requests to a pool actor. Each carries the function that receives the
// answer; the pool calls it exactly once, from its mailbox, so a Reply must
// not block (hand the answer to a channel or a NATS publish).

// Acquire asks for the container of session ID: the one it already holds,
// else a warm one, else a cold start.
type Acquire struct {
	ID string `json:"id"`
	// NoColdStart asks the pool not to start a container for a new session:
	// with nothing warm it answers at once (actors.ErrNoWarm), so that the
	// node can send the session to another node that has a warm one.
	NoColdStart bool `json:"no_cold_start,omitempty"`
	// StickyOnly serves only a session the pool already holds: a new one is
	// answered actors.ErrNoWarm at once (a draining node sends new sessions
	// elsewhere).
	StickyOnly bool `json:"sticky_only,omitempty"`
	// Deadline is when the caller stops waiting; zero: it waits as long as
	// it takes. A new session whose every caller has stopped waiting by the
	// time its lease is written is ended at once: nobody would use it.
	Deadline time.Time          `json:"deadline,omitzero"`
	Reply    func(Lease, error) `json:"-"`
}

// Release ends the lease of session ID.
type Release struct {
	ID    string                `json:"id"`
	Reply func(Released, error) `json:"-"`
}

// Renew extends the lease of session ID.
type Renew struct {
	ID    string             `json:"id"`
	Reply func(Lease, error) `json:"-"`
}

// GetStats asks for the pool's counts.
type GetStats struct {
	Reply func(Stats, error) `json:"-"`
}

// Warmup starts up to Count more containers now.
type Warmup struct {
	Count int                      `json:"count"`
	Reply func(WarmupReply, error) `json:"-"`
}

// ShutdownAll stops every container and ends every lease.
type ShutdownAll struct {
	Reply func(ShutdownReply, error) `json:"-"`
}

// SetShare sets this node's share of a pool's cluster-wide warmTarget and
// maxInstances, computed from the live nodes (see cluster.Share). A pool
// starts with the whole of both, as a node that is alone.
type SetShare struct {
	WarmTarget   int `json:"warm_target"`
	MaxInstances int `json:"max_instances"`
	// Nodes is how many live nodes share the pool.
	Nodes int `json:"nodes"`
}
