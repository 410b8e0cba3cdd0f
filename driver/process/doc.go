// Package process is the default driver: every container is one OS process
// on the node, started from a pool template's Command.
//
// Each process gets a free TCP port on 127.0.0.1 in $PORT, and
// $WARMPOOL_SLOT, $WARMPOOL_POOL and $WARMPOOL_NODE so it can tell who it
// is. It runs in its own process group, and the group is the unit of
// cleanup: Stop signals the whole group, and when the leader exits (for
// whatever reason) the rest of the group is killed, so helpers and
// grandchildren a container spawns never outlive it.
//
// Processes outlive the node. A node that crashes, or exits calling Detach,
// leaves them running; on restart the node finds them with List (group
// leaders in /proc whose environment names the node), verifies each with
// Adopt (the pid still runs and started when the handle says: Handle.StartID
// is the start time from /proc/<pid>/stat, so a reused pid is told apart)
// and then serves or stops them as if it had started them. Close stops them
// all instead. List and Adopt need Linux.
//
// The process's combined stdout and stderr go to a file whose name is
// removed at once: unlike a pipe, it needs no reader, so a container that
// logs after its node died is not killed by SIGPIPE. The driver cuts the
// file back when it grows past a megabyte and reads its last lines when the
// process exits, so that a failed start can say why ("exited with status
// 1; last output: address already in use"); an adopter reopens it through
// /proc/<pid>/fd/1.
//
// The port is chosen by listening on :0 and closing the listener before the
// process starts, so another program could take it in between; a container
// that fails to bind then exits and counts as a failed start, which the pool
// retries.
package process
