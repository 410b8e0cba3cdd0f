//go:build unix

package process

import "syscall"

// sysProcAttr puts the child in its own process group, so that signals reach
// everything it spawns and List can tell a container's leader (the group
// leader) from its children, which inherit its environment.
//
// There is deliberately no Pdeathsig: a container outlives the node that
// started it, so that a node that crashes, or exits leaving its containers
// running (Detach), finds them again on restart (List, Adopt) instead of
// warming new ones.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
