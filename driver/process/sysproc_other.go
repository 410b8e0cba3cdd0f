//go:build unix && !linux

package process

import "syscall"

// sysProcAttr puts the child in its own process group, so that signals reach
// everything it spawns.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
