#!/usr/bin/env bash
# The README's demo: build an EROFS image of a default tree with its file
# data in a separate sha256-named blob, check it, mount it with this
# machine's kernel and read every file back.
#
#   scripts/demo.sh [SOURCE_DIR]     (default: /usr/share/doc, or this repo)
#
# Runs as root (mounting needs it); without root it stops after the check.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"

src=${1:-/usr/share/doc}
[ -d "$src" ] || src=$PWD
work=$(mktemp -d /tmp/erofsd-demo.XXXXXX)
mnt=$work/mnt
cleanup() {
	mountpoint -q "$mnt" 2>/dev/null && umount "$mnt"
	[ -n "${loopdev:-}" ] && losetup -d "$loopdev" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

make -s build
echo "== build: $src -> $work/image.erofs, data in $work/blobs/"
bin/erofs-image build --blob-dir "$work/blobs" -o "$work/image.erofs" "$src"
echo
echo "== inspect"
bin/erofs-image inspect "$work/image.erofs" | head -20
echo
echo "== check (every chunk verified against its sha256)"
bin/erofs-image check --blob-dir "$work/blobs" "$work/image.erofs"

if [ "$(id -u)" != 0 ]; then
	echo "not root: skipping the kernel mount"
	exit 0
fi
echo
echo "== mount with the kernel (blob attached as an extra device) and compare"
blob=$(ls "$work/blobs")
loopdev=$(losetup --find --show --read-only "$work/blobs/$blob")
mkdir -p "$mnt"
mount -t erofs -o ro,device="$loopdev" "$work/image.erofs" "$mnt"
if diff -r --no-dereference "$src" "$mnt" >/dev/null; then
	echo "OK: $(find "$mnt" | wc -l) entries read back through the kernel, identical to $src"
else
	echo "FAIL: mounted tree differs from $src" >&2
	exit 1
fi
