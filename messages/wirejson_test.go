package messages

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

var wireStrings = []string{"", "alice", `q"uote\back`, "ctl\x00\x1f\n\t", "<a&b>", "bad\xff\xfeutf8", "\u2028\u2029", "é中🙂", "\x7f"}

func FuzzWireAppendJSON(f *testing.F) {
	for _, s := range wireStrings {
		f.Add(s, uint64(7), int64(1796422537739399596), true)
	}
	f.Fuzz(func(t *testing.T, s string, rev uint64, nanos int64, flag bool) {
		at := time.Unix(0, nanos).In(time.FixedZone("x", int(nanos%50000)))
		for _, v := range []interface{ AppendJSON([]byte) []byte }{
			Lease{Type: TypeLease, Pool: s, ID: s, Slot: s, Endpoint: s, Node: s, ExpiresAt: at, Cold: flag, Revision: rev},
			Released{Type: TypeReleased, Pool: s, ID: s, Slot: s, Replaced: flag},
			SessionRequest{ID: s},
		} {
			want, err := json.Marshal(v)
			if err != nil {
				continue // a time encoding/json cannot encode
			}
			if got := v.AppendJSON(nil); !bytes.Equal(got, want) {
				t.Fatalf("%T.AppendJSON\n got %s\nwant %s", v, got, want)
			}
			if got, _ := Encode(v); !bytes.Equal(got, want) {
				t.Fatalf("Encode(%T)\n got %s\nwant %s", v, got, want)
			}
		}
	})
}

// FuzzWireDecode: Decode agrees with encoding/json on every input, from a
// zero value and from one already set.
func FuzzWireDecode(f *testing.F) {
	l := Lease{Type: TypeLease, Pool: "web", ID: "alice", Slot: "s-1", Endpoint: "http://127.0.0.1:41234", Node: "n1",
		ExpiresAt: time.Unix(1796422537, 739399596).UTC(), Cold: true, Revision: 42}
	for _, seed := range [][]byte{
		l.AppendJSON(nil),
		Released{Type: TypeReleased, Pool: "web", ID: "alice", Slot: "s-1", Replaced: true}.AppendJSON(nil),
		SessionRequest{ID: "alice"}.AppendJSON(nil),
		[]byte(` { "id" : "a" , "revision" : 0 , "cold" : false } `),
		[]byte(`{"ID":"a"}`), []byte(`{"id":"a\u0041"}`), []byte(`{"id":null}`), []byte(`{"revision":01}`),
		[]byte(`{"revision":1e3}`), []byte(`{"revision":18446744073709551616}`), []byte(`{"cold":truex}`),
		[]byte(`{"expires_at":"2026-12-05T00:00:00+01:00"}`), []byte(`{"expires_at":"2026-13-05T00:00:00Z"}`),
		[]byte(`{"id":"a"}{}`), []byte(`{"id":"a",}`), []byte(`{}`), []byte(`[]`), []byte(`{"id":"\xff"}`),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		set := l
		for _, pair := range [][2]func() any{
			{func() any { return new(Lease) }, func() any { return new(Lease) }},
			{func() any { v := set; return &v }, func() any { v := set; return &v }},
			{func() any { return new(Released) }, func() any { return new(Released) }},
			{func() any { return &Released{ID: "x", Replaced: true} }, func() any { return &Released{ID: "x", Replaced: true} }},
			{func() any { return new(SessionRequest) }, func() any { return new(SessionRequest) }},
		} {
			got, want := pair[0](), pair[1]()
			gotErr, wantErr := Decode(data, got), json.Unmarshal(data, want)
			if (gotErr == nil) != (wantErr == nil) {
				t.Fatalf("%T of %q: Decode error %v, encoding/json error %v", got, data, gotErr, wantErr)
			}
			if wantErr == nil && !reflect.DeepEqual(got, want) {
				t.Fatalf("%T of %q:\n got %+v\nwant %+v", got, data, got, want)
			}
		}
	})
}

// The node's own encodings take the fast path: the fuzz tests above would
// pass with none.
func TestWireFastPath(t *testing.T) {
	l := Lease{Type: TypeLease, Pool: "web", ID: "é中🙂 session", Slot: "s-1", Endpoint: "http://127.0.0.1:41234", Node: "n1",
		ExpiresAt: time.Date(2026, 12, 5, 1, 2, 3, 456789, time.UTC), Revision: 42}
	var gotL Lease
	if !gotL.decodeFast(l.AppendJSON(nil)) || !reflect.DeepEqual(gotL, l) {
		t.Fatalf("lease: fast path missed or differs: %+v", gotL)
	}
	r := Released{Type: TypeReleased, Pool: "web", ID: "alice", Slot: "s-1", Replaced: true}
	var gotR Released
	if !gotR.decodeFast(r.AppendJSON(nil)) || gotR != r {
		t.Fatalf("released: fast path missed or differs: %+v", gotR)
	}
	s := SessionRequest{ID: "alice"}
	var gotS SessionRequest
	if !gotS.decodeFast(s.AppendJSON(nil)) || gotS != s {
		t.Fatalf("request: fast path missed or differs: %+v", gotS)
	}
	// And what it leaves to encoding/json.
	for _, data := range []string{`{"id":"a\"b"}`, `{"ID":"a"}`, `{"id":"a","extra":1}`, `{"id":null}`, `{"id":"a"} x`} {
		if new(SessionRequest).decodeFast([]byte(data)) {
			t.Errorf("fast path took %s", data)
		}
	}
}

func BenchmarkWireDecodeLease(b *testing.B) {
	data := Lease{Type: TypeLease, Pool: "web", ID: "bench-1234", Slot: "0b7e1c9a-7f0e-4f53-9d8c-2b1f6f9f3a11", Endpoint: "http://127.0.0.1:41234",
		Node: "node-1", ExpiresAt: time.Now(), Revision: 42}.AppendJSON(nil)
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var l Lease
			if err := Decode(data, &l); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var l Lease
			if err := json.Unmarshal(data, &l); err != nil {
				b.Fatal(err)
			}
		}
	})
}
