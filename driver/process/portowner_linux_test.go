package process

import (
	"net"
	"syscall"
	"testing"
)

// TestListensIn: the kernel's tables say whose listener a port is.
func TestListensIn(t *testing.T) {
	for network, addr := range map[string]string{"tcp4": "127.0.0.1:0", "tcp6": "[::1]:0"} {
		l, err := net.Listen(network, addr)
		if err != nil {
			t.Logf("%s: %v", network, err)
			continue
		}
		port := l.Addr().(*net.TCPAddr).Port
		if ok, err := listensIn(syscall.Getpgrp(), port); err != nil || !ok {
			t.Errorf("%s: our own listener on %d: %v, %v", network, port, ok, err)
		}
		// The group of the process with pid 1 is not ours.
		if ok, err := listensIn(1, port); err != nil || ok {
			t.Errorf("%s: listener on %d credited to group 1: %v, %v", network, port, ok, err)
		}
		l.Close()
		if ok, err := listensIn(syscall.Getpgrp(), port); err != nil || ok {
			t.Errorf("%s: closed listener on %d: %v, %v", network, port, ok, err)
		}
	}
}
