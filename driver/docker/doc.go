// Package docker is the driver that runs every container of a pool as a
// Docker container, from the image a pool template's Docker section names.
//
// It talks to the Docker Engine API through github.com/moby/moby/client,
// configured from the environment like the docker CLI (DOCKER_HOST,
// DOCKER_TLS_VERIFY, DOCKER_CERT_PATH, DOCKER_API_VERSION), and negotiates
// the API version with the daemon: API 1.40 (Engine 19.03) and later, as the
// client allows; checked against Engine 20.10 (API 1.41).
//
// Images are never pulled: an image that is not on the machine fails the
// start with ErrImageMissing. Build them locally (make image builds
// warmpool:dev from a static binary, FROM scratch).
//
// Each container is labelled with io.warmpool.managed=true and its pool,
// node and slot (see the Label constants), gets PORT (the container port),
// WARMPOOL_SLOT, WARMPOOL_POOL and WARMPOOL_NODE in its environment, and has
// its port published on 127.0.0.1 on a random host port, which the handle's
// Endpoint names.
//
// Readiness: an image with a HEALTHCHECK is ready when Docker says it is
// healthy. Otherwise the published port is probed: an HTTP GET of the
// template's ReadyPath answering 2xx, or else a TCP connection that the
// container keeps open. A bare connect proves nothing here: docker-proxy
// accepts on the host port as soon as the container starts, and closes the
// connection at once while nothing listens inside.
//
// Exits are noticed through one stream of Docker events per driver (die and
// destroy of managed containers), reopened with backoff when it breaks;
// after every reopen the driver inspects the containers it tracks, so that
// nothing that died in between is missed. One stream serves any number of
// containers, where ContainerWait would hold a connection to the daemon per
// container. An exit's reason carries the container's last log lines.
//
// Containers outlive the node, as with the process driver: a node that
// crashes or calls Detach leaves them running, and its next run finds them
// with List (by their labels) and takes them over with Adopt. Handle.StartID
// is the container's State.StartedAt, so a container restarted behind the
// node's back (whose host port may have changed) is refused with
// driver.ErrNotSame. Close stops and removes them all instead. Stopped and
// exited containers are removed, never left behind: Stop removes what it
// stops, and List removes the exited containers of its node.
package docker
