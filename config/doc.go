// Package config reads warmpool's YAML config file into validated pool
// settings (messages.PoolConfig).
//
// A config file holds one top-level key, pools, a map from pool name to that
// pool's settings:
//
//	pools:
//	  default:
//	    driver: process          # "process" (default) or "fake"
//	    command: ["/path/to/app", "--flag"]
//	    env: {KEY: value}
//	    readyPath: /healthz      # empty: ready when the port accepts a TCP connect
//	    warmTarget: 2            # default 1; 0 keeps no container warm
//	    maxInstances: 10
//	    acquireTimeout: 5m
//	    refreshInterval: 30s
//	    startTimeout: 60s
//	    stopGrace: 10s
//	    onRelease: reuse         # reuse | replace
//
// Only command is required (for the process driver); every other key may be
// left out to get its default (see messages.DefaultPoolConfig).
//
// command is a list of strings, one per argv element. It may also be written as
// a single string, which is split on white space (strings.Fields) with no shell
// quoting: command: "/bin/app --port 8080" is ["/bin/app", "--port", "8080"].
// Use the list form for arguments that contain spaces.
//
// Durations are Go duration strings ("30s", "5m", "1h30m"). Counts are
// non-negative integers.
//
// An explicit value that would otherwise be silently replaced by its default is
// rejected rather than ignored: a zero duration, maxInstances: 0, or an empty
// driver or onRelease. Leave the key out to get the default. warmTarget: 0 is
// kept: it is a valid setting meaning "keep nothing warm".
//
// The parser walks the YAML node tree by hand so that every error names the full
// key path and the problem, for example
//
//	invalid configuration: pools.web.warmTarget: "abc" is not an integer
//	invalid configuration: pools.web.colour: unknown key (known: driver, command, ...)
//
// and every error wraps messages.ErrConfigValidation. Unknown keys, duplicate
// keys, YAML merge keys (<<), custom tags and more than one YAML document are
// all errors.
package config
