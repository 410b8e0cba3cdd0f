// Package process is the default driver: every container is one OS process
// on the node, started from a pool template's Command.
//
// Each process gets a free TCP port on 127.0.0.1 in $PORT, and $WARMPOOL_SLOT
// and $WARMPOOL_POOL so it can tell who it is. It runs in its own process
// group, and the group is the unit of cleanup: Stop signals the whole group,
// and when the leader exits (for whatever reason) the rest of the group is
// killed, so helpers and grandchildren a container spawns never outlive it.
//
// The last lines of the process's combined stdout and stderr are kept in
// memory so that a failed start can say why ("exited with status 1; last
// output: address already in use").
//
// The port is chosen by listening on :0 and closing the listener before the
// process starts, so another program could take it in between; a container
// that fails to bind then exits and counts as a failed start, which the pool
// retries.
package process
