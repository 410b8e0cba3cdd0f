package cluster

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestRetry(t *testing.T) {
	tests := []struct {
		name       string
		errs       []error // what each try returns, the last one repeated
		wantTries  int
		wantUnsure bool
		wantErr    error
	}{
		{"first try lands", []error{nil}, 1, false, nil},
		{"refused at once", []error{jetstream.ErrKeyExists}, 1, false, jetstream.ErrKeyExists},
		{"timeout then lands", []error{context.DeadlineExceeded, nil}, 2, true, nil},
		{"no responders, then a leaderless 503, then lands",
			[]error{nats.ErrNoResponders, &jetstream.APIError{Code: 503, ErrorCode: 10008}, nil}, 3, true, nil},
		{"timeout then refused: unsure", []error{nats.ErrTimeout, jetstream.ErrKeyRevisionMismatch}, 2, true, jetstream.ErrKeyRevisionMismatch},
		{"closed connection is final", []error{nats.ErrConnectionClosed}, 1, false, nats.ErrConnectionClosed},
		{"a bad request is final", []error{&jetstream.APIError{Code: 400, ErrorCode: 10003}}, 1, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tries := 0
			unsure, err := retry(context.Background(), func(ctx context.Context) error {
				if _, ok := ctx.Deadline(); !ok {
					t.Error("a try has no deadline of its own")
				}
				e := tt.errs[min(tries, len(tt.errs)-1)]
				tries++
				return e
			})
			if tries != tt.wantTries || unsure != tt.wantUnsure {
				t.Errorf("tries %d unsure %v, want %d %v", tries, unsure, tt.wantTries, tt.wantUnsure)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("err %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr == nil && (err == nil) != (tt.errs[len(tt.errs)-1] == nil) {
				t.Errorf("err %v", err)
			}
		})
	}
}

func TestRetryStopsWithCtx(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	tries := 0
	unsure, err := retry(ctx, func(context.Context) error { tries++; return nats.ErrTimeout })
	if !errors.Is(err, nats.ErrTimeout) || !unsure || tries < 2 {
		t.Fatalf("err %v unsure %v after %d tries", err, unsure, tries)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("retried for %s past a 300ms ctx", d)
	}
}

// TestLandedAndGone: the checks a retry makes after the bucket refused it
// read what the leader holds: the write's own value (its ack was lost), a
// value of another writer, a delete marker, or no message at all.
func TestLandedAndGone(t *testing.T) {
	_, leases, _ := kvStores(t)
	ctx := kvCtx(t)
	r := lease("web", "s1")
	key, val, err := encodeLease(r)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := leases.landed(ctx, key, val); ok {
		t.Fatal("landed before any write")
	}
	if !leases.gone(ctx, key) {
		t.Fatal("a key never written is not gone")
	}
	rev, err := leases.Create(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := leases.landed(ctx, key, val); !ok || got != rev {
		t.Fatalf("landed = %d %v, want %d true", got, ok, rev)
	}
	other := r
	other.Node = "another"
	_, otherVal, _ := encodeLease(other)
	if _, ok := leases.landed(ctx, key, otherVal); ok {
		t.Fatal("another writer's value counts as landed")
	}
	if leases.gone(ctx, key) {
		t.Fatal("a held key is gone")
	}
	if got, ok, err := leases.Lookup(ctx, "web", "s1"); err != nil || !ok || got.Revision != rev || got.Record.Node != r.Node {
		t.Fatalf("Lookup = %+v %v %v", got, ok, err)
	}
	if err := leases.Delete(ctx, "web", "s1", rev); err != nil {
		t.Fatal(err)
	}
	if !leases.gone(ctx, key) {
		t.Fatal("a deleted key is not gone")
	}
	if _, ok := leases.landed(ctx, key, val); ok {
		t.Fatal("a deleted key counts as landed")
	}
	if got, ok, err := leases.Lookup(ctx, "web", "s1"); err != nil || ok {
		t.Fatalf("Lookup of a deleted lease = %+v %v %v", got, ok, err)
	}
}
