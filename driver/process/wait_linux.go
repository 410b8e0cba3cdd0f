package process

import "golang.org/x/sys/unix"

// waitExited blocks until the process pid has exited but does not reap it, so
// its pid, and with it the process group id, cannot be reused until cmd.Wait
// reaps it. That makes it safe to signal the group in between. It reports
// false if it could not wait, and the caller then falls back to cmd.Wait.
func waitExited(pid int) bool {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			return err == nil
		}
	}
}
