// Package cluster is the node's NATS side, the only part of the node that
// imports NATS (the actors never do): it runs the embedded nats-server
// (unless told to use another), the `warmpool` micro service whose endpoints
// hand requests to the pool actors, the JetStream KV stores of leases and
// slot snapshots, and the node's ordered shutdown.
//
// Subjects: warmpool.v1.<pool>.<verb>, verb one of acquire, release, renew,
// stats, warmup, shutdown. Each verb is one micro endpoint on the wildcard
// subject warmpool.v1.*.<verb>, so that a request for a pool the node does
// not run gets a 404 instead of silence.
package cluster
