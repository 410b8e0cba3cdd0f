package config

import (
	"fmt"
	"io"
	"os"

	"github.com/warmpool/warmpool/messages"
)

// DefaultPoolName is the name of the one pool in Default.
const DefaultPoolName = "default"

// maxFileSize bounds what Load reads, so that pointing it at a device or a huge
// file fails fast instead of exhausting memory. Real config files are a few KiB.
const maxFileSize = 1 << 20

// File is a parsed and validated config file.
type File struct {
	// Pools holds every pool of the file, sorted by name, each with its
	// defaults applied and validated. It is never empty in a File returned by
	// Parse, Load or Default.
	Pools []messages.PoolConfig `json:"pools"`
}

// Default is the config used when no file is given: one pool named "default"
// that runs self's demo app (self is the path of the running warmpool binary),
// is ready when GET /healthz answers 2xx, and has every other setting at its
// default.
func Default(self string) File {
	p := messages.DefaultPoolConfig(DefaultPoolName)
	p.Command = []string{self, "demo-app", "--startup-delay", "2s"}
	p.ReadyPath = "/healthz"
	return File{Pools: []messages.PoolConfig{p}}
}

// Load reads and parses the config file at path. A file that cannot be read
// gives the os error (errors.Is(err, fs.ErrNotExist) works); a file that does
// not parse or validate gives an error that names the file and wraps
// messages.ErrConfigValidation. Files larger than 1 MiB are rejected.
// Environment variables in the file are expanded first (see Expand).
func Load(path string) (File, error) {
	f, err := os.Open(path)
	if err != nil {
		return File{}, fmt.Errorf("config file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return File{}, fmt.Errorf("config file %s: %w", path, err)
	}
	if len(data) > maxFileSize {
		return File{}, fmt.Errorf("config file %s: %w: larger than %d bytes", path, messages.ErrConfigValidation, maxFileSize)
	}
	if data, err = Expand(data, os.LookupEnv); err != nil {
		return File{}, fmt.Errorf("config file %s: %w", path, err)
	}
	file, err := Parse(data)
	if err != nil {
		return File{}, fmt.Errorf("config file %s: %w", path, err)
	}
	return file, nil
}
