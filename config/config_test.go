package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/warmpool/warmpool/messages"
)

// pool is a pool with every default and the given command, the expected
// result for a minimal pool entry.
func pool(name string, command ...string) messages.PoolConfig {
	p := messages.DefaultPoolConfig(name)
	p.Command = command
	return p
}

func TestParseValid(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []messages.PoolConfig
	}{
		{
			name: "minimal pool gets every default",
			yaml: "pools:\n  web:\n    command: [/bin/app]\n",
			want: []messages.PoolConfig{pool("web", "/bin/app")},
		},
		{
			name: "every key",
			yaml: `
pools:
  default:
    driver: process
    command: ["/path/to/app", "--flag"]
    env: {KEY: value, PORT_BASE: 8080, DEBUG: true}
    readyPath: /healthz
    warmTarget: 2
    maxInstances: 12
    acquireTimeout: 5m
    refreshInterval: 30s
    startTimeout: 1m30s
    stopGrace: 250ms
    onRelease: replace
`,
			want: []messages.PoolConfig{{
				Name: "default",
				Template: messages.Template{
					Driver:       messages.DriverProcess,
					Command:      []string{"/path/to/app", "--flag"},
					Env:          map[string]string{"KEY": "value", "PORT_BASE": "8080", "DEBUG": "true"},
					ReadyPath:    "/healthz",
					StartTimeout: messages.Duration(90 * time.Second),
					StopGrace:    messages.Duration(250 * time.Millisecond),
				},
				WarmTarget:      2,
				MaxInstances:    12,
				AcquireTimeout:  messages.Duration(5 * time.Minute),
				RefreshInterval: messages.Duration(30 * time.Second),
				OnRelease:       messages.OnReleaseReplace,
			}},
		},
		{
			name: "explicit warmTarget 0 is kept",
			yaml: "pools:\n  web:\n    command: [/bin/app]\n    warmTarget: 0\n",
			want: []messages.PoolConfig{func() messages.PoolConfig {
				p := pool("web", "/bin/app")
				p.WarmTarget = 0
				return p
			}()},
		},
		{
			name: "command as a string is split on white space",
			yaml: "pools:\n  web:\n    command: \"/bin/app  --port 8080\\t-v\"\n",
			want: []messages.PoolConfig{pool("web", "/bin/app", "--port", "8080", "-v")},
		},
		{
			name: "command as a block list with a number and an empty argument",
			yaml: "pools:\n  web:\n    command:\n      - /bin/app\n      - 42\n      - ''\n",
			want: []messages.PoolConfig{pool("web", "/bin/app", "42", "")},
		},
		{
			name: "pools are sorted by name",
			yaml: "pools:\n  zeta: {command: [z]}\n  alpha: {command: [a]}\n  mid: {command: [m]}\n",
			want: []messages.PoolConfig{pool("alpha", "a"), pool("mid", "m"), pool("zeta", "z")},
		},
		{
			name: "fake driver needs no command",
			yaml: "pools:\n  test:\n    driver: fake\n",
			want: []messages.PoolConfig{func() messages.PoolConfig {
				p := messages.DefaultPoolConfig("test")
				p.Driver = messages.DriverFake
				return p
			}()},
		},
		{
			name: "durations in several forms",
			yaml: "pools:\n  web:\n    command: [a]\n    acquireTimeout: 1h30m\n    refreshInterval: 10ms\n    startTimeout: 2.5s\n    stopGrace: 1us\n",
			want: []messages.PoolConfig{func() messages.PoolConfig {
				p := pool("web", "a")
				p.AcquireTimeout = messages.Duration(90 * time.Minute)
				p.RefreshInterval = messages.Duration(10 * time.Millisecond)
				p.StartTimeout = messages.Duration(2500 * time.Millisecond)
				p.StopGrace = messages.Duration(time.Microsecond)
				return p
			}()},
		},
		{
			name: "warmTarget equal to maxInstances",
			yaml: "pools:\n  web:\n    command: [a]\n    warmTarget: 3\n    maxInstances: 3\n",
			want: []messages.PoolConfig{func() messages.PoolConfig {
				p := pool("web", "a")
				p.WarmTarget, p.MaxInstances = 3, 3
				return p
			}()},
		},
		{
			name: "aliases inside pools",
			yaml: "pools:\n  a: {command: &cmd [/bin/app, -v], env: {K: &v val}}\n  b: {command: *cmd, env: {K: *v}}\n",
			want: []messages.PoolConfig{
				func() messages.PoolConfig {
					p := pool("a", "/bin/app", "-v")
					p.Env = map[string]string{"K": "val"}
					return p
				}(),
				func() messages.PoolConfig {
					p := pool("b", "/bin/app", "-v")
					p.Env = map[string]string{"K": "val"}
					return p
				}(),
			},
		},
		{
			name: "comments, a leading --- and an empty trailing document",
			yaml: "# warmpool\n---\npools:\n  web: # the web app\n    command: [a] # argv\n---\n",
			want: []messages.PoolConfig{pool("web", "a")},
		},
		{
			name: "pool name that yaml reads as a number",
			yaml: "pools:\n  123: {command: [a]}\n",
			want: []messages.PoolConfig{pool("123", "a")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.yaml))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(got.Pools, tt.want) {
				t.Errorf("Parse:\n got %+v\nwant %+v", got.Pools, tt.want)
			}
			for _, p := range got.Pools {
				if err := p.Validate(); err != nil {
					t.Errorf("accepted pool does not validate: %v", err)
				}
			}
		})
	}
}

func TestParseInvalid(t *testing.T) {
	const known = "(known: driver, command, env, readyPath, warmTarget, maxInstances, acquireTimeout, refreshInterval, startTimeout, stopGrace, onRelease, docker)"
	tests := []struct {
		name string
		yaml string
		want string // the message after "invalid configuration: "
	}{
		// The file as a whole.
		{"empty file", "", "the file is empty: at least one pool is required under pools:"},
		{"white space only", "  \n\n", "the file is empty: at least one pool is required under pools:"},
		{"comment only", "# nothing\n", "the file is empty: at least one pool is required under pools:"},
		{"null document", "~\n", "the file is empty: at least one pool is required under pools:"},
		{"top level is a list", "- pools\n", "the file must be a map with the key pools, got a list"},
		{"top level is a string", "pools\n", `the file must be a map with the key pools, got "pools"`},
		{"syntax error", "pools: {web: [a\n", "yaml: line 1: did not find expected ',' or ']'"},
		{"tab indentation", "pools:\n\tweb: {}\n", "yaml: line 2: found character that cannot start any token"},
		{"two documents", "pools: {a: {command: [a]}}\n---\npools: {b: {command: [b]}}\n", "line 3: only one YAML document is allowed"},
		{"unknown top-level key", "pool:\n  web: {command: [a]}\n", `unknown top-level key "pool" (known: pools)`},
		{"duplicate top-level key", "pools: {a: {command: [a]}}\npools: {b: {command: [b]}}\n", `duplicate top-level key "pools" (lines 1 and 2)`},
		{"top-level merge key", "<<: {pools: {}}\n", "top level: line 1: merge keys (<<) are not supported"},

		// pools.
		{"missing pools", "{}\n", "pools: at least one pool is required"},
		{"empty pools", "pools:\n", "pools: at least one pool is required"},
		{"empty pools map", "pools: {}\n", "pools: at least one pool is required"},
		{"pools is a list", "pools:\n  - web\n", "pools: expected a map from pool name to settings, got a list"},
		{"pools is a string", "pools: web\n", `pools: expected a map from pool name to settings, got "web"`},
		{"bad pool name", "pools:\n  my pool: {command: [a]}\n", `pools: pool name "my pool" must be 1 to 64 characters of [A-Za-z0-9_-]`},
		{"empty pool name", "pools:\n  '': {command: [a]}\n", `pools: pool name "" must be 1 to 64 characters of [A-Za-z0-9_-]`},
		{"long pool name", "pools:\n  " + strings.Repeat("p", 65) + ": {command: [a]}\n", "pools: pool name"},
		{"duplicate pool", "pools:\n  web: {command: [a]}\n  web: {command: [b]}\n", "pools.web: duplicate key (lines 2 and 3)"},
		{"pool key is a list", "pools:\n  ? [a, b]\n  : {command: [a]}\n", "pools: line 2: a key must be a string, got a list"},
		{"pool key is null", "pools:\n  ~: {command: [a]}\n", "pools: line 2: a key must be a string, got nothing"},
		{"pool is a list", "pools:\n  web: [a]\n", "pools.web: expected a map of settings, got a list"},
		{"pool is a string", "pools:\n  web: /bin/app\n", `pools.web: expected a map of settings, got "/bin/app"`},
		{"pool with nothing", "pools:\n  web:\n", "pools.web.command: the process driver needs a command"},

		// Keys of a pool.
		{"unknown key", "pools:\n  web: {command: [a], colour: red}\n", "pools.web.colour: unknown key " + known},
		{"misspelt key", "pools:\n  web: {command: [a], warmtarget: 2}\n", "pools.web.warmtarget: unknown key; did you mean warmTarget? " + known},
		{"name is not a key", "pools:\n  web: {command: [a], name: web}\n", "pools.web.name: unknown key " + known},
		{"duplicate key", "pools:\n  web:\n    command: [a]\n    warmTarget: 1\n    warmTarget: 2\n", "pools.web.warmTarget: duplicate key (lines 4 and 5)"},
		{"anchor holder at top level", "base: &b {command: [a]}\n", `unknown top-level key "base" (known: pools)`},
		{"merge key", "pools:\n  a: &b {command: [a]}\n  web:\n    <<: *b\n", "pools.web: line 4: merge keys (<<) are not supported"},

		// driver.
		{"unknown driver", "pools:\n  web: {command: [a], driver: vm}\n", `pools.web.driver: "vm" is not a driver (use "process" or "docker")`},
		{"docker without image", "pools:\n  web: {driver: docker}\n", `pools.web.docker.image: the docker driver needs an image`},
		{"docker unknown key", "pools:\n  web: {driver: docker, docker: {image: x, colour: red}}\n", `pools.web.docker.colour: unknown key (known: image, port, command, env, memoryMB, cpus, network)`},
		{"docker bad port", "pools:\n  web: {driver: docker, docker: {image: x, port: 70000}}\n", `pools.web.docker.port: 70000 is not a port (1..65535)`},
		{"docker bad cpus", "pools:\n  web: {driver: docker, docker: {image: x, cpus: lots}}\n", `pools.web.docker.cpus: "lots" is not a non-negative number of CPUs`},
		{"docker not a map", "pools:\n  web: {driver: docker, docker: x}\n", `pools.web.docker: expected a map of docker settings, got "x"`},
		{"empty driver", "pools:\n  web: {command: [a], driver: ''}\n", `pools.web.driver: must not be empty (leave the key out for the default "process")`},
		{"null driver", "pools:\n  web: {command: [a], driver: }\n", "pools.web.driver: expected a string, got nothing"},
		{"driver is a list", "pools:\n  web: {command: [a], driver: [process]}\n", "pools.web.driver: expected a string, got a list"},

		// command.
		{"no command", "pools:\n  web: {warmTarget: 1}\n", "pools.web.command: the process driver needs a command"},
		{"empty command list", "pools:\n  web: {command: []}\n", "pools.web.command: the process driver needs a command"},
		{"empty command string", "pools:\n  web: {command: '  '}\n", "pools.web.command: the process driver needs a command"},
		{"empty program", "pools:\n  web: {command: ['', -v]}\n", "pools.web.command: the process driver needs a command"},
		{"null command", "pools:\n  web: {command: }\n", "pools.web.command: expected a list of strings or a string, got nothing"},
		{"command is a map", "pools:\n  web: {command: {a: b}}\n", "pools.web.command: expected a list of strings or a string, got a map"},
		{"command element is a list", "pools:\n  web: {command: [a, [b]]}\n", "pools.web.command[1]: expected a string, got a list"},
		{"command element is null", "pools:\n  web: {command: [a, ~]}\n", "pools.web.command[1]: expected a string, got nothing"},
		{"command element is binary", "pools:\n  web: {command: [a, !!binary aGk=]}\n", "pools.web.command[1]: unsupported tag !!binary"},
		{"command with a custom tag", "pools:\n  web: {command: !shell 'a b'}\n", "pools.web.command: unsupported tag !shell"},
		{"command with NUL", "pools:\n  web: {command: [\"a\\0b\"]}\n", "pools.web.command[0]: must not contain a NUL byte"},
		{"self-referencing command", "pools:\n  web: {command: &c [a, *c]}\n", "pools.web.command[1]: expected a string, got a list"},

		// env.
		{"env is a list", "pools:\n  web: {command: [a], env: [A=b]}\n", "pools.web.env: expected a map of NAME: value, got a list"},
		{"env is null", "pools:\n  web: {command: [a], env: }\n", "pools.web.env: expected a map of NAME: value, got nothing"},
		{"env value is a map", "pools:\n  web: {command: [a], env: {A: {b: c}}}\n", "pools.web.env.A: expected a string, got a map"},
		{"env value is null", "pools:\n  web: {command: [a], env: {A: }}\n", "pools.web.env.A: expected a string, got nothing"},
		{"env name with =", "pools:\n  web: {command: [a], env: {'A=B': c}}\n", `pools.web.env."A=B": a variable name must be non-empty and contain no '=' or NUL byte`},
		{"env name empty", "pools:\n  web: {command: [a], env: {'': c}}\n", `pools.web.env."": a variable name must be non-empty and contain no '=' or NUL byte`},
		{"env duplicate", "pools:\n  web:\n    command: [a]\n    env:\n      A: b\n      A: c\n", "pools.web.env.A: duplicate key (lines 5 and 6)"},
		{"env dotted name", "pools:\n  web: {command: [a], env: {a.b: ~}}\n", `pools.web.env."a.b": expected a string, got nothing`},

		// readyPath.
		{"readyPath without slash", "pools:\n  web: {command: [a], readyPath: healthz}\n", `pools.web.readyPath: "healthz" must start with /`},
		{"readyPath is a map", "pools:\n  web: {command: [a], readyPath: {a: b}}\n", "pools.web.readyPath: expected a string, got a map"},

		// Counts.
		{"warmTarget not an integer", "pools:\n  web: {command: [a], warmTarget: abc}\n", `pools.web.warmTarget: "abc" is not an integer`},
		{"warmTarget a float", "pools:\n  web: {command: [a], warmTarget: 1.5}\n", `pools.web.warmTarget: "1.5" is not an integer`},
		{"warmTarget a bool", "pools:\n  web: {command: [a], warmTarget: true}\n", `pools.web.warmTarget: "true" is not an integer`},
		{"warmTarget quoted", "pools:\n  web: {command: [a], warmTarget: '2'}\n", `pools.web.warmTarget: "2" is a quoted string, not an integer (write it without quotes)`},
		{"warmTarget negative", "pools:\n  web: {command: [a], warmTarget: -1}\n", "pools.web.warmTarget: -1 must not be negative"},
		{"warmTarget huge", "pools:\n  web: {command: [a], warmTarget: 99999999999999999999999}\n", "pools.web.warmTarget: 99999999999999999999999 is too large"},
		{"warmTarget huge hex", "pools:\n  web: {command: [a], warmTarget: 0xffffffffffffffff}\n", "pools.web.warmTarget: 0xffffffffffffffff is too large"},
		{"warmTarget hex", "pools:\n  web: {command: [a], warmTarget: 0x10}\n", "pools.web.warmTarget: 16 is out of range 0..maxInstances (10)"},
		{"warmTarget a list", "pools:\n  web: {command: [a], warmTarget: [1]}\n", "pools.web.warmTarget: expected an integer, got a list"},
		{"warmTarget null", "pools:\n  web: {command: [a], warmTarget: }\n", "pools.web.warmTarget: expected an integer, got nothing"},
		{"warmTarget above maxInstances", "pools:\n  web: {command: [a], warmTarget: 5, maxInstances: 4}\n", "pools.web.warmTarget: 5 is out of range 0..maxInstances (4)"},
		{"maxInstances zero", "pools:\n  web: {command: [a], maxInstances: 0}\n", "pools.web.maxInstances: 0 is out of range 1..100000"},
		{"maxInstances too large", "pools:\n  web: {command: [a], maxInstances: 100001}\n", "pools.web.maxInstances: 100001 is out of range 1..100000"},
		{"maxInstances negative", "pools:\n  web: {command: [a], maxInstances: -3}\n", "pools.web.maxInstances: -3 must not be negative"},
		{"maxInstances below default warmTarget", "pools:\n  web: {command: [a], warmTarget: 11}\n", "pools.web.warmTarget: 11 is out of range 0..maxInstances (10)"},

		// Durations.
		{"duration in words", "pools:\n  web: {command: [a], acquireTimeout: 5 minutes}\n", `pools.web.acquireTimeout: "5 minutes" is not a duration like 30s or 5m`},
		{"duration without unit", "pools:\n  web: {command: [a], refreshInterval: 30}\n", `pools.web.refreshInterval: "30" is not a duration like 30s or 5m`},
		{"duration negative", "pools:\n  web: {command: [a], stopGrace: -1s}\n", "pools.web.stopGrace: -1s must not be negative"},
		{"duration zero", "pools:\n  web: {command: [a], startTimeout: 0s}\n", "pools.web.startTimeout: 0s must be positive (leave the key out for the default 1m0s)"},
		{"duration bare zero", "pools:\n  web: {command: [a], stopGrace: 0}\n", "pools.web.stopGrace: 0 must be positive (leave the key out for the default 10s)"},
		{"duration overflow", "pools:\n  web: {command: [a], startTimeout: 9999999999h}\n", `pools.web.startTimeout: "9999999999h" is not a duration like 30s or 5m`},
		{"duration a map", "pools:\n  web: {command: [a], startTimeout: {s: 1}}\n", "pools.web.startTimeout: expected a string, got a map"},
		{"acquireTimeout below minimum", "pools:\n  web: {command: [a], acquireTimeout: 500ms}\n", "pools.web.acquireTimeout: 500ms is below the minimum 1s"},
		{"refreshInterval below minimum", "pools:\n  web: {command: [a], refreshInterval: 1ms}\n", "pools.web.refreshInterval: 1ms is below the minimum 10ms"},

		// onRelease.
		{"onRelease unknown", "pools:\n  web: {command: [a], onRelease: recycle}\n", `pools.web.onRelease: "recycle" must be "reuse" or "replace"`},
		{"onRelease empty", "pools:\n  web: {command: [a], onRelease: \"\"}\n", `pools.web.onRelease: must not be empty (leave the key out for the default "reuse")`},

		// Long values are cut in messages.
		{"long value", "pools:\n  web: {command: [a], warmTarget: " + strings.Repeat("x", 1000) + "}\n", `pools.web.warmTarget: "` + strings.Repeat("x", 64) + `"... is not an integer`},

		// The first bad pool in document order is reported.
		{"second pool bad", "pools:\n  b: {command: [a]}\n  a: {command: [a], warmTarget: x}\n", `pools.a.warmTarget: "x" is not an integer`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.yaml))
			if err == nil {
				t.Fatalf("Parse succeeded with %+v, want error %q", got, tt.want)
			}
			if !errors.Is(err, messages.ErrConfigValidation) {
				t.Errorf("error %q does not wrap ErrConfigValidation", err)
			}
			const prefix = "invalid configuration: "
			msg := err.Error()
			if !strings.HasPrefix(msg, prefix+tt.want) {
				t.Errorf("error\n got %q\nwant %q", msg, prefix+tt.want)
			}
			if got.Pools != nil {
				t.Errorf("Parse returned pools with an error: %+v", got.Pools)
			}
		})
	}
}

func TestParseHugeInput(t *testing.T) {
	inputs := map[string]string{
		"deep lists":    strings.Repeat("[", 1<<20),
		"deep maps":     strings.Repeat("{a: ", 1<<16),
		"deep command":  "pools:\n  web:\n    command: " + strings.Repeat("[", 1<<16) + strings.Repeat("]", 1<<16) + "\n",
		"many pools":    "pools:\n" + strings.Repeat("  - x\n", 1<<16),
		"long string":   "pools: " + strings.Repeat("x", 1<<22) + "\n",
		"alias bomb":    "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n",
		"alias command": "x: &a [*a]\n",
	}
	for name, in := range inputs {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(in))
			if !errors.Is(err, messages.ErrConfigValidation) {
				t.Errorf("Parse: got %v, want an ErrConfigValidation error", err)
			}
			if len(err.Error()) > 1000 {
				t.Errorf("error message is %d bytes long", len(err.Error()))
			}
		})
	}

	// Many valid pools are fine.
	var b strings.Builder
	b.WriteString("pools:\n")
	for i := range 2000 {
		fmt.Fprintf(&b, "  p%04d: {command: [a]}\n", 1999-i)
	}
	f, err := Parse([]byte(b.String()))
	if err != nil {
		t.Fatalf("Parse of 2000 pools: %v", err)
	}
	if len(f.Pools) != 2000 || f.Pools[0].Name != "p0000" || f.Pools[1999].Name != "p1999" {
		t.Errorf("got %d pools, first %q, last %q", len(f.Pools), f.Pools[0].Name, f.Pools[len(f.Pools)-1].Name)
	}
}

func TestDefault(t *testing.T) {
	f := Default("/usr/local/bin/warmpool")
	if len(f.Pools) != 1 {
		t.Fatalf("Default has %d pools, want 1", len(f.Pools))
	}
	want := messages.DefaultPoolConfig("default")
	want.Command = []string{"/usr/local/bin/warmpool", "demo-app", "--startup-delay", "2s"}
	want.ReadyPath = "/healthz"
	if !reflect.DeepEqual(f.Pools[0], want) {
		t.Errorf("Default:\n got %+v\nwant %+v", f.Pools[0], want)
	}
	if err := f.Pools[0].Validate(); err != nil {
		t.Errorf("Default does not validate: %v", err)
	}
	if f.Pools[0].WarmTarget != messages.DefaultWarmTarget {
		t.Errorf("WarmTarget = %d, want %d", f.Pools[0].WarmTarget, messages.DefaultWarmTarget)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()

	t.Run("valid", func(t *testing.T) {
		path := filepath.Join(dir, "ok.yaml")
		writeFile(t, path, "pools:\n  web:\n    command: [/bin/app]\n    warmTarget: 0\n")
		f, err := Load(path)
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		want := pool("web", "/bin/app")
		want.WarmTarget = 0
		if !reflect.DeepEqual(f.Pools, []messages.PoolConfig{want}) {
			t.Errorf("Load: got %+v", f.Pools)
		}
	})

	t.Run("missing file", func(t *testing.T) {
		path := filepath.Join(dir, "missing.yaml")
		_, err := Load(path)
		if !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("Load: got %v, want fs.ErrNotExist", err)
		}
		if !strings.Contains(err.Error(), path) {
			t.Errorf("error %q does not name the file", err)
		}
	})

	t.Run("invalid file", func(t *testing.T) {
		path := filepath.Join(dir, "bad.yaml")
		writeFile(t, path, "pools:\n  web:\n    command: [a]\n    warmTarget: abc\n")
		_, err := Load(path)
		if !errors.Is(err, messages.ErrConfigValidation) {
			t.Fatalf("Load: got %v, want ErrConfigValidation", err)
		}
		want := "config file " + path + `: invalid configuration: pools.web.warmTarget: "abc" is not an integer`
		if err.Error() != want {
			t.Errorf("error\n got %q\nwant %q", err, want)
		}
	})

	t.Run("empty file", func(t *testing.T) {
		path := filepath.Join(dir, "empty.yaml")
		writeFile(t, path, "")
		_, err := Load(path)
		if !errors.Is(err, messages.ErrConfigValidation) || !strings.Contains(err.Error(), path) {
			t.Fatalf("Load: got %v, want ErrConfigValidation naming the file", err)
		}
	})

	t.Run("too large", func(t *testing.T) {
		path := filepath.Join(dir, "large.yaml")
		writeFile(t, path, "# "+strings.Repeat("x", maxFileSize)+"\n")
		_, err := Load(path)
		if !errors.Is(err, messages.ErrConfigValidation) || !strings.Contains(err.Error(), path) {
			t.Fatalf("Load: got %v, want ErrConfigValidation naming the file", err)
		}
	})

	t.Run("directory", func(t *testing.T) {
		_, err := Load(dir)
		if err == nil || !strings.Contains(err.Error(), dir) {
			t.Fatalf("Load of a directory: got %v, want an error naming it", err)
		}
	})
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func FuzzParse(f *testing.F) {
	seeds := []string{
		"",
		"pools:\n",
		"pools:\n  web:\n    command: [/bin/app, -v]\n    warmTarget: 0\n",
		"pools:\n  web: {driver: fake, warmTarget: 3, maxInstances: 3, onRelease: replace}\n",
		"pools:\n  web:\n    command: /bin/app --port 8080\n    env: {A: b, N: 1}\n    readyPath: /healthz\n",
		"pools:\n  a: {command: &c [x]}\n  b: {command: *c, acquireTimeout: 1s, refreshInterval: 10ms, startTimeout: 1ns, stopGrace: 1h}\n",
		"pools:\n  web:\n    <<: {command: [a]}\n",
		"pools: {web: {command: [a], warmTarget: 99999999999999999999}}\n",
		"a: &a [*a]\n",
		"---\npools: {x: {driver: fake}}\n---\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse(data)
		if err != nil {
			if !errors.Is(err, messages.ErrConfigValidation) {
				t.Fatalf("error %q does not wrap ErrConfigValidation", err)
			}
			if file.Pools != nil {
				t.Fatalf("Parse returned pools with an error")
			}
			return
		}
		if len(file.Pools) == 0 {
			t.Fatalf("Parse accepted a file without pools")
		}
		for i, p := range file.Pools {
			if err := p.Validate(); err != nil {
				t.Fatalf("accepted pool does not validate: %v", err)
			}
			if !reflect.DeepEqual(p, p.WithDefaults()) {
				t.Fatalf("accepted pool %q is missing defaults", p.Name)
			}
			if i > 0 && file.Pools[i-1].Name >= p.Name {
				t.Fatalf("pools not sorted and unique: %q then %q", file.Pools[i-1].Name, p.Name)
			}
		}
	})
}

func TestParseDocker(t *testing.T) {
	f, err := Parse([]byte(`pools:
  web:
    driver: docker
    readyPath: /healthz
    docker:
      image: warmpool:dev
      command: [demo-app, --startup-delay, 1s]
      env: {MODE: test}
      memoryMB: 256
      cpus: 0.5
      network: warmpool
`))
	if err != nil {
		t.Fatal(err)
	}
	d := f.Pools[0].Docker
	if d == nil || d.Image != "warmpool:dev" || d.Port != messages.DefaultDockerPort || len(d.Command) != 3 ||
		d.Env["MODE"] != "test" || d.MemoryMB != 256 || d.CPUs != 0.5 || d.Network != "warmpool" {
		t.Fatalf("docker template = %+v", d)
	}
}
