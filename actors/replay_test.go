package actors_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/warmpool/warmpool/actors"
	"github.com/warmpool/warmpool/messages"
	"github.com/warmpool/warmpool/testkit"
)

// TestReplayReproducesARecordedRun records a pool through a busy scenario
// (warm and cold starts, sticky acquires, releases, an expiry, a crash, a
// failed write, a shutdown) and replays the log: the same events in the same
// order and the same final state, every time.
func TestReplayReproducesARecordedRun(t *testing.T) {
	var log bytes.Buffer
	rec := actors.NewWriterRecorder(&log)
	r := newRigWith(t, messages.PoolConfig{WarmTarget: 2, MaxInstances: 4, AcquireTimeout: messages.Duration(time.Minute),
		RefreshInterval: messages.Duration(10 * time.Second)}, nil, func(o *actors.PoolOptions) { o.Recorder = rec })
	r.waitStats(2, 0, 0, 0)
	a := r.acquire("a")
	r.acquire("b")
	r.acquire("a")
	r.clock.Advance(5 * time.Second)
	if _, err := r.pool.Release(r.ctx(), "b"); err != nil {
		t.Fatal(err)
	}
	r.acquire("c")
	r.acquire("d") // the pool is at maxInstances now or soon
	r.drv.Kill(a.Slot)
	testkit.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		if _, err := r.pool.Renew(r.ctx(), "a"); !errors.Is(err, messages.ErrUnknownLease) {
			return fmt.Errorf("renew of a dead container's lease: %v", err)
		}
		return nil
	})
	r.leases.FailWith(func(string, actors.LeaseRecord) error { return errors.New("disk full") })
	_, _ = r.pool.Acquire(r.ctx(), "e")
	r.leases.FailWith(nil)
	_, _ = r.pool.Warmup(r.ctx(), 1)
	r.clock.Advance(time.Minute) // leases expire; refreshes reap them
	r.waitStats(4, 0, 0, 0)
	if _, err := r.pool.ShutdownAll(r.ctx()); err != nil {
		t.Fatal(err)
	}
	r.waitStats(0, 0, 0, 0)
	r.acquire("f")
	r.waitStats(2, 1, 0, 0) // settled: no input is on its way while the log is closed
	live, err := r.pool.State(r.ctx())
	if err != nil {
		t.Fatal(err)
	}
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}

	inputs, err := actors.ReadInputs(bytes.NewReader(log.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	var first []byte
	for i := range 100 {
		results, err := actors.Replay(r.ctx(), inputs, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(results) != 1 {
			t.Fatalf("%d results", len(results))
		}
		res := results[0]
		if len(res.Divergences) > 0 {
			t.Fatalf("replay %d diverged:\n%v", i, res.Divergences)
		}
		if i == 0 {
			if got, want := res.Events, r.events.Events(); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("replay emitted %d events; the run %d:\nreplay %v\nrun    %v", len(got), len(want), got, want)
			}
			gotState, _ := json.Marshal(res.Final)
			wantState, _ := json.Marshal(live)
			if !bytes.Equal(gotState, wantState) {
				t.Fatalf("final state differs:\nreplay %s\nlive   %s", gotState, wantState)
			}
		}
		out, _ := json.Marshal(res)
		if first == nil {
			first = out
		} else if !bytes.Equal(out, first) {
			t.Fatalf("replay %d differs from replay 0", i)
		}
	}
}

func TestReplayReportsDivergence(t *testing.T) {
	var log bytes.Buffer
	rec := actors.NewWriterRecorder(&log)
	r := newRigWith(t, messages.PoolConfig{WarmTarget: 1}, nil, func(o *actors.PoolOptions) { o.Recorder = rec })
	r.waitStats(1, 0, 0, 0)
	r.acquire("a")
	r.waitStats(1, 1, 0, 0)
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	inputs, err := actors.ReadInputs(&log)
	if err != nil {
		t.Fatal(err)
	}
	// Tamper with the recording: the acquire is for another id.
	for i := range inputs {
		if inputs[i].Kind == actors.InputAcquire {
			inputs[i].ID = "mallory"
		}
	}
	results, err := actors.Replay(r.ctx(), inputs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(results[0].Divergences) == 0 {
		t.Fatal("a tampered recording replayed without divergence")
	}
}
