// Package demoapp is the demo "container" that ships with warmpool: a small
// HTTP server that is slow to start, so that the difference between a cold
// start and a warm container from the pool is plain to see.
//
// It reads the environment the process driver gives it: PORT to listen on,
// and WARMPOOL_SLOT and WARMPOOL_POOL, which GET / reports back with its pid
// and a request counter, so a client can see which container served it and
// whether it was reused. GET /healthz answers 200 once it listens.
//
// It listens on 127.0.0.1 only, unless WARMPOOL_DEMO_LISTEN_ALL=1 (needed
// inside a Docker container, where the port is published from outside).
package demoapp
