package docker

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/client"

	"github.com/warmpool/warmpool/driver"
)

// watchEvents follows the daemon's die and destroy events of managed
// containers and turns those of tracked containers into exit notices, until
// Close or Detach. It closes subscribed once the first stream is open.
//
// A broken stream is reopened with backoff, from the time of the last event
// seen (the daemon replays its recent events), and every (re)opening is
// followed by an inspection of the tracked containers: an exit in a gap is
// noticed either way.
func (d *Driver) watchEvents(subscribed chan<- struct{}) {
	defer d.bg.Done()
	ctx := d.bgCtx
	filters := make(client.Filters).
		Add("type", string(events.ContainerEventType)).
		Add("label", LabelManaged+"=true").
		Add("event", string(events.ActionDie), string(events.ActionDestroy))
	var since string
	var backoff time.Duration
	for {
		opened := time.Now()
		sctx, cancel := context.WithCancel(ctx)
		d.mu.Lock()
		d.breakEvents = cancel
		d.mu.Unlock()
		// Events returns once the daemon has answered the request (or it
		// failed); errors come on res.Err.
		res := d.cli.Events(sctx, client.EventsListOptions{Since: since, Filters: filters})
		if subscribed != nil {
			close(subscribed)
			subscribed = nil
		}
		d.reconcile(sctx)
		err := d.consume(sctx, res, &since)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if time.Since(opened) > 10*eventsBackoffMax {
			backoff = 0
		}
		backoff = min(max(2*backoff, time.Duration(d.minBackoff.Load())), eventsBackoffMax)
		d.log.Warn("docker event stream broke; reopening it", "err", err, "after", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
	}
}

// consume handles the events of one stream until it ends, and returns why.
// since is kept at the daemon's time of the last event, for a reopening.
func (d *Driver) consume(ctx context.Context, res client.EventsResult, since *string) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-res.Err:
			return err
		case m := <-res.Messages:
			if m.TimeNano > 0 {
				*since = fmt.Sprintf("%d.%09d", m.TimeNano/1e9, m.TimeNano%1e9)
			}
			c := d.lookup(m.Actor.ID)
			if c == nil {
				continue
			}
			code := -1
			if s, ok := m.Actor.Attributes["exitCode"]; ok {
				if n, err := strconv.Atoi(s); err == nil {
					code = n
				}
			}
			switch m.Action {
			case events.ActionDie:
				d.noteExit(c, code)
			case events.ActionDestroy:
				d.noteGone(c, code)
			}
		}
	}
}

// reconcile inspects every tracked container that has not exited, for the
// exits that no event told.
func (d *Driver) reconcile(ctx context.Context) {
	d.mu.Lock()
	ctrs := slices.Collect(maps.Values(d.ctrs))
	d.mu.Unlock()
	for _, c := range ctrs {
		if ctx.Err() != nil {
			return
		}
		if !c.exited() && !c.noting.Load() {
			d.check(ctx, c)
		}
	}
}

// check inspects c and notes its exit if it no longer runs.
func (d *Driver) check(ctx context.Context, c *ctr) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	insp, err := d.cli.ContainerInspect(ctx, c.id, client.ContainerInspectOptions{})
	switch {
	case cerrdefs.IsNotFound(err):
		d.noteGone(c, -1)
	case err != nil:
		c.log.Debug("cannot inspect the container", "err", err)
	case insp.Container.State != nil && !insp.Container.State.Running:
		d.noteExit(c, -1)
	}
}

// noteExit describes c's exit (status and last log lines) in the
// background and then marks c exited; code is the exit status an event
// told, or -1. Only the first notice for c does anything.
func (d *Driver) noteExit(c *ctr, code int) {
	if c.exited() || !c.noting.CompareAndSwap(false, true) {
		return
	}
	d.mu.Lock()
	if d.closed {
		// Close finishes what it stops; Detach forgets everything.
		d.mu.Unlock()
		c.noting.Store(false)
		return
	}
	d.bg.Add(1)
	d.mu.Unlock()
	go func() {
		defer d.bg.Done()
		ctx, cancel := context.WithTimeout(d.bgCtx, apiTimeout)
		defer cancel()
		e := d.describeExit(ctx, c, code, true)
		if e.Code == -2 {
			// A stale event: the container runs, started when c says.
			c.noting.Store(false)
			return
		}
		c.finish(e)
		// Debug: the pool logs an unexpected exit, with its reason, as a warning.
		c.log.Debug("container exited", "code", e.Code)
	}()
}

// noteGone marks c exited because it was removed (by someone else: the
// driver's own removals finish c themselves). An exit notice in flight
// describes it instead.
func (d *Driver) noteGone(c *ctr, code int) {
	if c.exited() || !c.noting.CompareAndSwap(false, true) {
		return
	}
	reason := "was removed"
	if code >= 0 {
		reason = fmt.Sprintf("exited with status %d and was removed", code)
	}
	c.finish(driver.Exit{Code: code, Reason: reason})
	c.log.Debug("container removed by someone else")
}

// describeExit inspects c after its exit and returns its status and, if
// withLogs, its last log lines. code is the status an event told, or -1. It
// returns Code -2 if c turns out to run still, since its StartID: an event
// of an earlier run that a reopened stream replayed.
func (d *Driver) describeExit(ctx context.Context, c *ctr, code int, withLogs bool) driver.Exit {
	insp, err := d.cli.ContainerInspect(ctx, c.id, client.ContainerInspectOptions{})
	var e driver.Exit
	switch st := insp.Container.State; {
	case cerrdefs.IsNotFound(err):
		if code >= 0 {
			return driver.Exit{Code: code, Reason: fmt.Sprintf("exited with status %d and was removed", code)}
		}
		return driver.Exit{Code: -1, Reason: "was removed"}
	case err != nil:
		e = driver.Exit{Code: code, Reason: fmt.Sprintf("exited (cannot inspect it: %v)", err)}
	case st == nil:
		e = driver.Exit{Code: code, Reason: "exited"}
	case st.Running && st.StartedAt == c.getStartID():
		return driver.Exit{Code: -2}
	case st.Running || st.Restarting:
		e = driver.Exit{Code: -1, Reason: "was restarted outside warmpool"}
	default:
		e = driver.Exit{Code: st.ExitCode, Reason: fmt.Sprintf("exited with status %d", st.ExitCode)}
		if st.OOMKilled {
			e.Reason += " (killed for lack of memory)"
		}
		if st.Error != "" {
			e.Reason += ": " + st.Error
		}
	}
	if withLogs {
		e.Reason = withOutput(e.Reason, d.lastLines(ctx, c.id))
	}
	return e
}

// lastLines returns the container's last log lines, stdout and stderr
// interleaved as written, or none if they cannot be read.
func (d *Driver) lastLines(ctx context.Context, id string) []string {
	rc, err := d.cli.ContainerLogs(ctx, id, client.ContainerLogsOptions{
		ShowStdout: true,
		ShowStderr: true,
		Tail:       strconv.Itoa(logLines),
	})
	if err != nil {
		return nil
	}
	defer rc.Close()
	t := &tail{}
	// Without a TTY (the driver never asks for one) the stream is
	// multiplexed: frames of stdout and stderr with headers.
	if _, err := stdcopy.StdCopy(t, t, rc); err != nil {
		d.log.Debug("cannot read the container's logs", "id", shortID(id), "err", err)
	}
	return t.lines()
}

// withOutput appends the last lines of output to an exit reason.
func withOutput(reason string, lines []string) string {
	if len(lines) == 0 {
		return reason
	}
	return reason + "; last output:\n" + strings.Join(lines, "\n")
}

// tail keeps the last logLines lines written to it, each cut at logLineMax.
// It is written from one goroutine.
type tail struct {
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	// Bounded: the daemon sends only the last logLines lines, but a line
	// can be long.
	if limit := 4 * logLines * logLineMax; len(t.buf) > 2*limit {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-limit:]...)
	}
	return len(p), nil
}

func (t *tail) lines() []string {
	var out []string
	for line := range bytes.SplitSeq(t.buf, []byte{'\n'}) {
		line = bytes.TrimRight(line, "\r")
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		s := string(line)
		if len(s) > logLineMax {
			s = strings.ToValidUTF8(s[:logLineMax], "") + " …"
		}
		out = append(out, s)
	}
	if len(out) > logLines {
		out = out[len(out)-logLines:]
	}
	return out
}
