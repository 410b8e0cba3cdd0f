package messages

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Sentinel errors. Every error warmpool returns for a failed operation wraps one
// of these, on the server and, after decoding the wire error, in the client, so
// callers use errors.Is.
var (
	// ErrBadRequest is returned when a request body is not valid JSON or a field
	// is out of range (a negative warmup count, say).
	ErrBadRequest = errors.New("bad request")
	// ErrInvalidID is returned when a session id is empty, longer than MaxIDLength
	// bytes or not valid UTF-8.
	ErrInvalidID = errors.New("invalid session id")
	// ErrUnknownPool is returned when a request names a pool the node does not run.
	ErrUnknownPool = errors.New("unknown pool")
	// ErrUnknownLease is returned by release and renew when the id holds no lease.
	ErrUnknownLease = errors.New("unknown lease")
	// ErrExhausted is returned by acquire when no container is warm and the pool
	// already runs maxInstances containers. It is retryable.
	ErrExhausted = errors.New("pool exhausted")
	// ErrNotReady is returned by acquire when the container started for a cold
	// start failed or did not get ready in time, or when the pool is shutting
	// down. It is retryable.
	ErrNotReady = errors.New("container not ready")
	// ErrInternal is returned for a failure inside warmpool that the caller did
	// not cause.
	ErrInternal = errors.New("internal error")
	// ErrConfigValidation is wrapped by every configuration error.
	ErrConfigValidation = errors.New("invalid configuration")
)

// Stable error codes. Status is the number sent in the Nats-Service-Error-Code
// header; Code is the string in the JSON error body. Neither ever changes meaning.
const (
	CodeBadRequest   = "bad_request"
	CodeInvalidID    = "invalid_id"
	CodeUnknownPool  = "unknown_pool"
	CodeUnknownLease = "unknown_lease"
	CodeExhausted    = "exhausted"
	CodeNotReady     = "not_ready"
	CodeInternal     = "internal"
)

var codes = []struct {
	err    error
	code   string
	status int
	retry  bool
}{
	{ErrInvalidID, CodeInvalidID, 400, false},
	{ErrBadRequest, CodeBadRequest, 400, false},
	{ErrUnknownPool, CodeUnknownPool, 404, false},
	{ErrUnknownLease, CodeUnknownLease, 404, false},
	{ErrExhausted, CodeExhausted, 503, true},
	{ErrNotReady, CodeNotReady, 503, true},
	{ErrInternal, CodeInternal, 500, false},
}

// ErrorBody is the JSON body of a failed reply. The same status and message
// also travel in the micro error headers.
type ErrorBody struct {
	Type      string `json:"type"`
	Status    int    `json:"status"`
	Code      string `json:"code"`
	Message   string `json:"message"`
	Retryable bool   `json:"retryable"`
}

// TypeError is the type string of an ErrorBody.
const TypeError = "warmpool.v1.error"

// NewErrorBody classifies err into a stable code. An error that wraps none of
// the sentinels is reported as internal.
func NewErrorBody(err error) ErrorBody {
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return ErrorBody{Type: TypeError, Status: c.status, Code: c.code, Message: err.Error(), Retryable: c.retry}
		}
	}
	return ErrorBody{Type: TypeError, Status: 500, Code: CodeInternal, Message: fmt.Sprintf("%s: %v", ErrInternal, err)}
}

// Error turns a wire error back into an error that wraps the matching sentinel.
func (b ErrorBody) Error() error {
	for _, c := range codes {
		if c.code == b.Code {
			return &WireError{Body: b, sentinel: c.err}
		}
	}
	return &WireError{Body: b, sentinel: ErrInternal}
}

// WireError is an error received from a warmpool node.
type WireError struct {
	Body     ErrorBody
	sentinel error
}

func (e *WireError) Error() string { return e.Body.Message }

// Unwrap returns the sentinel matching the error's code.
func (e *WireError) Unwrap() error { return e.sentinel }

// Retryable reports whether the same request may succeed later.
func (e *WireError) Retryable() bool { return e.Body.Retryable }

// DecodeError parses an error reply. status and description come from the micro
// error headers; body may hold an ErrorBody. A body that does not parse still
// yields an error with the header's status.
func DecodeError(status int, description string, body []byte) error {
	var b ErrorBody
	if len(body) > 0 && json.Unmarshal(body, &b) == nil && b.Code != "" {
		return b.Error()
	}
	b = ErrorBody{Type: TypeError, Status: status, Message: description}
	switch status {
	case 400:
		b.Code = CodeBadRequest
	case 404:
		b.Code = CodeUnknownPool
	case 503:
		b.Code, b.Retryable = CodeNotReady, true
	default:
		b.Code = CodeInternal
	}
	return b.Error()
}
