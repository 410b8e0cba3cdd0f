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
# A scratch image has no curl: the binary checks itself. The interval is
# short because the docker driver waits for "healthy" before it hands the
# container out, and engines before 25 run the first check only after one
# interval.
FROM scratch
COPY warmpool /warmpool
ENV PORT=8080 WARMPOOL_DEMO_LISTEN_ALL=1
EXPOSE 8080
ENTRYPOINT ["/warmpool"]
CMD ["demo-app"]
HEALTHCHECK --interval=1s --timeout=2s --retries=3 CMD ["/warmpool", "healthcheck"]
