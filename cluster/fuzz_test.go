package cluster

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/warmpool/warmpool/actors"
	"github.com/warmpool/warmpool/messages"
)

// FuzzDecodeRequest feeds arbitrary bodies to the node's request decoding,
// as handle does for acquire, release and renew (messages.SessionRequest)
// and for warmup: it never panics, it fails only with ErrBadRequest, and
// what it accepts is a single JSON object and nothing else.
func FuzzDecodeRequest(f *testing.F) {
	for _, seed := range []string{
		`{"id":"alice"}`, `{"count":3}`, ` {"id":"a"} `, "\n{\"id\":\"a\"}\r\n\t",
		`{}`, ``, ` `, "\v", `{`, `}`, `{"id":`, `{"id":"a"} trailing`, `{"id":"a"}{"id":"b"}`,
		`{"id":"a"}}`, `{"id":"a"}]`, `{"id":"a"},`, `null`, ` null `, `true`, `0`, `"id"`, `[]`, `[{"id":"a"}]`,
		`{"id":42}`, `{"id":null}`, `{"count":-1}`, `{"count":1e400}`, `{"count":"two"}`, `{"count":1.5}`,
		`{"id":"a","id":"b"}`, `{"ID":"a"}`, `{"id":"\ud800"}`, "{\"id\":\"\xff\"}", `{"id":"a","extra":[1,{"x":null}]}`,
		`{"a":` + string(bytes.Repeat([]byte("["), 50)),
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var session messages.SessionRequest
		checkDecoded(t, data, decode(data, &session))
		var warmup struct {
			Count *int `json:"count"`
		}
		checkDecoded(t, data, decode(data, &warmup))
	})
}

func checkDecoded(t *testing.T, data []byte, err error) {
	t.Helper()
	if err != nil {
		if !errors.Is(err, messages.ErrBadRequest) {
			t.Fatalf("decode(%q): %v; want ErrBadRequest", data, err)
		}
		return
	}
	body := bytes.Trim(data, " \t\r\n")
	if len(body) == 0 || body[0] != '{' || !json.Valid(body) {
		t.Fatalf("decode(%q) accepted what is not a single JSON object", data)
	}
}

// FuzzDecodeEventBatch feeds arbitrary stream messages to the event reader:
// it never panics, every non-blank line is either an event or an error
// wrapping ErrBadEvent that names the message's sequence, and a batch the
// publisher wrote reads back as the events it holds.
func FuzzDecodeEventBatch(f *testing.F) {
	ev, _ := json.Marshal(messages.Event{Type: messages.TypeEvent, Seq: 1, Kind: messages.EventSlotWarm, Pool: "web", Node: "n1", Slot: "s1", Reason: "line\nbreak"})
	for _, seed := range []string{
		string(ev) + "\n", string(ev) + "\n" + string(ev), "\n\n" + string(ev) + "\r\n", "not json\n" + string(ev),
		`{"type":"warmpool.v2.event"}`, `{}`, `null`, `[]`, `{"type":"warmpool.v1.event","time":"yesterday"}`,
		`{"type":"warmpool.v1.event","seq":-1}`, `{"type":"warmpool.v1.event"} {}`, "\xff\xfe", "",
	} {
		f.Add(uint64(7), []byte(seed))
	}
	f.Fuzz(func(t *testing.T, seq uint64, data []byte) {
		events, errs := decodeEventBatch(seq, data)
		lines := 0
		for _, l := range bytes.Split(data, []byte{'\n'}) {
			if len(bytes.TrimSpace(l)) > 0 {
				lines++
			}
		}
		if len(events)+len(errs) != lines {
			t.Fatalf("%q: %d events and %d errors from %d lines", data, len(events), len(errs), lines)
		}
		for _, e := range events {
			if e.Type != messages.TypeEvent {
				t.Fatalf("%q: event of type %q", data, e.Type)
			}
		}
		want := fmt.Sprintf("stream sequence %d,", seq)
		for _, err := range errs {
			if !errors.Is(err, ErrBadEvent) || !strings.Contains(err.Error(), want) {
				t.Fatalf("%q: error %v; want ErrBadEvent naming %q", data, err, want)
			}
		}
		// What decodes re-encodes to a batch that decodes the same.
		var batch []byte
		for _, e := range events {
			b, err := json.Marshal(e)
			if err != nil {
				t.Fatal(err)
			}
			batch = append(append(batch, b...), '\n')
		}
		again, errs := decodeEventBatch(seq, batch)
		if len(errs) != 0 || len(again) != len(events) {
			t.Fatalf("%q: re-encoded %d events read back as %d, %v", data, len(events), len(again), errs)
		}
		for i := range again {
			if !again[i].Time.Equal(events[i].Time) {
				t.Fatalf("%q: event %d time %v read back as %v", data, i, events[i].Time, again[i].Time)
			}
			again[i].Time = events[i].Time
			if again[i] != events[i] {
				t.Fatalf("%q: event %d %+v read back as %+v", data, i, events[i], again[i])
			}
		}
	})
}

// FuzzLeaseEncoding: the lease hot path's hand-written encodings equal what
// encoding/json and base64 write.
func FuzzLeaseEncoding(f *testing.F) {
	for _, s := range []string{"alice", `q"uote\back`, "ctl\x00\x1f\n", "<a&b>", "bad\xff", "\u2028", "é中🙂", strings.Repeat("x", 61)} {
		f.Add(s, int64(1796422537739399596), "c1")
	}
	f.Fuzz(func(t *testing.T, s string, nanos int64, start string) {
		at := time.Unix(0, nanos).In(time.FixedZone("z", int(nanos%40000)))
		r := actors.LeaseRecord{Version: actors.LeaseSchema, Pool: "web", ID: s, Slot: s, Node: s, Endpoint: s,
			ContainerID: s, StartID: start, CreatedAt: at, ExpiresAt: at.Add(time.Minute)}
		if want, err := json.Marshal(r); err == nil {
			if got := r.AppendJSON(nil); !bytes.Equal(got, want) {
				t.Fatalf("LeaseRecord.AppendJSON\n got %s\nwant %s", got, want)
			}
		}
		if key, err := leaseKey("web", s); err == nil {
			if want := "web." + base64.RawURLEncoding.EncodeToString([]byte(s)); key != want {
				t.Fatalf("leaseKey(%q) = %q, want %q", s, key, want)
			}
		}
	})
}

// FuzzPubAck: an acknowledgement the fast path reads, encoding/json reads
// the same.
func FuzzPubAck(f *testing.F) {
	for _, s := range []string{`{"stream":"KV_x","seq":42}`, `{"stream":"KV_x","seq":042}`, `{"stream":"KV_x","seq":1,"duplicate":true}`,
		`{"stream":"KV_y","seq":7}`, `{"stream":"KV_x","seq":}`, `{"stream":"KV_x","seq":18446744073709551616}`,
		`{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 3"}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		seq, ok := pubAckSeq(data, "KV_x")
		if !ok {
			return
		}
		var ack struct {
			Stream string `json:"stream"`
			Seq    uint64 `json:"seq"`
		}
		if err := json.Unmarshal(data, &ack); err != nil || ack.Stream != "KV_x" || ack.Seq != seq {
			t.Fatalf("pubAckSeq(%q) = %d; encoding/json: %+v, %v", data, seq, ack, err)
		}
	})
}
