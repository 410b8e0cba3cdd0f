package messages

import (
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"
)

// The hot path (acquire and release, their requests and replies) encodes
// and decodes without reflection. Encode writes what encoding/json writes,
// byte for byte; Decode reads the flat objects warmpool writes directly and
// leaves anything else (escapes, unknown or differently cased keys, nested
// values, null) to encoding/json, so the fast path changes no outcome.

// Encode returns v as JSON, as encoding/json.Marshal would.
func Encode(v any) ([]byte, error) {
	switch v := v.(type) {
	case Lease:
		return v.AppendJSON(make([]byte, 0, 256)), nil
	case Released:
		return v.AppendJSON(make([]byte, 0, 128)), nil
	case SessionRequest:
		return v.AppendJSON(make([]byte, 0, 16+len(v.ID))), nil
	}
	return json.Marshal(v)
}

// Decode parses data into v, as encoding/json.Unmarshal would.
func Decode(data []byte, v any) error {
	if DecodeFast(data, v) {
		return nil
	}
	return json.Unmarshal(data, v)
}

// DecodeFast parses data into v and reports true when v is a hot-path type
// and data one of the flat objects warmpool writes; else it leaves v as it
// was and reports false. Where it reports true, encoding/json would have
// decoded the same.
func DecodeFast(data []byte, v any) bool {
	switch v := v.(type) {
	case *Lease:
		return v.decodeFast(data)
	case *Released:
		return v.decodeFast(data)
	case *SessionRequest:
		return v.decodeFast(data)
	}
	return false
}

// AppendJSON appends l encoded as encoding/json would encode it.
func (l Lease) AppendJSON(b []byte) []byte {
	b = append(b, `{"type":`...)
	b = appendJSONString(b, l.Type)
	b = append(b, `,"pool":`...)
	b = appendJSONString(b, l.Pool)
	b = append(b, `,"id":`...)
	b = appendJSONString(b, l.ID)
	b = append(b, `,"slot":`...)
	b = appendJSONString(b, l.Slot)
	b = append(b, `,"endpoint":`...)
	b = appendJSONString(b, l.Endpoint)
	b = append(b, `,"node":`...)
	b = appendJSONString(b, l.Node)
	b = append(b, `,"expires_at":"`...)
	b = l.ExpiresAt.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","cold":`...)
	b = strconv.AppendBool(b, l.Cold)
	if l.Revision != 0 {
		b = append(b, `,"revision":`...)
		b = strconv.AppendUint(b, l.Revision, 10)
	}
	return append(b, '}')
}

// AppendJSON appends r encoded as encoding/json would encode it.
func (r Released) AppendJSON(b []byte) []byte {
	b = append(b, `{"type":`...)
	b = appendJSONString(b, r.Type)
	b = append(b, `,"pool":`...)
	b = appendJSONString(b, r.Pool)
	b = append(b, `,"id":`...)
	b = appendJSONString(b, r.ID)
	b = append(b, `,"slot":`...)
	b = appendJSONString(b, r.Slot)
	b = append(b, `,"replaced":`...)
	b = strconv.AppendBool(b, r.Replaced)
	return append(b, '}')
}

// AppendJSON appends s encoded as encoding/json would encode it.
func (s SessionRequest) AppendJSON(b []byte) []byte {
	b = append(b, `{"id":`...)
	b = appendJSONString(b, s.ID)
	return append(b, '}')
}

func (l *Lease) decodeFast(data []byte) bool {
	out, r := *l, flatReader{b: data}
	for r.next() {
		var ok bool
		switch string(r.key) {
		case "type":
			ok = r.str(&out.Type)
		case "pool":
			ok = r.str(&out.Pool)
		case "id":
			ok = r.str(&out.ID)
		case "slot":
			ok = r.str(&out.Slot)
		case "endpoint":
			ok = r.str(&out.Endpoint)
		case "node":
			ok = r.str(&out.Node)
		case "expires_at":
			ok = r.time(&out.ExpiresAt)
		case "cold":
			ok = r.boolean(&out.Cold)
		case "revision":
			ok = r.uint(&out.Revision)
		}
		if !ok {
			return false
		}
	}
	if r.complete() {
		*l = out
	}
	return r.complete()
}

func (rel *Released) decodeFast(data []byte) bool {
	out, r := *rel, flatReader{b: data}
	for r.next() {
		var ok bool
		switch string(r.key) {
		case "type":
			ok = r.str(&out.Type)
		case "pool":
			ok = r.str(&out.Pool)
		case "id":
			ok = r.str(&out.ID)
		case "slot":
			ok = r.str(&out.Slot)
		case "replaced":
			ok = r.boolean(&out.Replaced)
		}
		if !ok {
			return false
		}
	}
	if r.complete() {
		*rel = out
	}
	return r.complete()
}

func (s *SessionRequest) decodeFast(data []byte) bool {
	out, r := *s, flatReader{b: data}
	for r.next() {
		if string(r.key) != "id" || !r.str(&out.ID) {
			return false
		}
	}
	if r.complete() {
		*s = out
	}
	return r.complete()
}

// flatReader reads one JSON object of strings, unsigned integers and
// booleans, key by key: next reads up to a key's value, which the caller
// reads with str, uint, boolean or time. Whitespace is allowed around
// tokens. Every method reports false for what it does not read; a decoder
// then leaves the input to encoding/json.
type flatReader struct {
	b     []byte
	i     int
	key   []byte
	state int
}

// States of a flatReader.
const (
	readerStart = iota
	readerInside
	readerClosed
	readerFailed
)

// next reads the next key and its colon; false at the object's end (see
// complete) or on what it does not read.
func (r *flatReader) next() bool {
	switch r.state {
	case readerStart:
		if !r.token('{') {
			r.state = readerFailed
			return false
		}
		r.state = readerInside
		if r.token('}') {
			r.state = readerClosed
			return false
		}
	case readerInside: // after a value
		if r.token('}') {
			r.state = readerClosed
			return false
		}
		if !r.token(',') {
			r.state = readerFailed
			return false
		}
	default:
		return false
	}
	key, ok := r.raw()
	if !ok || !r.token(':') {
		r.state = readerFailed
		return false
	}
	r.space()
	r.key = key
	return true
}

// complete reports whether the object was read to its end, with nothing
// but whitespace after it.
func (r *flatReader) complete() bool { return r.state == readerClosed && r.end() }

func (r *flatReader) space() {
	for r.i < len(r.b) {
		switch r.b[r.i] {
		case ' ', '\t', '\n', '\r':
			r.i++
		default:
			return
		}
	}
}

// token skips whitespace and reads c.
func (r *flatReader) token(c byte) bool {
	r.space()
	if r.i < len(r.b) && r.b[r.i] == c {
		r.i++
		return true
	}
	return false
}

// end reports whether only whitespace is left.
func (r *flatReader) end() bool {
	r.space()
	return r.i == len(r.b)
}

// raw reads a string without escapes (valid UTF-8, no control character)
// and returns its bytes, which share the input's memory.
func (r *flatReader) raw() ([]byte, bool) {
	r.space()
	if r.i >= len(r.b) || r.b[r.i] != '"' {
		return nil, false
	}
	start := r.i + 1
	ascii := true
	for j := start; j < len(r.b); j++ {
		switch c := r.b[j]; {
		case c == '"':
			s := r.b[start:j]
			if !ascii && !utf8.Valid(s) {
				return nil, false
			}
			r.i = j + 1
			return s, true
		case c == '\\' || c < 0x20:
			return nil, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return nil, false
}

func (r *flatReader) str(dst *string) bool {
	s, ok := r.raw()
	if ok {
		*dst = string(s)
	}
	return ok
}

func (r *flatReader) boolean(dst *bool) bool {
	rest := r.b[r.i:]
	switch {
	case len(rest) >= 4 && string(rest[:4]) == "true":
		*dst = true
		r.i += 4
	case len(rest) >= 5 && string(rest[:5]) == "false":
		*dst = false
		r.i += 5
	default:
		return false
	}
	return r.delimited()
}

func (r *flatReader) uint(dst *uint64) bool {
	start := r.i
	for r.i < len(r.b) && r.b[r.i] >= '0' && r.b[r.i] <= '9' {
		r.i++
	}
	digits := r.b[start:r.i]
	// JSON has no leading zeros; a fraction or exponent is no uint.
	if len(digits) == 0 || (digits[0] == '0' && len(digits) > 1) || !r.delimited() {
		return false
	}
	n, err := strconv.ParseUint(string(digits), 10, 64)
	if err != nil {
		return false
	}
	*dst = n
	return true
}

// time reads a string as time.Time's UnmarshalJSON does.
func (r *flatReader) time(dst *time.Time) bool {
	start := r.i
	if _, ok := r.raw(); !ok {
		return false
	}
	var t time.Time
	if t.UnmarshalJSON(r.b[start:r.i]) != nil {
		return false
	}
	*dst = t
	return true
}

// delimited reports whether a literal just read ends where a JSON literal
// must: at whitespace, a comma or the closing brace.
func (r *flatReader) delimited() bool {
	if r.i == len(r.b) {
		return true
	}
	switch r.b[r.i] {
	case ' ', '\t', '\n', '\r', ',', '}':
		return true
	}
	return false
}
