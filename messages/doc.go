// Package messages is warmpool's shared vocabulary: the JSON bodies of the NATS
// API (requests, leases, stats, errors), the pool configuration as it travels on
// the wire, and the sentinel errors callers branch on.
//
// It imports only the standard library so that the actors, the NATS layer and
// any client can all depend on it.
package messages
