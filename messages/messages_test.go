package messages

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestValidateID(t *testing.T) {
	for _, c := range []struct {
		id string
		ok bool
	}{
		{"a", true}, {"user@example.com/☃ x", true}, {strings.Repeat("x", MaxIDLength), true},
		{"", false}, {strings.Repeat("x", MaxIDLength+1), false}, {"\xff", false},
		{strings.Repeat("é", MaxIDLength/2+1), false}, // 258 bytes: the limit is bytes, not runes
	} {
		err := ValidateID(c.id)
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, ErrInvalidID)) {
			t.Errorf("ValidateID(%.20q) = %v; want ok=%v", c.id, err, c.ok)
		}
	}
}

func TestErrorCodesRoundTrip(t *testing.T) {
	for _, c := range []struct {
		err    error
		status int
		code   string
		retry  bool
	}{
		{ErrBadRequest, 400, CodeBadRequest, false},
		{ErrInvalidID, 400, CodeInvalidID, false},
		{ErrUnknownPool, 404, CodeUnknownPool, false},
		{ErrUnknownLease, 404, CodeUnknownLease, false},
		{ErrExhausted, 503, CodeExhausted, true},
		{ErrNotReady, 503, CodeNotReady, true},
		{ErrInternal, 500, CodeInternal, false},
		{errors.New("disk on fire"), 500, CodeInternal, false},
	} {
		wrapped := fmt.Errorf("%w: details", c.err)
		b := NewErrorBody(wrapped)
		if b.Status != c.status || b.Code != c.code || b.Retryable != c.retry || b.Type != TypeError || b.Message == "" {
			t.Errorf("NewErrorBody(%v) = %+v", wrapped, b)
		}
		data, _ := json.Marshal(b)
		back := DecodeError(b.Status, b.Message, data)
		want := c.err
		if c.code == CodeInternal {
			want = ErrInternal
		}
		if !errors.Is(back, want) || back.Error() != b.Message {
			t.Errorf("DecodeError of %s = %v; want it to wrap %v", data, back, want)
		}
	}
	// Without a parsable body the header's status decides.
	if err := DecodeError(503, "busy", []byte("not json")); !errors.Is(err, ErrNotReady) {
		t.Errorf("503 without body: %v", err)
	}
	if err := DecodeError(404, "no", nil); !errors.Is(err, ErrUnknownPool) {
		t.Errorf("404 without body: %v", err)
	}
}

func TestDurationJSON(t *testing.T) {
	var c PoolConfig
	if err := json.Unmarshal([]byte(`{"acquireTimeout":"90s"}`), &c); err != nil || c.AcquireTimeout.D() != 90*time.Second {
		t.Fatalf("unmarshal = %v, %v", c.AcquireTimeout, err)
	}
	if err := json.Unmarshal([]byte(`{"acquireTimeout":90}`), &c); err == nil {
		t.Fatal("a bare number was accepted as a duration")
	}
	if err := json.Unmarshal([]byte(`{"acquireTimeout":"soon"}`), &c); err == nil {
		t.Fatal("a bad duration was accepted")
	}
	out, _ := json.Marshal(DefaultPoolConfig("p"))
	if !strings.Contains(string(out), `"acquireTimeout":"5m0s"`) || !strings.Contains(string(out), `"warmTarget":1`) {
		t.Fatalf("marshal = %s", out)
	}
}

func TestPoolConfigValidate(t *testing.T) {
	good := DefaultPoolConfig("web")
	good.Command = []string{"app"}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for key, mutate := range map[string]func(*PoolConfig){
		"pool name":       func(c *PoolConfig) { c.Name = "bad name" },
		"command":         func(c *PoolConfig) { c.Command = nil },
		"driver":          func(c *PoolConfig) { c.Driver = "vm" },
		"maxInstances":    func(c *PoolConfig) { c.MaxInstances = 0 },
		"warmTarget":      func(c *PoolConfig) { c.WarmTarget = 11 },
		"acquireTimeout":  func(c *PoolConfig) { c.AcquireTimeout = Duration(time.Millisecond) },
		"refreshInterval": func(c *PoolConfig) { c.RefreshInterval = Duration(time.Microsecond) },
		"startTimeout":    func(c *PoolConfig) { c.StartTimeout = -1 },
		"stopGrace":       func(c *PoolConfig) { c.StopGrace = -1 },
		"onRelease":       func(c *PoolConfig) { c.OnRelease = "recycle" },
		"readyPath":       func(c *PoolConfig) { c.ReadyPath = "healthz" },
	} {
		c := good
		mutate(&c)
		err := c.Validate()
		if !errors.Is(err, ErrConfigValidation) || !strings.Contains(err.Error(), key) {
			t.Errorf("%s: Validate() = %v; want an error naming it", key, err)
		}
	}
}

func TestSubject(t *testing.T) {
	if got := Subject("web", VerbAcquire); got != "warmpool.v1.web.acquire" {
		t.Fatal(got)
	}
}

func TestValidatePoolName(t *testing.T) {
	for name, ok := range map[string]bool{
		"web": true, "A-z_09": true, strings.Repeat("p", MaxPoolNameLength): true,
		"": false, strings.Repeat("p", MaxPoolNameLength+1): false, "a.b": false, "a b": false, "*": false, ">": false, "é": false,
	} {
		if err := ValidatePoolName(name); (err == nil) != ok {
			t.Errorf("ValidatePoolName(%q) = %v; want ok=%v", name, err, ok)
		}
	}
}
