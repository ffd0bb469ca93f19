#!/usr/bin/env bash
# Installs the Debian packages the build, the tests and the demo need.
# Idempotent: packages already present are not fetched again.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

packages=(
	erofs-utils # mkfs.erofs, fsck.erofs, dump.erofs: reference writer and checker
	qemu-system-x86 # VM tests (tests/vm): guests with the test kernel
	busybox-static # VM tests: the guest's userland
	e2fsprogs # VM tests: mkfs.ext4 for the guest's cache disk
	cpio # VM tests: cross-checks the initramfs writer
	docker-registry # registry tests: the real distribution registry on 127.0.0.1
	curl # make bench: the registry benchmark's reference download
	systemd # systemd-analyze verifies the unit (tests/deploy_test.go)
	containerd # snapshotter tests: a private containerd 1.6 in a temp dir (never the system service)
	runc # the runtime containerd starts the test containers with
	python3 # make bench: the container-start benchmark's image is built from the host's python3 and its standard library
	make
	git
)

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# promtool validates deploy/prometheus (tests/monitoring_test.go). It comes
# from Debian's prometheus package (19 MB download), unpacked for the one
# tool: installing the package would also start a Prometheus server and
# pull its web UI's JavaScript.
if ! command -v promtool >/dev/null 2>&1; then
	tmp=$(mktemp -d)
	(cd "$tmp" && apt-get download prometheus >/dev/null 2>&1) || { apt-get update -qq && (cd "$tmp" && apt-get download prometheus >/dev/null); }
	dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
	install -m 0755 "$tmp/x/usr/bin/promtool" /usr/local/bin/promtool
	rm -rf "$tmp"
fi

# erofsctl trace (and its tests) read the EROFS tracepoints' formats from
# tracefs, which systemd mounts on most machines and a bare one may not.
if [ -d /sys/kernel/tracing ] && ! mountpoint -q /sys/kernel/tracing; then
	mount -t tracefs nodev /sys/kernel/tracing || echo "install-deps: could not mount tracefs; erofsctl trace's tests will say why" >&2
fi

if ! command -v go >/dev/null 2>&1 && [ ! -x /usr/local/go/bin/go ]; then
	echo "install-deps: Go 1.26.8 or newer is required (go.mod's go line; expected at /usr/local/go)" >&2
	exit 1
fi
