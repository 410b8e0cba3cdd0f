package clock

import (
	"testing"
	"time"
)

func TestFakeFiresDueTimersInOrder(t *testing.T) {
	c := NewFake(time.Unix(0, 0))
	var got []int
	c.AfterFunc(3*time.Second, func() { got = append(got, 3) })
	c.AfterFunc(time.Second, func() { got = append(got, 1) })
	stopped := c.AfterFunc(2*time.Second, func() { got = append(got, 2) })
	c.AfterFunc(time.Second, func() { got = append(got, 11) }) // same time: creation order
	if !stopped.Stop() || stopped.Stop() {
		t.Fatal("Stop should succeed once")
	}
	c.Advance(time.Second)
	if len(got) != 2 || got[0] != 1 || got[1] != 11 {
		t.Fatalf("after 1s: %v", got)
	}
	c.Advance(5 * time.Second)
	if len(got) != 3 || got[2] != 3 || c.Pending() != 0 {
		t.Fatalf("after 6s: %v, pending %d", got, c.Pending())
	}
	if !c.Now().Equal(time.Unix(6, 0)) {
		t.Fatal(c.Now())
	}
}
