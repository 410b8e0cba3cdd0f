package process

import "syscall"

// sysProcAttr puts the child in its own process group, so that signals reach
// everything it spawns, and asks the kernel to SIGKILL it if warmpool dies
// without stopping it, so a crashed node leaves no orphans behind.
//
// Pdeathsig fires when the OS thread that forked the child exits, not the
// whole process; the Go runtime keeps its threads, and Start is never called
// from a goroutine locked to a thread it then abandons.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
