// Package driver defines how warmpool starts, probes, watches and stops the
// containers of a pool. A driver is called from goroutines that the slot
// actors start, never from an actor's mailbox, so its calls may block.
//
// Implementations: driver/process (the embedded default: one OS process per
// slot), driver/docker (a container of the local Docker Engine per slot)
// and testkit.FakeDriver (deterministic actor tests).
package driver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/warmpool/warmpool/messages"
)

// ErrUnknownContainer is returned for a Handle the driver did not start (or
// has already forgotten after Stop).
var ErrUnknownContainer = errors.New("unknown container")

// ErrExited is wrapped by Ready when the container exits before it is ready.
var ErrExited = errors.New("container exited")

// ErrNotSame is returned by Adopt when the container at a handle's id is not
// the one the handle describes (it exited and the id was reused, or it
// belongs to another slot).
var ErrNotSame = errors.New("not the same container")

// Spec is what a driver needs to start one container.
type Spec struct {
	Pool     string
	Slot     string
	Node     string
	Template messages.Template
}

// Handle identifies a started container. It is plain data so that it can be
// stored in snapshots and logged.
type Handle struct {
	// ID is the driver's id for the container (the pid for processes).
	ID string `json:"id"`
	// Endpoint is the container's base URL, e.g. http://127.0.0.1:41234.
	Endpoint string `json:"endpoint"`
	// PID and Port are set by drivers that run local processes.
	PID  int `json:"pid,omitempty"`
	Port int `json:"port,omitempty"`
	// StartID tells this container from a later one that got the same ID
	// (a reused pid): the process start time, say. Adopt checks it.
	StartID   string    `json:"start_id,omitempty"`
	StartedAt time.Time `json:"started_at"`
}

// Found is a container a driver found running for a node.
type Found struct {
	Handle Handle `json:"handle"`
	Pool   string `json:"pool"`
	Slot   string `json:"slot"`
	Node   string `json:"node"`
}

// Exit says how a container ended.
type Exit struct {
	// Code is the exit status; -1 when it was killed by a signal or unknown.
	Code int `json:"code"`
	// Reason is a sentence for people: "exited with status 2", "killed by
	// signal 9", plus the last lines of output where the driver has them.
	Reason string `json:"reason"`
}

// Driver runs containers.
type Driver interface {
	// Start creates and starts a container and returns once it runs, before
	// it is ready.
	Start(ctx context.Context, spec Spec) (Handle, error)
	// Ready blocks until the container answers (TCP connect to its port, or
	// an HTTP GET of Template.ReadyPath answering 2xx), the container exits
	// (an error wrapping ErrExited) or ctx ends.
	Ready(ctx context.Context, h Handle) error
	// Wait blocks until the container exits and says how, or until ctx ends.
	Wait(ctx context.Context, h Handle) (Exit, error)
	// Stop asks the container to stop, kills it after grace, and returns once
	// it is gone and its resources are released. Stopping a container that
	// already exited is not an error.
	Stop(ctx context.Context, h Handle, grace time.Duration) error

	// List returns the containers that run for node, whether this driver
	// started them or an earlier run of the node did (one that crashed or
	// left them running on exit). The node reconciles them on start.
	List(ctx context.Context, node string) ([]Found, error)
	// Adopt takes over a container from an earlier run so that Ready, Wait
	// and Stop work on it. It verifies that h still names the same container
	// (ErrNotSame, or ErrUnknownContainer when it is gone).
	Adopt(ctx context.Context, h Handle) error
}

// ProbeHTTP is one readiness probe of a container's readyPath: a GET of url
// that must answer 2xx. The body is read (up to 64 KiB) and discarded, so
// that the client can reuse the connection.
func ProbeHTTP(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}
