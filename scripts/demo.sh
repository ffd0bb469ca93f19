#!/usr/bin/env bash
# The README's demo: builds an EROFS image of a tree (default
# /usr/share/doc) with its file data in sha256-named blobs, then has erofsd
# serve it lazily to the kernel through cachefiles on-demand, in a VM whose
# kernel has that mode (built once from linux-source-6.1, about 4 minutes,
# then cached), and reads every file back against the source.
#
#   scripts/demo.sh [-src DIR]
#
# Needs root (the VM's kernel build installs packages) and the packages of
# scripts/install-deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"
make -s build
exec go run ./tests/demo "$@"
