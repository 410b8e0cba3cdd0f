package messages

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

var sentinels = []error{ErrBadRequest, ErrInvalidID, ErrUnknownPool, ErrUnknownLease, ErrExhausted, ErrNotReady, ErrInternal}

// FuzzDecodeError feeds arbitrary error replies to the client's decoding:
// it never panics, and the error always wraps exactly one of the sentinels,
// the one its code names; encoding it again for the wire and decoding that
// gives the same sentinel.
func FuzzDecodeError(f *testing.F) {
	for _, c := range []struct {
		status int
		desc   string
		body   string
	}{
		{400, "bad request: the body is empty", `{"type":"warmpool.v1.error","status":400,"code":"bad_request","message":"bad request: x","retryable":false}`},
		{503, "pool exhausted", `{"type":"warmpool.v1.error","status":503,"code":"exhausted","message":"pool exhausted","retryable":true}`},
		{404, "unknown lease", `{"code":"unknown_lease"}`},
		{404, "no such pool", ``},
		{503, "", `not json`},
		{500, "boom", `{"code":""}`},
		{200, "", `{"code":"no_such_code","status":200}`},
		{0, "", `null`},
		{-1, "\xff", `[]`},
		{418, "teapot", `{"code":"not_ready","status":"503"}`},
		{400, "", `{"code":"invalid_id"}{"code":"internal"}`},
		{1 << 30, strings.Repeat("x", 10), `{"code":"exhausted","message":"` + strings.Repeat("é", 5) + `"}`},
		{503, "", `{"code":"not_ready","status":1e400}`},
		{400, "", `{"code":"bad_request"` + strings.Repeat(`,"x":[`, 20)},
	} {
		f.Add(c.status, c.desc, []byte(c.body))
	}
	f.Fuzz(func(t *testing.T, status int, desc string, body []byte) {
		err := DecodeError(status, desc, body)
		if err == nil {
			t.Fatal("DecodeError returned nil")
		}
		_ = err.Error()
		var matched []error
		for _, s := range sentinels {
			if errors.Is(err, s) {
				matched = append(matched, s)
			}
		}
		if len(matched) != 1 {
			t.Fatalf("DecodeError(%d, %q, %q) = %v wraps %v; want exactly one sentinel", status, desc, body, err, matched)
		}
		var we *WireError
		if !errors.As(err, &we) {
			t.Fatalf("DecodeError(%d, %q, %q) = %T, want a *WireError", status, desc, body, err)
		}
		known := false
		for _, c := range codes {
			if c.code == we.Body.Code {
				known = true
				if c.err != matched[0] {
					t.Fatalf("code %q wraps %v, want %v", we.Body.Code, matched[0], c.err)
				}
			}
		}
		if !known && matched[0] != ErrInternal {
			t.Fatalf("unknown code %q wraps %v, want ErrInternal", we.Body.Code, matched[0])
		}
		// The node's encoding of this error decodes to the same sentinel.
		wire := NewErrorBody(err)
		data, merr := json.Marshal(wire)
		if merr != nil {
			t.Fatal(merr)
		}
		if again := DecodeError(wire.Status, wire.Message, data); !errors.Is(again, matched[0]) {
			t.Fatalf("re-encoded as %s, decoded as %v; want %v", data, again, matched[0])
		}
	})
}

// FuzzValidateID checks ValidateID against its definition, and that every id
// it accepts crosses the wire unchanged.
func FuzzValidateID(f *testing.F) {
	for _, id := range []string{
		"alice", "", " ", "a.b.*.>", "user@example.com/☃ x", "\x00", "\xff", "\xed\xa0\x80", "é",
		strings.Repeat("x", MaxIDLength), strings.Repeat("x", MaxIDLength+1), strings.Repeat("é", MaxIDLength/2+1),
		"\u2028\u2029", "\"quoted\"\\", "\ufeffbom",
	} {
		f.Add(id)
	}
	f.Fuzz(func(t *testing.T, id string) {
		err := ValidateID(id)
		want := id != "" && len(id) <= MaxIDLength && utf8.ValidString(id)
		if (err == nil) != want {
			t.Fatalf("ValidateID(%q) = %v; want ok %v", id, err, want)
		}
		if err != nil {
			if !errors.Is(err, ErrInvalidID) || NewErrorBody(err).Code != CodeInvalidID {
				t.Fatalf("ValidateID(%q) = %v; want ErrInvalidID", id, err)
			}
			return
		}
		data, merr := json.Marshal(SessionRequest{ID: id})
		if merr != nil {
			t.Fatal(merr)
		}
		var back SessionRequest
		if uerr := json.Unmarshal(data, &back); uerr != nil || back.ID != id {
			t.Fatalf("id %q crossed the wire as %q (%v)", id, back.ID, uerr)
		}
	})
}
