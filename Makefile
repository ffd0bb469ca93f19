# erofsd build, test and benchmark entry points.
GO        ?= go
BIN       := bin
CMDS      := erofs-image erofsd erofsctl
GOFLAGS_STATIC := CGO_ENABLED=0
FUZZTIME  ?= 10s
PKGS      := ./...

PREFIX    ?= /usr/local
DESTDIR   ?=

.PHONY: all build test unit fuzz-short fuzz bench lint clean install

all: build

# -buildvcs=auto stamps the git revision into the binaries (go version -m;
# internal/version) even where GOFLAGS has -buildvcs=false; outside a git
# checkout, or without git, they are built without it.
build:
	@mkdir -p $(BIN)
	$(GOFLAGS_STATIC) $(GO) build -trimpath -buildvcs=auto -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))

# Every test, then a short run of each fuzz target. Tests that need root
# or a kernel feature skip with the reason when it is missing.
test: build lint unit fuzz-short

unit:
	$(GO) test -count=1 -timeout 20m $(PKGS)

# Fuzz targets: package:target pairs, each run for FUZZTIME.
FUZZ_TARGETS := $(shell grep -rl --include='*_test.go' '^func Fuzz' . | xargs -r grep -Ho '^func Fuzz[A-Za-z0-9_]*' | sed 's|^\./||; s|/[^/]*_test.go:func |:|')

fuzz-short:
	GO=$(GO) FUZZTIME=$(FUZZTIME) bash scripts/fuzz.sh $(FUZZ_TARGETS)

# Longer fuzzing on demand: make fuzz FUZZTIME=10m
fuzz: fuzz-short

# Each benchmark prints its figure next to its reference, from one run.
bench: build
	@echo "== builder: erofs-image build against mkfs.erofs on the same tree"
	$(GO) run ./tests/bench
	@echo "== builder throughput (go test -bench)"
	$(GO) test -run '^$$' -bench 'BuildDir' -benchtime 3x ./erofs/build/
	@echo "== OCI blob store: 1 MiB ReadAt from the loopback registry against bare range GETs and one whole GET"
	$(GO) test -run '^$$' -bench 'OCIRead' -benchtime 3x ./blobstore/
	@echo "== daemon request handling with the kernel taken out"
	$(GO) test -run '^$$' -bench 'ServeReads' -benchtime 5x ./ondemand/cachefiles/
	@echo "== cold sequential read in the VM: erofsd (fscache) against a loop mount"
	$(GO) run ./tests/vmbench
	@echo "== fanotify front end on this kernel against the complete blob"
	$(GO) run ./tests/fanbench
	@echo "== compressed images served lazily: every file of the Go toolchain read cold through fanotify, each algorithm against the uncompressed image"
	$(GO) run ./tests/zbench -bin $(BIN)/erofs-image
	@echo "== fanotify failover: kill -9 of the daemon, then of supervisor and daemon (fd store), while readers stream"
	$(GO) run ./tests/failbench
	$(GO) run ./tests/failbench -kill supervisor
	@echo "== lazy pulling from a registry on loopback against curl; metadata-walk share"
	EROFSD_BENCH_MIN_FETCH=$${EROFSD_BENCH_MIN_FETCH:-0} EROFSD_BENCH_WINDOW=$${EROFSD_BENCH_WINDOW:-33554432} \
		$(GO) test -run '^$$' -bench 'Registry$$' -benchtime 1x ./tests/
	@echo "== time to first output of a python3 container through CRI: containerd's overlayfs (full pull) against erofsd's snapshotter (lazy; with a traced start set; with readahead across files), loopback and a slow link"
	$(GO) test -run '^$$' -bench 'ContainerStart' -benchtime 1x ./tests/

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

# Binaries, the systemd unit, modules-load.d and tmpfiles.d entries, and
# the example config (unless one exists).
install: build
	install -D -m 0755 -t $(DESTDIR)$(PREFIX)/bin $(addprefix $(BIN)/,$(CMDS))
	install -D -m 0644 deploy/systemd/erofsd.service $(DESTDIR)/etc/systemd/system/erofsd.service
	@# FileDescriptorStorePreserve= needs systemd 254+: its drop-in only where systemd knows it.
	@v=$$(systemctl --version 2>/dev/null | sed -n '1s/^systemd \([0-9]*\).*/\1/p'); \
	if [ -n "$$v" ] && [ "$$v" -ge 254 ]; then \
		install -D -m 0644 deploy/systemd/erofsd.service.d/fdstore-preserve.conf $(DESTDIR)/etc/systemd/system/erofsd.service.d/fdstore-preserve.conf; \
	else echo "systemd $${v:-?} < 254: FileDescriptorStorePreserve= drop-in not installed"; fi
	install -D -m 0644 deploy/modules-load.d/erofsd.conf $(DESTDIR)/etc/modules-load.d/erofsd.conf
	install -D -m 0644 deploy/tmpfiles.d/erofsd.conf $(DESTDIR)/etc/tmpfiles.d/erofsd.conf
	@# Monitoring examples: a Prometheus scrape config, alert rules (with
	@# their promtool unit tests) and a Grafana dashboard, to copy from.
	install -D -m 0644 -t $(DESTDIR)$(PREFIX)/share/erofsd/prometheus deploy/prometheus/prometheus.yml deploy/prometheus/erofsd-rules.yml deploy/prometheus/erofsd-rules.test.yml
	install -D -m 0644 -t $(DESTDIR)$(PREFIX)/share/erofsd/grafana deploy/grafana/erofsd-dashboard.json
	@# containerd configuration to merge: 1.6/1.7 (version 2) and 2.x (version 3).
	install -D -m 0644 -t $(DESTDIR)$(PREFIX)/share/erofsd/containerd deploy/containerd/config-v2.toml deploy/containerd/config-v3.toml
	@# An existing config is the administrator's: never overwrite it.
	[ -e $(DESTDIR)/etc/erofsd/config.toml ] || install -D -m 0644 deploy/config.toml $(DESTDIR)/etc/erofsd/config.toml

clean:
	rm -rf $(BIN)
