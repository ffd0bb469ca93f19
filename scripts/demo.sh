#!/usr/bin/env bash
# The README's demo: builds an EROFS image of a tree (default
# /usr/share/doc) with its file data in sha256-named blobs, has erofsd
# serve it lazily to this machine's kernel (front end chosen
# automatically: cachefiles on-demand, else fanotify pre-content events),
# and reads every file back against the source. Where the kernel has
# neither, or with -vm, it serves through cachefiles in a VM whose kernel
# is built once from linux-source-6.1 (about 4 minutes, then cached).
#
#   scripts/demo.sh [-src DIR] [-vm]
#
# Run as root after scripts/install-deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"
make -s build
exec go run ./tests/demo "$@"
