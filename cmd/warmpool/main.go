// Command warmpool runs a warmpool node (serve), talks to one (acquire,
// release, renew, stats, warmup, shutdown) and runs the demo app that the
// default pool keeps warm (demo-app). Run `warmpool help` for the list.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/warmpool/warmpool/messages"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3"; when
// empty the module version from the build info is used.
var version = ""

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

// Exit codes.
const (
	exitOK    = 0
	exitFail  = 1 // the command ran and failed
	exitUsage = 2 // the command line is wrong; nothing was attempted
)

// cli is what every subcommand writes to and reads its environment from;
// passing them in rather than using os.* keeps run testable.
type cli struct {
	stdout, stderr io.Writer
	env            func(string) string
}

type command struct {
	name    string
	summary string
	run     func(c *cli, args []string) int
}

// commands is in the order `warmpool help` lists them. It is filled in init
// because help reads it: a plain initializer would be a cycle.
var commands []command

func init() {
	commands = []command{
		{"serve", "run a warmpool node: an embedded NATS server (or --nats-url) and the pools of --config", (*cli).serve},
		{"nats", "run a NATS server with JetStream on its own, one server of a NATS cluster", (*cli).natsServer},
		{"acquire", "acquire the container of session ID; prints the lease as JSON", (*cli).acquire},
		{"release", "release the container of session ID", (*cli).release},
		{"renew", "extend the lease of session ID", (*cli).renew},
		{"stats", "print a pool's counts and settings", (*cli).stats},
		{"warmup", "start N more containers in a pool", (*cli).warmup},
		{"shutdown", "stop every container of a pool and end its leases", (*cli).shutdown},
		{"drain", "drain node NODE: no new sessions; it exits when its last lease ends", (*cli).drain},
		{"events", "print a pool's events: the life of a session, a slot, or the pool", (*cli).events},
		{"bench", "measure acquire latency and throughput against a floor measured in the same run", (*cli).bench},
		{"replay", "replay a recording made with serve --record and report any divergence", (*cli).replay},
		{"demo-app", "run the demo HTTP app that the default pool keeps warm", (*cli).demoApp},
		{"healthcheck", "exit 0 if a URL (default the demo app's /healthz on $PORT) answers 2xx", (*cli).healthcheck},
		{"version", "print the version", (*cli).version},
		{"help", "print this help, or a command's: warmpool help COMMAND", (*cli).help},
	}
}

// run is main without os.Exit: it runs the command line args (without the
// program name) and returns the exit code.
func run(args []string, stdout, stderr io.Writer, env func(string) string) int {
	c := &cli{stdout: stdout, stderr: stderr, env: env}
	if len(args) == 0 {
		c.usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help":
		return c.help(args[1:])
	case "-version", "--version":
		return c.version(args[1:])
	}
	if cmd, ok := lookup(args[0]); ok {
		return cmd.run(c, args[1:])
	}
	fmt.Fprintf(stderr, "warmpool: unknown command %q; run `warmpool help` for the list\n", args[0])
	return exitUsage
}

func lookup(name string) (command, bool) {
	for _, cmd := range commands {
		if cmd.name == name {
			return cmd, true
		}
	}
	return command{}, false
}

func (c *cli) usage(w io.Writer) {
	fmt.Fprint(w, `warmpool keeps containers warm and hands them out by session id over NATS.

Usage:
  warmpool COMMAND [flags] [args]

Commands:
`)
	width := 0
	for _, cmd := range commands {
		width = max(width, len(cmd.name))
	}
	for _, cmd := range commands {
		fmt.Fprintf(w, "  %-*s %s\n", width, cmd.name, cmd.summary)
	}
	fmt.Fprint(w, `
Flags may come before or after the arguments; use -- before an argument that
starts with a dash. The client commands (acquire ... shutdown) connect to
--nats-url, else $NATS_URL, else `+defaultNATSURL+`.

Run 'warmpool help COMMAND' for a command's flags.
`)
}

func (c *cli) help(args []string) int {
	switch len(args) {
	case 0:
		c.usage(c.stdout)
		return exitOK
	case 1:
		cmd, ok := lookup(args[0])
		if !ok {
			fmt.Fprintf(c.stderr, "warmpool help: unknown command %q\n", args[0])
			return exitUsage
		}
		if cmd.name == "help" || cmd.name == "version" {
			c.usage(c.stdout)
			return exitOK
		}
		// Every command prints its usage on -h to its stderr; help is asked
		// for, so it goes to stdout instead.
		return cmd.run(&cli{stdout: c.stdout, stderr: c.stdout, env: c.env}, []string{"-h"})
	default:
		fmt.Fprintln(c.stderr, "warmpool help: too many arguments; usage: warmpool help [COMMAND]")
		return exitUsage
	}
}

func (c *cli) version(args []string) int {
	if len(args) != 0 {
		fmt.Fprintln(c.stderr, "warmpool version: takes no arguments")
		return exitUsage
	}
	fmt.Fprintf(c.stdout, "warmpool %s (API %s, service %s %s, %s)\n",
		versionString(), messages.SubjectPrefix, messages.ServiceName, messages.ServiceVersion, runtime.Version())
	return exitOK
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// newFlagSet returns a FlagSet whose errors and -h usage go to c.stderr, with
// a usage text that shows the positional arguments.
func (c *cli) newFlagSet(name, argsUsage, summary string) *flag.FlagSet {
	fs := flag.NewFlagSet("warmpool "+name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	fs.Usage = func() {
		line := "warmpool " + name + " [flags]"
		if argsUsage != "" {
			line += " " + argsUsage
		}
		fmt.Fprintf(fs.Output(), "Usage:\n  %s\n\n%s\n\nFlags:\n", line, summary)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags that may come before, between or after the positional
// arguments (flag.Parse alone stops at the first positional one) and checks
// that there are between minArgs and maxArgs of them. When the command line
// is wrong it has printed why and returns ok == false with the exit code.
func (c *cli) parse(fs *flag.FlagSet, args []string, minArgs, maxArgs int) (positional []string, code int, ok bool) {
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, exitOK, false
			}
			return nil, exitUsage, false // fs has printed the error and usage
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		// Parse consumed a "--" just before rest: everything after it is
		// positional, even what looks like a flag.
		if i := len(args) - len(rest) - 1; i >= 0 && args[i] == "--" {
			positional = append(positional, rest...)
			break
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
	switch {
	case len(positional) < minArgs:
		msg := "missing argument"
		if minArgs-len(positional) > 1 {
			msg += "s"
		}
		return nil, c.usageError(fs, msg), false
	case len(positional) > maxArgs:
		return nil, c.usageError(fs, "too many arguments: "+strings.Join(positional[maxArgs:], " ")), false
	}
	return positional, exitOK, true
}

// usageError reports a wrong command line the way package flag does: the
// problem, then the usage.
func (c *cli) usageError(fs *flag.FlagSet, msg string) int {
	fmt.Fprintf(fs.Output(), "%s: %s\n", fs.Name(), msg)
	fs.Usage()
	return exitUsage
}

// fail reports a failed command.
func (c *cli) fail(err error) int {
	fmt.Fprintf(c.stderr, "warmpool: %v\n", err)
	return exitFail
}
