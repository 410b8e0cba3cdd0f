package actors_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warmpool/warmpool/actors"
	"github.com/warmpool/warmpool/messages"
	"github.com/warmpool/warmpool/testkit"
)

// step is one move of the model-based test.
type step struct {
	Op   string        // acquire, release, renew, kill, tick, restart, warmup, shutdown
	ID   string        // session id
	Pick int           // which live container to kill
	D    time.Duration // tick
	N    int           // warmup count
}

func (s step) String() string {
	switch s.Op {
	case "tick":
		return "tick " + s.D.String()
	case "kill":
		return fmt.Sprintf("kill #%d", s.Pick)
	case "warmup":
		return fmt.Sprintf("warmup %d", s.N)
	case "restart", "shutdown":
		return s.Op
	}
	return s.Op + " " + s.ID
}

var modelConfig = messages.PoolConfig{
	Name: "model", WarmTarget: 2, MaxInstances: 5,
	AcquireTimeout: messages.Duration(30 * time.Second), RefreshInterval: messages.Duration(10 * time.Second),
}

func randomSteps(r *rand.Rand, n int) []step {
	ids := []string{"a", "b", "c", "d", "e", "f", "g"}
	steps := make([]step, n)
	for i := range steps {
		id := ids[r.IntN(len(ids))]
		switch k := r.IntN(100); {
		case k < 35:
			steps[i] = step{Op: "acquire", ID: id}
		case k < 50:
			steps[i] = step{Op: "release", ID: id}
		case k < 58:
			steps[i] = step{Op: "renew", ID: id}
		case k < 68:
			steps[i] = step{Op: "kill", Pick: r.IntN(8)}
		case k < 90:
			steps[i] = step{Op: "tick", D: time.Duration(1+r.IntN(20)) * time.Second}
		case k < 95:
			steps[i] = step{Op: "restart"}
		case k < 98:
			steps[i] = step{Op: "warmup", N: r.IntN(3)}
		default:
			steps[i] = step{Op: "shutdown"}
		}
	}
	return steps
}

// runModel runs steps against a fresh pool and checks the invariants after
// each; it returns the first violation, with the step's index.
func runModel(steps []step) (recording []byte, at int, err error) {
	sc, err := testkit.NewScenario(modelConfig)
	if err != nil {
		return nil, -1, err
	}
	defer sc.Close()
	holder := map[string]string{} // slot -> the session an acquire last gave it to
	for i, s := range steps {
		if err := apply(sc, s, holder); err != nil {
			rec, _ := sc.Recording()
			return rec, i, fmt.Errorf("step %d (%s): %w", i, s, err)
		}
		if err := invariants(sc); err != nil {
			rec, _ := sc.Recording()
			return rec, i, fmt.Errorf("after step %d (%s): %w", i, s, err)
		}
	}
	rec, err := sc.Recording()
	return rec, -1, err
}

func apply(sc *testkit.Scenario, s step, holder map[string]string) error {
	switch s.Op {
	case "acquire":
		l, err := sc.Acquire(s.ID)
		if err != nil {
			if errors.Is(err, messages.ErrExhausted) || errors.Is(err, messages.ErrNotReady) {
				return nil
			}
			return err
		}
		// A lease is never handed to another id: whoever held this slot
		// before must no longer hold it.
		if prev, ok := holder[l.Slot]; ok && prev != s.ID {
			st, err := sc.State()
			if err != nil {
				return err
			}
			for _, ss := range st.Sessions {
				if ss.ID == prev && ss.Slot == l.Slot && ss.Leased {
					return fmt.Errorf("slot %s handed to %s while %s holds it", l.Slot, s.ID, prev)
				}
			}
		}
		holder[l.Slot] = s.ID
	case "release":
		if _, err := sc.Release(s.ID); err != nil && !errors.Is(err, messages.ErrUnknownLease) {
			return err
		}
	case "renew":
		if _, err := sc.Renew(s.ID); err != nil && !errors.Is(err, messages.ErrUnknownLease) {
			return err
		}
	case "kill":
		if live := sc.Driver.LiveSlots(); len(live) > 0 {
			sc.Kill(live[s.Pick%len(live)])
		}
	case "tick":
		sc.Advance(s.D)
	case "restart":
		if err := sc.Settle(); err != nil {
			return err
		}
		if err := sc.Restart(actors.ExitLeave); err != nil {
			return err
		}
	case "warmup":
		if _, err := sc.Warmup(s.N); err != nil {
			return err
		}
	case "shutdown":
		if _, err := sc.ShutdownAll(); err != nil {
			return err
		}
	}
	return sc.Settle()
}

func invariants(sc *testkit.Scenario) error {
	st, err := sc.State()
	if err != nil {
		return err
	}
	s := st.Stats
	if s.Warm+s.Acquired+s.Warming+s.Draining != s.Total || s.Total > modelConfig.MaxInstances {
		return fmt.Errorf("counts warm=%d acquired=%d warming=%d draining=%d total=%d (max %d)",
			s.Warm, s.Acquired, s.Warming, s.Draining, s.Total, modelConfig.MaxInstances)
	}
	if n := sc.Driver.Live(); n != s.Total {
		return fmt.Errorf("%d containers run (%v); the pool counts %d: %+v", n, sc.Driver.LiveSlots(), s.Total, st.Slots)
	}
	bySlot := map[string]actors.SlotState{}
	for _, v := range st.Slots {
		bySlot[v.ID] = v
	}
	held := map[string]string{}
	for _, ss := range st.Sessions {
		if !ss.Leased {
			continue
		}
		if other, ok := held[ss.Slot]; ok {
			return fmt.Errorf("slot %s is held by %s and %s", ss.Slot, other, ss.ID)
		}
		held[ss.Slot] = ss.ID
		if v, ok := bySlot[ss.Slot]; ok && v.Session != ss.ID && v.State == "acquired" {
			return fmt.Errorf("session %s holds slot %s, which names %q", ss.ID, ss.Slot, v.Session)
		}
	}
	// Every expired lease is reaped within one refresh (its delete may be
	// landing: give it a moment of real time, no more).
	deadline := time.Now().Add(time.Second)
	for {
		late := ""
		now := sc.Clock.Now()
		for _, ss := range st.Sessions {
			if ss.Leased && !ss.ExpiresAt.Add(modelConfig.RefreshInterval.D()).After(now) {
				late = ss.ID
			}
		}
		if late == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("session %s's lease expired more than one refresh ago and is still held", late)
		}
		time.Sleep(time.Millisecond)
		if st, err = sc.State(); err != nil {
			return err
		}
	}
}

// shrink removes steps while the run still fails: the failing sequence a
// person has to read is as short as it gets.
func shrink(steps []step) []step {
	for chunk := len(steps) / 2; chunk >= 1; chunk /= 2 {
		for i := 0; i+chunk <= len(steps); {
			candidate := append(append([]step{}, steps[:i]...), steps[i+chunk:]...)
			if _, _, err := runModel(candidate); err != nil {
				steps = candidate
				continue
			}
			i += chunk
		}
	}
	return steps
}

// TestModel runs random sequences of acquires, releases, renewals,
// container deaths, clock ticks, restarts, warmups and shutdowns, checking
// the invariants after every step. A failure is shrunk and its recording
// saved for `warmpool replay`.
func TestModel(t *testing.T) {
	runs, length := 24, 125
	if testing.Short() {
		runs = 4
	}
	total := 0
	for seed := range uint64(runs) {
		steps := randomSteps(rand.New(rand.NewPCG(seed, 7)), length)
		recording, _, err := runModel(steps)
		total += len(steps)
		if err != nil {
			t.Logf("seed %d: %v", seed, err)
			small := shrink(steps)
			if rec, _, serr := runModel(small); serr != nil {
				recording, err = rec, serr
			}
			var lines []string
			for _, s := range small {
				lines = append(lines, s.String())
			}
			path := filepath.Join(t.TempDir(), fmt.Sprintf("model-seed-%d.jsonl", seed))
			if dir := os.Getenv("WARMPOOL_MODEL_FAILURES"); dir != "" {
				path = filepath.Join(dir, fmt.Sprintf("model-seed-%d.jsonl", seed))
			}
			_ = os.WriteFile(path, recording, 0o644)
			t.Fatalf("seed %d: %v\nshrunk to %d steps:\n  %s\nrecording: %s (replay with `warmpool replay`)",
				seed, err, len(small), strings.Join(lines, "\n  "), path)
		}
		results, err := testkit.Replay(strings.NewReader(string(recording)))
		if err != nil {
			t.Fatalf("seed %d: replay: %v", seed, err)
		}
		for _, r := range results {
			if len(r.Divergences) > 0 {
				t.Fatalf("seed %d: the replay diverged:\n%v", seed, r.Divergences)
			}
		}
	}
	t.Logf("%d random steps in %d runs, each replayed", total, runs)
}
