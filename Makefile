# nuropb — build, run and test. `make run` and `make test` are the quick start.
SHELL := /bin/bash
GO ?= go
BIN := bin/nuropb-host
MODULES_DIR := modules
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
GUEST_CACHE := $(HOME)/.cache/nuropb

.PHONY: all setup build modules go-modules rust-modules python-modules run test vet bench fmt clean

all: build modules

# Installs the guest toolchains (Debian packages) and builds the Python
# runtime once into $(GUEST_CACHE); both are skipped when already present.
setup:
	@scripts/setup.sh

build:
	$(GO) build -ldflags "-X main.Version=$(VERSION)" -o $(BIN) ./cmd/nuropb-host

modules: go-modules rust-modules python-modules

go-modules:
	@scripts/build-go-modules.sh $(MODULES_DIR)

rust-modules: setup
	@scripts/build-rust-modules.sh $(MODULES_DIR)

python-modules: setup build
	@scripts/build-python-modules.sh $(MODULES_DIR)

run: build modules
	$(BIN) run --config host.toml

vet:
	$(GO) vet ./...
	GOOS=wasip1 GOARCH=wasm $(GO) vet ./guest-sdk/go/... ./modules/examples/go/...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }

test: setup vet
	$(GO) test -race -count=1 -timeout 20m ./...

bench: setup build
	$(GO) run ./cmd/nuropb-bench -o BENCHMARKS.md

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin $(MODULES_DIR)/*.wasm
