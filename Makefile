# lazysnap — see README.md. Two commands matter to a new user:
#   make demo   installs what is missing, builds, and runs the demo end to end
#   make test   installs what is missing, runs the whole test suite

GO        ?= go
BIN       := bin/lazysnap
ROOTFS    ?= /var/tmp/lazysnap-rootfs
ROOTFS_TAR := $(ROOTFS)/bookworm.tar
PKGS      := ./...

.PHONY: all build install test test-containerd2 unit fuzz demo bench bench-peer bench-soci soci-peer lint deps rootfs clean

all: build

build:
	$(GO) build -trimpath -o $(BIN) ./cmd/lazysnap

# Installs the binary, the systemd units (lazysnap.service and
# lazysnap-fuse-manager.service, their paths filled in) and the example
# configuration, which becomes $(SYSCONFDIR)/lazysnap/config.toml unless
# that exists. DESTDIR stages it for a package.
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
SYSCONFDIR ?= /etc
UNITDIR    ?= $(PREFIX)/lib/systemd/system
install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/lazysnap
	install -d $(DESTDIR)$(UNITDIR)
	for u in lazysnap.service lazysnap-fuse-manager.service; do \
		sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' dist/systemd/$$u >$(DESTDIR)$(UNITDIR)/$$u && \
		chmod 0644 $(DESTDIR)$(UNITDIR)/$$u || exit 1; \
	done
	install -D -m 0644 dist/config.toml $(DESTDIR)$(PREFIX)/share/lazysnap/config.toml.example
	install -D -m 0644 dist/grafana/lazysnap.json $(DESTDIR)$(PREFIX)/share/lazysnap/grafana/lazysnap.json
	[ -e $(DESTDIR)$(SYSCONFDIR)/lazysnap/config.toml ] || \
		install -D -m 0644 dist/config.toml $(DESTDIR)$(SYSCONFDIR)/lazysnap/config.toml

# The whole suite: installs the Debian packages it uses if missing (as make
# demo does), vet, then every package's tests (real registry, containerd
# and FUSE). Deterministic: go test runs each
# fuzzer on its seed corpus only (f.Add and testdata/fuzz), never on random
# inputs; random exploration is make fuzz.
test: deps lint unit

unit: rootfs
	LAZYSNAP_ROOTFS_TAR=$(ROOTFS_TAR) $(GO) test -count=1 -timeout 30m $(PKGS)

# Explores every fuzzer with random inputs, a bounded number of executions
# each, and prints a summary; fails if any fuzzer did, naming the crashers it
# wrote into testdata (commit each with its fix). FUZZSCALE=10 runs longer,
# FUZZONLY=REGEXP runs some. Details: scripts/fuzz.sh. Not part of make test.
fuzz:
	GO=$(GO) ./scripts/fuzz.sh

# The cmd/lazysnap suite against containerd 2.x, built once from the Go
# module proxy (about 7 minutes on 2 cores; not part of make test).
CONTAINERD2_DIR ?= /var/tmp/lazysnap-containerd2
NERDCTL ?= /var/tmp/lazysnap-tools/nerdctl
test-containerd2: rootfs
	./scripts/containerd2.sh $(CONTAINERD2_DIR)
	./scripts/nerdctl.sh $(dir $(NERDCTL))
	LAZYSNAP_ROOTFS_TAR=$(ROOTFS_TAR) LAZYSNAP_TESTENV_CONTAINERD_DIR=$(CONTAINERD2_DIR) LAZYSNAP_CONTAINERD2_DIR=$(CONTAINERD2_DIR) LAZYSNAP_NERDCTL=$(NERDCTL) \
		$(GO) test -count=1 -timeout 30m ./cmd/lazysnap

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
		if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

deps:
	./scripts/deps.sh

rootfs: $(ROOTFS_TAR)

$(ROOTFS_TAR):
	./scripts/rootfs.sh $(ROOTFS)

demo: deps build rootfs
	./scripts/demo.sh $(BIN) $(ROOTFS_TAR)

# Cold starts through an emulated WAN (benchmarks/README.md); writes
# benchmarks/results/coldstart.{md,svg,json}. LAZYSNAP_BENCH_QUICK=1: one run each.
bench: build rootfs
	LAZYSNAP_ROOTFS_TAR=$(ROOTFS_TAR) $(GO) test ./benchmarks ./index -run '^$$' -bench . -benchtime 3x -timeout 30m
	LAZYSNAP_ROOTFS_TAR=$(ROOTFS_TAR) LAZYSNAP_BENCH=1 $(GO) test ./benchmarks -run '^TestColdStart$$' -v -count=1 -timeout 60m

# The same cold starts with Stargz Snapshotter as a fourth mode (peer),
# built from its library (benchmarks/peer/stargz; a module of its own).
PEER_BIN ?= /var/tmp/lazysnap-peer/stargz-peer
bench-peer: build rootfs
	cd benchmarks/peer/stargz && $(GO) build -o $(PEER_BIN) .
	LAZYSNAP_ROOTFS_TAR=$(ROOTFS_TAR) LAZYSNAP_BENCH=1 LAZYSNAP_BENCH_PEER=$(PEER_BIN) \
		$(GO) test ./benchmarks -run '^TestColdStart$$' -v -count=1 -timeout 90m

# Cold starts of the unmodified gzip images with SOCI indexes (built by
# lazysnap index and by soci's library) beside overlayfs and eStargz, and
# soci-snapshotter itself (soci-peer serve): lazily on its own index
# (soci-snap) and in its parallel pull mode on the image with no index
# (soci-snap-parallel, beside lazysnap's line-rate pull).
bench-soci: build rootfs soci-peer
	LAZYSNAP_ROOTFS_TAR=$(ROOTFS_TAR) LAZYSNAP_BENCH=1 LAZYSNAP_SOCI_PEER=$(SOCI_PEER_BIN) \
		LAZYSNAP_BENCH_MODES=overlayfs,lazy,soci,soci-peer,soci-snap,linerate,soci-snap-parallel,lazy-nobg,soci-nobg \
		$(GO) test ./benchmarks -run '^TestColdStart$$' -v -count=1 -timeout 90m

# The SOCI oracle and peer (benchmarks/peer/soci: awslabs/soci-snapshotter's
# library, cgo with Debian's zlib1g-dev; a module of its own; its serve
# subcommand is soci-snapshotter as a proxy snapshotter). Tests build it
# when LAZYSNAP_SOCI_PEER does not name one.
SOCI_PEER_BIN ?= /var/tmp/lazysnap-peer/soci-peer
soci-peer:
	cd benchmarks/peer/soci && $(GO) build -o $(SOCI_PEER_BIN) .

clean:
	rm -rf bin
