# warmpool's everyday commands. `make help` lists them.

GO     ?= go
DOCKER ?= docker
IMAGE  ?= warmpool:dev

# Recent docker CLIs build with BuildKit only through the buildx plugin;
# where it is missing, use the classic builder (deprecated, but in every
# engine). Override with `make image DOCKER_BUILDKIT=1`.
DOCKER_BUILDKIT ?= $(shell $(DOCKER) buildx version >/dev/null 2>&1 && echo 1 || echo 0)

.PHONY: help build image test clean

help:
	@echo 'make build   build bin/warmpool'
	@echo 'make image   build the $(IMAGE) image (FROM scratch, static binary)'
	@echo 'make test    run every test with the race detector'
	@echo 'make clean   remove bin/'

build:
	$(GO) build -o bin/warmpool ./cmd/warmpool

# The binary is built on the host, since no golang image can be pulled, into
# a temporary build context with the Dockerfile; the context is removed
# afterwards, whatever happens.
image:
	@set -e; ctx=$$(mktemp -d); trap 'rm -rf "$$ctx"' EXIT; \
	echo "CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $$ctx/warmpool ./cmd/warmpool"; \
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o "$$ctx/warmpool" ./cmd/warmpool; \
	cp Dockerfile .dockerignore "$$ctx/"; \
	echo "DOCKER_BUILDKIT=$(DOCKER_BUILDKIT) $(DOCKER) build -t $(IMAGE) $$ctx"; \
	DOCKER_BUILDKIT=$(DOCKER_BUILDKIT) $(DOCKER) build -t $(IMAGE) "$$ctx"

test:
	$(GO) test -race ./...

clean:
	rm -rf bin
