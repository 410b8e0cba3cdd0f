//go:build unix && !linux

package process

// waitExited would wait for pid to exit without reaping it; elsewhere than on
// Linux the driver settles for killing the group just after the reap.
func waitExited(int) bool { return false }
