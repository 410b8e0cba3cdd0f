package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/warmpool/warmpool/messages"
)

// Parse parses and validates a config file's contents. Every pool gets its
// defaults (messages.PoolConfig.WithDefaults; warmTarget 1 when the key is
// absent) and must pass messages.PoolConfig.Validate. Every error names the key
// path and wraps messages.ErrConfigValidation.
func Parse(data []byte) (File, error) {
	root, err := decodeDocument(data)
	if err != nil {
		return File{}, err
	}
	if isNull(root) {
		return File{}, invalid("the file is empty: at least one pool is required under pools:")
	}
	if root.Kind != yaml.MappingNode {
		return File{}, invalid("the file must be a map with the key pools, got %s", describe(root))
	}

	var poolsNode *yaml.Node
	err = eachKey("", root, func(key string, val *yaml.Node) error {
		if key != "pools" {
			return invalid("unknown top-level key %s (known: pools)", quote(key))
		}
		poolsNode = val
		return nil
	})
	if err != nil {
		return File{}, err
	}
	pools, err := parsePools(poolsNode)
	if err != nil {
		return File{}, err
	}
	slices.SortFunc(pools, func(a, b messages.PoolConfig) int { return strings.Compare(a.Name, b.Name) })
	return File{Pools: pools}, nil
}

// decodeDocument returns the content of the stream's one document, nil when
// there is none. Further documents are an error unless they are empty.
func decodeDocument(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, invalid("%v", err)
	}
	for {
		var more yaml.Node
		err := dec.Decode(&more)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, invalid("%v", err)
		}
		if c := documentContent(&more); !isNull(c) {
			return nil, invalid("line %d: only one YAML document is allowed", c.Line)
		}
	}
	return documentContent(&doc), nil
}

func documentContent(doc *yaml.Node) *yaml.Node {
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil
	}
	return resolve(doc.Content[0])
}

func parsePools(n *yaml.Node) ([]messages.PoolConfig, error) {
	if isNull(n) {
		return nil, invalid("pools: at least one pool is required")
	}
	if n.Kind != yaml.MappingNode {
		return nil, invalid("pools: expected a map from pool name to settings, got %s", describe(n))
	}
	var pools []messages.PoolConfig
	err := eachKey("pools", n, func(name string, val *yaml.Node) error {
		if err := messages.ValidatePoolName(name); err != nil {
			return invalid("pools: %v", err)
		}
		p, err := parsePool(name, val)
		if err != nil {
			return err
		}
		pools = append(pools, p)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(pools) == 0 {
		return nil, invalid("pools: at least one pool is required")
	}
	return pools, nil
}

// poolBuild is a pool being read; warmTargetSet tells an explicit warmTarget: 0
// from an absent key, which WithDefaults cannot.
type poolBuild struct {
	cfg           messages.PoolConfig
	warmTargetSet bool
}

// poolKey reads one key of a pool's settings into b.
type poolKey struct {
	name string
	set  func(b *poolBuild, path string, n *yaml.Node) error
}

// poolKeys lists a pool's keys in the order of the documentation, which is the
// order the "known:" list of an unknown-key error shows them in.
var poolKeys = []poolKey{
	{"driver", func(b *poolBuild, path string, n *yaml.Node) error {
		s, err := scalarText(path, n)
		if err == nil && s == "" {
			err = invalidAt(path, "must not be empty (leave the key out for the default %q)", messages.DriverProcess)
		}
		b.cfg.Driver = s
		return err
	}},
	{"command", func(b *poolBuild, path string, n *yaml.Node) error {
		var err error
		b.cfg.Command, err = parseCommand(path, n)
		return err
	}},
	{"env", func(b *poolBuild, path string, n *yaml.Node) error {
		var err error
		b.cfg.Env, err = parseEnv(path, n)
		return err
	}},
	{"readyPath", func(b *poolBuild, path string, n *yaml.Node) error {
		var err error
		b.cfg.ReadyPath, err = scalarText(path, n)
		return err
	}},
	{"warmTarget", func(b *poolBuild, path string, n *yaml.Node) error {
		var err error
		b.cfg.WarmTarget, err = parseCount(path, n)
		b.warmTargetSet = true
		return err
	}},
	{"maxInstances", func(b *poolBuild, path string, n *yaml.Node) error {
		v, err := parseCount(path, n)
		if err == nil && v == 0 {
			err = invalidAt(path, "0 is out of range 1..%d", messages.MaxMaxInstances)
		}
		b.cfg.MaxInstances = v
		return err
	}},
	{"acquireTimeout", func(b *poolBuild, path string, n *yaml.Node) error {
		d, err := parseDuration(path, n, messages.DefaultAcquireTimeout)
		b.cfg.AcquireTimeout = d
		return err
	}},
	{"refreshInterval", func(b *poolBuild, path string, n *yaml.Node) error {
		d, err := parseDuration(path, n, messages.DefaultRefreshInterval)
		b.cfg.RefreshInterval = d
		return err
	}},
	{"startTimeout", func(b *poolBuild, path string, n *yaml.Node) error {
		d, err := parseDuration(path, n, messages.DefaultStartTimeout)
		b.cfg.StartTimeout = d
		return err
	}},
	{"stopGrace", func(b *poolBuild, path string, n *yaml.Node) error {
		d, err := parseDuration(path, n, messages.DefaultStopGrace)
		b.cfg.StopGrace = d
		return err
	}},
	{"onRelease", func(b *poolBuild, path string, n *yaml.Node) error {
		s, err := scalarText(path, n)
		if err == nil && s == "" {
			err = invalidAt(path, "must not be empty (leave the key out for the default %q)", messages.OnReleaseReuse)
		}
		b.cfg.OnRelease = s
		return err
	}},
	{"docker", func(b *poolBuild, path string, n *yaml.Node) error {
		var err error
		b.cfg.Docker, err = parseDocker(path, n)
		return err
	}},
}

// dockerKeys are the keys of a pool's docker section.
var dockerKeys = []string{"image", "port", "command", "env", "memoryMB", "cpus", "network"}

// parseDocker reads the docker driver's section of a pool.
func parseDocker(path string, n *yaml.Node) (*messages.DockerTemplate, error) {
	n = resolve(n)
	if n == nil || n.Kind != yaml.MappingNode {
		return nil, invalidAt(path, "expected a map of docker settings, got %s", describe(n))
	}
	d := &messages.DockerTemplate{}
	err := eachKey(path, n, func(key string, val *yaml.Node) error {
		keyPath := joinPath(path, key)
		var err error
		switch key {
		case "image":
			d.Image, err = scalarText(keyPath, val)
		case "port":
			d.Port, err = parseCount(keyPath, val)
			if err == nil && (d.Port < 1 || d.Port > 65535) {
				err = invalidAt(keyPath, "%d is not a port (1..65535)", d.Port)
			}
		case "command":
			d.Command, err = parseCommand(keyPath, val)
		case "env":
			d.Env, err = parseEnv(keyPath, val)
		case "memoryMB":
			d.MemoryMB, err = parseCount(keyPath, val)
		case "cpus":
			var s string
			if s, err = scalarText(keyPath, val); err == nil {
				if d.CPUs, err = strconv.ParseFloat(s, 64); err != nil || d.CPUs < 0 || math.IsInf(d.CPUs, 0) || math.IsNaN(d.CPUs) {
					err = invalidAt(keyPath, "%s is not a non-negative number of CPUs", quote(s))
				}
			}
		case "network":
			d.Network, err = scalarText(keyPath, val)
		default:
			err = invalidAt(keyPath, "unknown key (known: %s)", strings.Join(dockerKeys, ", "))
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return d, nil
}

var knownPoolKeys = func() string {
	names := make([]string, len(poolKeys))
	for i, k := range poolKeys {
		names[i] = k.name
	}
	return strings.Join(names, ", ")
}()

func parsePool(name string, n *yaml.Node) (messages.PoolConfig, error) {
	path := "pools." + name
	b := poolBuild{cfg: messages.PoolConfig{Name: name}}
	// "web:" with nothing after it is a pool with every setting at its
	// default; Validate then names what is missing (the command).
	if !isNull(n) {
		if n.Kind != yaml.MappingNode {
			return messages.PoolConfig{}, invalidAt(path, "expected a map of settings, got %s", describe(n))
		}
		err := eachKey(path, n, func(key string, val *yaml.Node) error {
			keyPath := joinPath(path, key)
			for _, k := range poolKeys {
				if k.name == key {
					return k.set(&b, keyPath, val)
				}
			}
			hint := ""
			for _, k := range poolKeys {
				if strings.EqualFold(k.name, key) {
					hint = fmt.Sprintf("; did you mean %s?", k.name)
				}
			}
			return invalidAt(keyPath, "unknown key%s (known: %s)", hint, knownPoolKeys)
		})
		if err != nil {
			return messages.PoolConfig{}, err
		}
	}
	cfg := b.cfg.WithDefaults()
	if !b.warmTargetSet {
		cfg.WarmTarget = messages.DefaultWarmTarget
	}
	if err := cfg.Validate(); err != nil {
		return messages.PoolConfig{}, err
	}
	return cfg, nil
}

func parseCommand(path string, n *yaml.Node) ([]string, error) {
	n = resolve(n)
	if n != nil && n.Kind == yaml.SequenceNode {
		argv := make([]string, 0, len(n.Content))
		for i, item := range n.Content {
			itemPath := fmt.Sprintf("%s[%d]", path, i)
			s, err := scalarText(itemPath, item)
			if err != nil {
				return nil, err
			}
			if strings.ContainsRune(s, 0) {
				return nil, invalidAt(itemPath, "must not contain a NUL byte")
			}
			argv = append(argv, s)
		}
		return argv, nil
	}
	if n == nil || n.Kind != yaml.ScalarNode || isNull(n) {
		return nil, invalidAt(path, "expected a list of strings or a string, got %s", describe(n))
	}
	s, err := scalarText(path, n)
	if err != nil {
		return nil, err
	}
	if strings.ContainsRune(s, 0) {
		return nil, invalidAt(path, "must not contain a NUL byte")
	}
	return strings.Fields(s), nil
}

func parseEnv(path string, n *yaml.Node) (map[string]string, error) {
	n = resolve(n)
	if n == nil || n.Kind != yaml.MappingNode {
		return nil, invalidAt(path, "expected a map of NAME: value, got %s", describe(n))
	}
	env := make(map[string]string, len(n.Content)/2)
	err := eachKey(path, n, func(key string, val *yaml.Node) error {
		keyPath := joinPath(path, key)
		if key == "" || strings.ContainsAny(key, "=\x00") {
			return invalidAt(keyPath, "a variable name must be non-empty and contain no '=' or NUL byte")
		}
		v, err := scalarText(keyPath, val)
		if err != nil {
			return err
		}
		if strings.ContainsRune(v, 0) {
			return invalidAt(keyPath, "must not contain a NUL byte")
		}
		env[key] = v
		return nil
	})
	if err != nil {
		return nil, err
	}
	return env, nil
}

// parseCount reads a non-negative integer.
func parseCount(path string, n *yaml.Node) (int, error) {
	n = resolve(n)
	if n == nil || n.Kind != yaml.ScalarNode || isNull(n) {
		return 0, invalidAt(path, "expected an integer, got %s", describe(n))
	}
	switch n.ShortTag() {
	case "!!int":
	case "!!float":
		// yaml tags integers too big for int64 as floats.
		if digitsRE.MatchString(n.Value) {
			return 0, invalidAt(path, "%s is too large", short(n.Value))
		}
		return 0, invalidAt(path, "%s is not an integer", quote(n.Value))
	case "!!str":
		if n.Style&(yaml.SingleQuotedStyle|yaml.DoubleQuotedStyle) != 0 && digitsRE.MatchString(n.Value) {
			return 0, invalidAt(path, "%s is a quoted string, not an integer (write it without quotes)", quote(n.Value))
		}
		return 0, invalidAt(path, "%s is not an integer", quote(n.Value))
	default:
		return 0, invalidAt(path, "%s is not an integer", quote(n.Value))
	}
	var v int64
	if err := n.Decode(&v); err != nil {
		// An !!int that does not fit int64, such as 0xffffffffffffffff.
		return 0, invalidAt(path, "%s is too large", short(n.Value))
	}
	if v < 0 {
		return 0, invalidAt(path, "%d must not be negative", v)
	}
	if v > math.MaxInt {
		return 0, invalidAt(path, "%d is too large", v)
	}
	return int(v), nil
}

var digitsRE = regexp.MustCompile(`^[-+]?[0-9_]+$`)

// parseDuration reads a positive Go duration string. Zero is refused because
// WithDefaults would silently turn it into def.
func parseDuration(path string, n *yaml.Node, def time.Duration) (messages.Duration, error) {
	s, err := scalarText(path, n)
	if err != nil {
		return 0, err
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, invalidAt(path, "%s is not a duration like 30s or 5m", quote(s))
	}
	if d < 0 {
		return 0, invalidAt(path, "%s must not be negative", d)
	}
	if d == 0 {
		return 0, invalidAt(path, "%s must be positive (leave the key out for the default %s)", short(s), def)
	}
	return messages.Duration(d), nil
}

// scalarText returns the text of a scalar. Numbers, booleans and timestamps are
// taken as written, so env: {PORT: 8080} and command: [app, 42] work.
func scalarText(path string, n *yaml.Node) (string, error) {
	n = resolve(n)
	if n == nil || n.Kind != yaml.ScalarNode || isNull(n) {
		return "", invalidAt(path, "expected a string, got %s", describe(n))
	}
	switch tag := n.ShortTag(); tag {
	case "!!str", "!!int", "!!float", "!!bool", "!!timestamp":
		return n.Value, nil
	default:
		return "", invalidAt(path, "unsupported tag %s", tag)
	}
}

// eachKey calls fn for each key of the mapping n in document order, after
// checking that the key is a string and not a duplicate. path is n's key path,
// "" at the top level.
func eachKey(path string, n *yaml.Node, fn func(key string, val *yaml.Node) error) error {
	seen := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := resolve(n.Content[i])
		if k == nil || k.Kind != yaml.ScalarNode {
			return invalidAt(orTop(path), "line %d: a key must be a string, got %s", n.Content[i].Line, describe(k))
		}
		if k.ShortTag() == "!!merge" {
			return invalidAt(orTop(path), "line %d: merge keys (<<) are not supported", k.Line)
		}
		if isNull(k) {
			return invalidAt(orTop(path), "line %d: a key must be a string, got %s", k.Line, describe(k))
		}
		key := k.Value
		if first, dup := seen[key]; dup {
			if path == "" {
				return invalid("duplicate top-level key %s (lines %d and %d)", quote(key), first, k.Line)
			}
			return invalidAt(joinPath(path, key), "duplicate key (lines %d and %d)", first, k.Line)
		}
		seen[key] = k.Line
		if err := fn(key, n.Content[i+1]); err != nil {
			return err
		}
	}
	return nil
}

var plainKeyRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// joinPath appends key to path, quoting keys that would make the path
// ambiguous (env names with dots, say).
func joinPath(path, key string) string {
	if !plainKeyRE.MatchString(key) {
		key = quote(key)
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

func orTop(path string) string {
	if path == "" {
		return "top level"
	}
	return path
}

// resolve follows aliases to the node they name. The bound guards against
// alias chains the parser should never produce.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 16; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

// describe names what a node is for "expected X, got Y" messages.
func describe(n *yaml.Node) string {
	switch {
	case isNull(n):
		return "nothing"
	case n.Kind == yaml.MappingNode:
		return "a map"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case n.Kind == yaml.ScalarNode:
		return quote(n.Value)
	default:
		return "an alias"
	}
}

// maxQuoted bounds how much of a user's value an error message repeats.
const maxQuoted = 64

// short cuts s to maxQuoted bytes for an error message.
func short(s string) string {
	if len(s) <= maxQuoted {
		return s
	}
	return strings.ToValidUTF8(s[:maxQuoted], "") + "..."
}

// quote is %q of short(s).
func quote(s string) string {
	if len(s) <= maxQuoted {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%q...", strings.ToValidUTF8(s[:maxQuoted], ""))
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", messages.ErrConfigValidation, fmt.Sprintf(format, args...))
}

func invalidAt(path, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", messages.ErrConfigValidation, path, fmt.Sprintf(format, args...))
}
