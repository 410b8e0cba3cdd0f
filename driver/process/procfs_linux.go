package process

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// procfsSupported says whether List and Adopt can work here: they find and
// verify processes through /proc.
const procfsSupported = true

// procStat is what the driver reads from /proc/<pid>/stat.
type procStat struct {
	state byte
	ppid  int
	pgrp  int
	// startID is field 22, starttime: clock ticks after boot at which the
	// process started, as a decimal string. With the pid it names one
	// process for the life of the machine.
	startID string
}

// gone reports whether the process has exited (a zombie or dead task): it
// runs nothing, and its pid may be reused once it is reaped.
func (s procStat) gone() bool {
	return s.state == 'Z' || s.state == 'X' || s.state == 'x'
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	return parseStat(b)
}

// parseStat parses /proc/<pid>/stat. The command name is in parentheses and
// may itself hold spaces and ')', so the fields are counted from the last ')'.
func parseStat(b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, errors.New("process: malformed /proc stat: no ')'")
	}
	// Field 3 (state) is the first after the name; starttime is field 22.
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 || len(f[0]) != 1 {
		return procStat{}, fmt.Errorf("process: malformed /proc stat: %d fields after the name", len(f))
	}
	ppid, err1 := strconv.Atoi(f[1])
	pgrp, err2 := strconv.Atoi(f[2])
	_, err3 := strconv.ParseUint(f[19], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return procStat{}, fmt.Errorf("process: malformed /proc stat: %w", err)
	}
	return procStat{state: f[0][0], ppid: ppid, pgrp: pgrp, startID: f[19]}, nil
}

// startIDOf returns pid's start time for Handle.StartID.
func startIDOf(pid int) (string, error) {
	st, err := readStat(pid)
	return st.startID, err
}

// readEnviron returns the environment pid was started with. The kernel
// keeps it as the exec left it; later changes by the process (setenv) do
// not show. A variable set twice keeps its last value, as in os/exec.
func readEnviron(pid int) (map[string]string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return nil, err
	}
	env := make(map[string]string)
	for kv := range bytes.SplitSeq(b, []byte{0}) {
		if k, v, ok := bytes.Cut(kv, []byte{'='}); ok && len(k) > 0 {
			env[string(k)] = string(v)
		}
	}
	return env, nil
}

// procUID returns the effective user of pid: the owner of /proc/<pid>.
func procUID(pid int) (int, error) {
	fi, err := os.Stat("/proc/" + strconv.Itoa(pid))
	if err != nil {
		return 0, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, errors.New("process: no owner in /proc stat")
	}
	return int(st.Uid), nil
}

// listPIDs returns the pids in /proc, in ascending order.
func listPIDs() ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("process: list processes: %w", err)
	}
	pids := make([]int, 0, len(entries))
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid > 0 {
			pids = append(pids, pid)
		}
	}
	// ReadDir sorts by name, and "10" < "9".
	slices.Sort(pids)
	return pids, nil
}

// clockTicks is USER_HZ, the unit of starttime: AT_CLKTCK from the aux
// vector (what sysconf(_SC_CLK_TCK) returns), else 100, its value on every
// architecture Linux runs Go on.
var clockTicks = sync.OnceValue(func() int64 {
	const atClkTck = 17
	const word = strconv.IntSize / 8
	if b, err := os.ReadFile("/proc/self/auxv"); err == nil {
		for i := 0; i+2*word <= len(b); i += 2 * word {
			var key, val uint64
			if word == 8 {
				key, val = binary.NativeEndian.Uint64(b[i:]), binary.NativeEndian.Uint64(b[i+word:])
			} else {
				key, val = uint64(binary.NativeEndian.Uint32(b[i:])), uint64(binary.NativeEndian.Uint32(b[i+word:]))
			}
			if key == atClkTck && val > 0 && val <= uint64(time.Second) {
				return int64(val)
			}
		}
	}
	return 100
})

// startedAt turns a StartID into wall-clock time, or returns zero. It
// measures back from now on the boot-time clock, which starttime counts
// in, so it is as exact as a clock tick and needs no boot time in whole
// seconds.
func startedAt(startID string) time.Time {
	ticks, err := strconv.ParseInt(startID, 10, 64)
	if err != nil {
		return time.Time{}
	}
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return time.Time{}
	}
	start := time.Duration(ticks) * (time.Second / time.Duration(clockTicks()))
	since := time.Duration(ts.Nano()) - start
	if since < 0 {
		return time.Time{}
	}
	// Round(0) drops the monotonic reading: this is a timestamp to store.
	return time.Now().Add(-since).Round(0)
}

// openPidfd returns a pidfd for pid, registered with the runtime's poller
// so that a goroutine can wait for it without holding a thread. It becomes
// readable when the process exits, whoever its parent is, which is what a
// process we did not start needs: we cannot wait(2) for it.
func openPidfd(pid int) (*os.File, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, err
	}
	// os.NewFile puts a non-blocking descriptor into the poller.
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), "pidfd "+strconv.Itoa(pid)), nil
}

// waitPidfd blocks until the pidfd is readable (the process exited); it
// returns an error if f cannot be polled, or when its read deadline passes.
func waitPidfd(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Read(func(fd uintptr) bool { return pollReadable(int(fd)) })
}

// pidfdExited reports whether the process of pidfd f has exited. When it
// cannot tell it says true, since its callers use it to decide whether a
// signal is still safe to send.
func pidfdExited(f *os.File) bool {
	rc, err := f.SyscallConn()
	if err != nil {
		return true
	}
	exited := true
	if err := rc.Control(func(fd uintptr) { exited = pollReadable(int(fd)) }); err != nil {
		return true
	}
	return exited
}

func pollReadable(fd int) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 0)
		if err == unix.EINTR {
			continue
		}
		return err != nil || (n > 0 && fds[0].Revents != 0)
	}
}

// createUnnamed makes the output file with O_TMPFILE, so it never has a
// name to leave behind. It returns nil files and no error where the file
// system does not support that.
func createUnnamed() (*os.File, *os.File, error) {
	dir := os.TempDir()
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EISDIR) || errors.Is(err, unix.EINVAL) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	f := os.NewFile(uintptr(fd), filepath.Join(dir, outputPrefix+"unnamed"))
	// The child's own description appends; only /proc can reopen a file
	// that has no name.
	w, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(fd), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		_ = f.Close()
		return nil, nil, err
	}
	return f, w, nil
}

// adoptOutput reopens the output file of a process this driver's Start
// gave it (see newOutput), so that the adopter can trim it and report its
// last lines. It returns nil if the process's stdout is anything else: a
// file it opened itself is not ours to truncate. Ours is a regular file
// without a name, "/tmp/#<inode>" from O_TMPFILE or a removed
// warmpool-output-*, and both stdout and stderr.
func adoptOutput(pid int) *os.File {
	fd1 := "/proc/" + strconv.Itoa(pid) + "/fd/1"
	link, err := os.Readlink(fd1)
	if err != nil {
		return nil
	}
	name, deleted := strings.CutSuffix(link, " (deleted)")
	base := filepath.Base(name)
	if !deleted || !(strings.HasPrefix(base, "#") || strings.HasPrefix(base, outputPrefix)) {
		return nil
	}
	// Opening the /proc link opens the file itself, named or not.
	f, err := os.OpenFile(fd1, os.O_RDWR, 0)
	if err != nil {
		return nil
	}
	fi, err := f.Stat()
	fi2, err2 := os.Stat("/proc/" + strconv.Itoa(pid) + "/fd/2")
	if err != nil || err2 != nil || !fi.Mode().IsRegular() || !os.SameFile(fi, fi2) {
		_ = f.Close()
		return nil
	}
	return f
}
