package testkit_test

import (
	"bytes"
	"fmt"
	"time"

	"github.com/warmpool/warmpool/messages"
	"github.com/warmpool/warmpool/testkit"
)

// A scenario written by hand: a pool on a fake clock and the fake driver.
// Its events tell the life of a session, and its recording replays to the
// same events.
func ExampleScenario() {
	sc, err := testkit.NewScenario(messages.PoolConfig{WarmTarget: 1, AcquireTimeout: messages.Duration(time.Minute)})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer sc.Close()
	_ = sc.Settle()

	lease, _ := sc.Acquire("alice")
	again, _ := sc.Acquire("alice")
	fmt.Println("sticky:", again.Slot == lease.Slot)
	sc.Advance(2 * time.Minute) // alice's lease expires; the refresh reaps it
	_ = sc.Settle()
	fmt.Println(sc.Log.Kinds(testkit.Session("alice")))

	recording, _ := sc.Recording()
	results, _ := testkit.Replay(bytes.NewReader(recording))
	fmt.Println("divergences:", len(results[0].Divergences))
	// Output:
	// sticky: true
	// [slot.acquired lease.created lease.renewed lease.expired]
	// divergences: 0
}
