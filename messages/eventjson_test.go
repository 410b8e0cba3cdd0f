package messages

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

func FuzzEventAppendJSON(f *testing.F) {
	for _, s := range []string{"", "alice", `q"uote\back`, "ctl\x00\x01\x1f\b\f\n\r\t", "<a&b>", "bad\xff\xfeutf8", "\u2028\u2029", "é中🙂", "\x7f"} {
		f.Add(s, s, uint64(7), int64(1796422537739399596))
	}
	f.Fuzz(func(t *testing.T, session, reason string, seq uint64, nanos int64) {
		e := Event{Type: TypeEvent, Seq: seq, Time: time.Unix(0, nanos).UTC(), Kind: EventLeaseCreated,
			Pool: "web", Node: "node-1", Slot: reason, Session: session, Reason: reason}
		want, err := json.Marshal(e)
		if err != nil {
			t.Skip() // a time json cannot encode
		}
		if got := e.AppendJSON(nil); !bytes.Equal(got, want) {
			t.Fatalf("AppendJSON\n got %s\nwant %s", got, want)
		}
	})
}
