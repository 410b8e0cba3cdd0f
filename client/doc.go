// Package client is the Go client of a warmpool cluster. It speaks the NATS API
// that every warmpool node serves (a micro service named "warmpool" whose
// endpoints listen on warmpool.v1.<pool>.<verb>) over a *nats.Conn the caller
// owns, so one connection can carry the application's own traffic too.
//
// The calls mirror the TypeScript library warmpool succeeds:
//
//	c := client.New(nc)
//	web := c.Pool("web")
//	lease, err := web.GetContainer(ctx, sessionID) // same id, same container
//	...
//	_, err = web.ReleaseContainer(ctx, sessionID)
//
// GetContainer may wait for a cold start when no container is warm, which is
// why the default timeout (used when ctx has no deadline) is a generous 30 s;
// set another with WithTimeout or give ctx a deadline.
//
// Errors wrap the sentinels re-exported here (ErrExhausted, ErrUnknownLease,
// ...) whether they were found client-side (an invalid id is rejected before
// anything is sent) or decoded from a node's error reply, so callers branch
// with errors.Is and ask IsRetryable whether trying again may help. When no
// node serves the pool's subject the error wraps ErrNoNode.
package client
