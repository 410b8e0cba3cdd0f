# warmpool's image: the static warmpool binary and nothing else.
#
# Build it with `make image`, which compiles the binary on the host
# (CGO_ENABLED=0; no golang image can be pulled here), puts it in a
# temporary build context as ./warmpool, and builds warmpool:dev from this
# file. FROM scratch pulls nothing, with BuildKit or the classic builder.
#
# By default it runs the demo app on $PORT (8080), listening on all
# addresses so that a published port reaches it:
#
#   docker run --rm -p 127.0.0.1::8080 warmpool:dev
#
# Any other subcommand runs instead of it: docker run warmpool:dev version
#
# No HEALTHCHECK: a scratch image has no curl or wget, and the binary has no
# health-check subcommand yet. The docker driver then probes the published
# port (or the pool's readyPath, e.g. /healthz) instead.
FROM scratch
COPY warmpool /warmpool
ENV PORT=8080 WARMPOOL_DEMO_LISTEN_ALL=1
EXPOSE 8080
ENTRYPOINT ["/warmpool"]
CMD ["demo-app"]
