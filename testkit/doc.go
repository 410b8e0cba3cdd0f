// Package testkit helps test warmpool and code that uses it: a fake driver
// for deterministic actor tests, and helpers that start a real embedded
// nats-server and a real node for integration tests.
package testkit
