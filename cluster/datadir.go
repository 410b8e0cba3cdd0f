package cluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ErrDataDirInUse is returned by Start, and by LockDataDir, when another
// node, or a reader of its store, holds the data dir: two embedded servers
// on one JetStream store would corrupt it.
var ErrDataDirInUse = errors.New("data dir in use")

// dataDirLockFile is the file in a data dir whose flock says it is in use;
// it holds the pid of the holder, for the error message.
const dataDirLockFile = "lock"

// LockDataDir takes the exclusive lock of a node's data dir, without
// waiting; the error wraps ErrDataDirInUse when another holds it. The lock
// is released by unlock, or by the process's exit.
func LockDataDir(dir string) (unlock func(), err error) {
	path := filepath.Join(dir, dataDirLockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("locking the data dir: %w", err)
	}
	// flock, not fcntl: its locks belong to the open file, so that two
	// nodes in one process exclude each other too.
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			holder := "another process"
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil {
				holder = "process " + strconv.Itoa(pid)
			}
			return nil, fmt.Errorf("%w: %s is held by %s (a running node, or a reader of its store)", ErrDataDirInUse, dir, holder)
		}
		return nil, fmt.Errorf("locking the data dir %s: %w", dir, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() { f.Close() }, nil
}
