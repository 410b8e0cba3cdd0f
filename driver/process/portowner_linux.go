package process

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// listensIn reports whether a process of process group pgrp holds a socket
// listening on TCP port on this machine. A probe that reaches the port
// proves little on its own: several nodes on one machine each pick free
// ports, and another node's container may have taken this one in the moment
// between the pick and the child's bind; then the child fails to bind, but
// the probe is answered by the other container. So readiness asks the
// kernel whose listener it is.
func listensIn(pgrp, port int) (bool, error) {
	inodes := map[string]bool{}
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		if err := listeningInodes(table, port, inodes); err != nil && !os.IsNotExist(err) {
			return false, err
		}
	}
	if len(inodes) == 0 {
		return false, nil
	}
	pids, err := listPIDs()
	if err != nil {
		return false, err
	}
	for _, pid := range pids {
		st, err := readStat(pid)
		if err != nil || st.pgrp != pgrp || st.gone() {
			continue
		}
		dir := "/proc/" + strconv.Itoa(pid) + "/fd/"
		fds, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			link, err := os.Readlink(dir + fd.Name())
			if err != nil {
				continue
			}
			if inode, ok := strings.CutPrefix(link, "socket:["); ok && inodes[strings.TrimSuffix(inode, "]")] {
				return true, nil
			}
		}
	}
	return false, nil
}

// listeningInodes adds the inodes of the sockets in table (/proc/net/tcp or
// tcp6) that listen on port.
func listeningInodes(table string, port int, into map[string]bool) error {
	f, err := os.Open(table)
	if err != nil {
		return err
	}
	defer f.Close()
	want := fmt.Sprintf(":%04X", port)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for first := true; sc.Scan(); first = false {
		if first {
			continue // the header
		}
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		f := bytes.Fields(sc.Bytes())
		if len(f) < 10 || string(f[3]) != "0A" || !bytes.HasSuffix(f[1], []byte(want)) {
			continue
		}
		into[string(f[9])] = true
	}
	return sc.Err()
}
