package testkit

import (
	"testing"
	"time"
)

// CheckFor calls f every `every` until it returns nil, and fails the test with
// f's last error once total has passed. Tests poll with it instead of sleeping.
func CheckFor(t testing.TB, total, every time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", total, err)
		}
		time.Sleep(every)
	}
}
