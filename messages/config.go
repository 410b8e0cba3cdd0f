package messages

import (
	"encoding/json"
	"fmt"
	"time"
)

// Defaults of a pool's settings, as in the original library.
const (
	DefaultWarmTarget      = 1
	DefaultMaxInstances    = 10
	DefaultAcquireTimeout  = 5 * time.Minute
	DefaultRefreshInterval = 30 * time.Second
	DefaultStartTimeout    = 60 * time.Second
	DefaultStopGrace       = 10 * time.Second
)

// Limits on a pool's settings.
const (
	MaxPoolNameLength  = 64
	MaxMaxInstances    = 100000
	MinRefreshInterval = 10 * time.Millisecond
	MinAcquireTimeout  = time.Second
)

// OnRelease policies.
const (
	// OnReleaseReuse returns a released container to the pool as warm.
	OnReleaseReuse = "reuse"
	// OnReleaseReplace destroys a released container and warms a fresh one.
	OnReleaseReplace = "replace"
)

// Driver names.
const (
	DriverProcess = "process"
	DriverDocker  = "docker"
	DriverFake    = "fake"
)

// DefaultDockerPort is the container port a docker template listens on when
// it names none.
const DefaultDockerPort = 8080

// ValidatePoolName checks a pool name: 1 to 64 of [A-Za-z0-9_-]. It runs on
// every request, so it is a loop, not a regexp.
func ValidatePoolName(name string) error {
	ok := name != "" && len(name) <= MaxPoolNameLength
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		ok = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
	}
	if !ok {
		return fmt.Errorf("pool name %q must be 1 to %d characters of [A-Za-z0-9_-]", name, MaxPoolNameLength)
	}
	return nil
}

// Template says how to start one container of a pool.
type Template struct {
	// Driver runs the containers: "process" (default) or "fake" (tests).
	Driver string `json:"driver"`
	// Command is the program and its arguments. The process driver runs it
	// with PORT, WARMPOOL_SLOT and WARMPOOL_POOL in its environment.
	Command []string `json:"command,omitempty"`
	// Env is added to the container's environment.
	Env map[string]string `json:"env,omitempty"`
	// ReadyPath, when set, makes readiness an HTTP GET of this path answering
	// 2xx; when empty a TCP connect to the port is enough.
	ReadyPath string `json:"readyPath,omitempty"`
	// StartTimeout bounds the time from start to ready; a container not ready
	// by then is stopped and counted as a failed start.
	StartTimeout Duration `json:"startTimeout"`
	// StopGrace is the wait between SIGTERM and SIGKILL.
	StopGrace Duration `json:"stopGrace"`
	// Docker holds the docker driver's settings; nil for other drivers.
	Docker *DockerTemplate `json:"docker,omitempty"`
}

// DockerTemplate is how the docker driver runs a pool's containers.
type DockerTemplate struct {
	// Image to run; it must be present on the machine (nothing is pulled).
	Image string `json:"image"`
	// Port the container listens on; published on 127.0.0.1 with a random
	// host port. Default 8080.
	Port int `json:"port"`
	// Command overrides the image's CMD.
	Command []string `json:"command,omitempty"`
	// Env is added to the container's environment.
	Env map[string]string `json:"env,omitempty"`
	// MemoryMB and CPUs limit the container; zero means no limit.
	MemoryMB int     `json:"memoryMB,omitempty"`
	CPUs     float64 `json:"cpus,omitempty"`
	// Network to attach the container to; default the engine's bridge.
	Network string `json:"network,omitempty"`
}

// PoolConfig is one pool's settings. The JSON keys are those of the config file
// and of the original library.
type PoolConfig struct {
	Name string `json:"name"`
	Template
	// WarmTarget is how many containers the pool keeps warm (idle and ready).
	WarmTarget int `json:"warmTarget"`
	// MaxInstances caps the pool's containers in every state.
	MaxInstances int `json:"maxInstances"`
	// AcquireTimeout is a lease's lifetime: a lease not renewed within it is
	// auto-released.
	AcquireTimeout Duration `json:"acquireTimeout"`
	// RefreshInterval is the period of the refresh that reaps expired leases
	// and replenishes the pool.
	RefreshInterval Duration `json:"refreshInterval"`
	// OnRelease is "reuse" (default) or "replace".
	OnRelease string `json:"onRelease"`
}

// WithDefaults returns c with every zero setting replaced by its default.
func (c PoolConfig) WithDefaults() PoolConfig {
	if c.Driver == "" {
		c.Driver = DriverProcess
	}
	if c.MaxInstances == 0 {
		c.MaxInstances = DefaultMaxInstances
	}
	if c.AcquireTimeout == 0 {
		c.AcquireTimeout = Duration(DefaultAcquireTimeout)
	}
	if c.RefreshInterval == 0 {
		c.RefreshInterval = Duration(DefaultRefreshInterval)
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = Duration(DefaultStartTimeout)
	}
	if c.StopGrace == 0 {
		c.StopGrace = Duration(DefaultStopGrace)
	}
	if c.OnRelease == "" {
		c.OnRelease = OnReleaseReuse
	}
	if c.Docker != nil && c.Docker.Port == 0 {
		d := *c.Docker
		d.Port = DefaultDockerPort
		c.Docker = &d
	}
	return c
}

// DefaultPoolConfig is a pool with every default setting; WarmTarget is 1.
func DefaultPoolConfig(name string) PoolConfig {
	return PoolConfig{Name: name, WarmTarget: DefaultWarmTarget}.WithDefaults()
}

// Validate checks every setting, naming the key and the allowed range. Call it
// after WithDefaults.
func (c PoolConfig) Validate() error {
	bad := func(key, format string, args ...any) error {
		return fmt.Errorf("%w: pools.%s.%s: %s", ErrConfigValidation, c.Name, key, fmt.Sprintf(format, args...))
	}
	if err := ValidatePoolName(c.Name); err != nil {
		return fmt.Errorf("%w: %v", ErrConfigValidation, err)
	}
	switch c.Driver {
	case DriverProcess:
		if len(c.Command) == 0 || c.Command[0] == "" {
			return bad("command", "the process driver needs a command")
		}
	case DriverDocker:
		d := c.Docker
		switch {
		case d == nil || d.Image == "":
			return bad("docker.image", "the docker driver needs an image")
		case d.Port < 0 || d.Port > 65535:
			return bad("docker.port", "%d is not a port", d.Port)
		case d.MemoryMB < 0:
			return bad("docker.memoryMB", "%d must not be negative", d.MemoryMB)
		case d.CPUs < 0:
			return bad("docker.cpus", "%g must not be negative", d.CPUs)
		}
	case DriverFake:
	default:
		return bad("driver", "%q is not a driver (use %q or %q)", c.Driver, DriverProcess, DriverDocker)
	}
	if c.MaxInstances < 1 || c.MaxInstances > MaxMaxInstances {
		return bad("maxInstances", "%d is out of range 1..%d", c.MaxInstances, MaxMaxInstances)
	}
	if c.WarmTarget < 0 || c.WarmTarget > c.MaxInstances {
		return bad("warmTarget", "%d is out of range 0..maxInstances (%d)", c.WarmTarget, c.MaxInstances)
	}
	if c.AcquireTimeout.D() < MinAcquireTimeout {
		return bad("acquireTimeout", "%s is below the minimum %s", c.AcquireTimeout, MinAcquireTimeout)
	}
	if c.RefreshInterval.D() < MinRefreshInterval {
		return bad("refreshInterval", "%s is below the minimum %s", c.RefreshInterval, MinRefreshInterval)
	}
	if c.StartTimeout.D() <= 0 {
		return bad("startTimeout", "%s must be positive", c.StartTimeout)
	}
	if c.StopGrace.D() < 0 {
		return bad("stopGrace", "%s must not be negative", c.StopGrace)
	}
	if c.OnRelease != OnReleaseReuse && c.OnRelease != OnReleaseReplace {
		return bad("onRelease", "%q must be %q or %q", c.OnRelease, OnReleaseReuse, OnReleaseReplace)
	}
	if c.ReadyPath != "" && c.ReadyPath[0] != '/' {
		return bad("readyPath", "%q must start with /", c.ReadyPath)
	}
	return nil
}

// Duration is a time.Duration that reads and writes as a Go duration string
// ("30s", "5m") in JSON and YAML.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText writes d as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration like 30s or 5m", string(b))
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes d as a JSON string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration must be a string like \"30s\"")
	}
	return d.UnmarshalText([]byte(s))
}
