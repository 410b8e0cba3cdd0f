// Package actors holds warmpool's actors: one pool actor per pool, which
// makes every decision (which slot a session gets, when a lease ends, when to
// start containers) one message at a time, and one slot actor per container,
// which runs the driver calls off its mailbox and reports their outcomes.
//
// Both move slots through the same pure state machine, Transition:
//
//	warming -> warm -> acquired -> draining -> gone
//	              ^        |
//	              +--------+  (release, onRelease: reuse)
//
// The package never imports NATS: the cluster package feeds it requests
// (messages.Acquire ...) and sends the replies on.
package actors
