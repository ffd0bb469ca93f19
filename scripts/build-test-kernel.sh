#!/usr/bin/env bash
# Builds the guest kernel for the VM tests (tests/vm) from Debian's
# linux-source-6.1: `make tinyconfig`, the options of tests/vm/kernel.config
# merged over it, `make bzImage`. The result is cached in
#   ${EROFSD_KERNEL_CACHE:-/var/cache/erofsd/test-kernel}/<key>/bzImage
# where <key> hashes the linux-source package version, the fragment's option
# lines and RECIPE (below). A cached kernel is never rebuilt.
#
# Usage: build-test-kernel.sh          install packages if missing, build if
#                                      not cached (about 4 min on 2 cores)
#        build-test-kernel.sh --check  only look: exit 1 if not cached
# The bzImage path is the last line on stdout; progress goes to stderr.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

# Bump when the way the kernel is built changes (not the options: those are
# hashed from the fragment).
RECIPE=1

root=$(cd "$(dirname "$0")/.." && pwd)
fragment="$root/tests/vm/kernel.config"
cache="${EROFSD_KERNEL_CACHE:-/var/cache/erofsd/test-kernel}"
source_pkg=linux-source-6.1
source_tar=/usr/src/linux-source-6.1.tar.xz
packages=(
	"$source_pkg" qemu-system-x86 busybox-static e2fsprogs cpio gzip
	bc flex bison libelf-dev libssl-dev gcc make libc6-dev xz-utils
)
# Options whose absence would make the kernel useless for the tests.
required=(CONFIG_CACHEFILES_ONDEMAND=y CONFIG_EROFS_FS_ONDEMAND=y)

log() { echo "build-test-kernel: $*" >&2; }
die() { log "error: $*"; exit 1; }

check_only=false
case "${1:-}" in
"") ;;
--check) check_only=true ;;
-h | --help) sed -n '2,12s/^# \{0,1\}//p' "$0"; exit 0 ;;
*) die "unknown argument $1 (try --help)" ;;
esac
[ -r "$fragment" ] || die "missing $fragment"

# The option lines of the fragment ("CONFIG_X=v" or "# CONFIG_X is not set"),
# normalised: comments and blank lines dropped, sorted.
options() {
	grep -E '^(CONFIG_[A-Za-z0-9_]+=|# CONFIG_[A-Za-z0-9_]+ is not set)' "$fragment" |
		sed 's/[[:space:]]*$//' | LC_ALL=C sort -u
}

cache_key() {
	local version
	version=$(dpkg-query -W -f='${Version}' "$source_pkg" 2>/dev/null) || return 1
	[ -n "$version" ] || return 1
	{ echo "recipe $RECIPE"; echo "source $source_pkg $version"; options; } | sha256sum | cut -c1-16
}

# check_config FILE: every fragment option must have survived the merge.
check_config() {
	local opt name missing=()
	for opt in "${required[@]}"; do
		grep -qxF "$opt" "$1" || die "$opt is not in the built kernel's config ($1); fscache mode cannot work"
	done
	while read -r opt; do
		case $opt in
		"# "*) # off: absent or "is not set"
			name=${opt#"# "}
			! grep -q "^${name%% *}=" "$1" || missing+=("$opt")
			;;
		*) grep -qxF "$opt" "$1" || missing+=("$opt") ;;
		esac
	done < <(options)
	[ "${#missing[@]}" -eq 0 ] || die "options of $fragment not honoured by the config (unmet dependencies?): ${missing[*]}"
}

if $check_only; then
	key=$(cache_key) || { log "$source_pkg is not installed"; exit 1; }
	[ -f "$cache/$key/bzImage" ] || { log "no kernel cached at $cache/$key"; exit 1; }
	echo "$cache/$key/bzImage"
	exit 0
fi

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
	[ "$(id -u)" -eq 0 ] || die "packages missing and not root: ${missing[*]}"
	log "installing ${missing[*]}"
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

key=$(cache_key) || die "cannot read the version of $source_pkg"
out="$cache/$key"
if [ -f "$out/bzImage" ]; then
	log "cached: $out"
	echo "$out/bzImage"
	exit 0
fi

mkdir -p "$cache"
# One build at a time; whoever waited finds the kernel cached.
exec 9>"$cache/.lock"
flock 9
if [ -f "$out/bzImage" ]; then
	log "cached (built concurrently): $out"
	echo "$out/bzImage"
	exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/erofsd-kernel.XXXXXX")
stage=$(mktemp -d "$cache/.stage.XXXXXX") # same filesystem as $out: rename is atomic
trap 'rm -rf "$work" "$stage"' EXIT
buildlog="$work/build.log"
start=$(date +%s)
elapsed() { echo "$(($(date +%s) - start)) s"; }

run() {
	if ! "$@" >>"$buildlog" 2>&1; then
		tail -n 40 "$buildlog" >&2
		die "failed: $* (full log above, last 40 lines)"
	fi
}

export ARCH=x86_64 KBUILD_BUILD_USER=erofsd KBUILD_BUILD_HOST=test-kernel KBUILD_BUILD_TIMESTAMP="recipe $RECIPE"
log "key $key: unpacking $source_tar"
run tar -xJf "$source_tar" -C "$work"
src="$work/linux-source-6.1"
cd "$src"
log "configuring: tinyconfig + $(options | wc -l) options of ${fragment#"$root"/} ($(elapsed))"
run make tinyconfig
# -n: allnoconfig over tinyconfig plus the fragment, so options that appear
# with the fragment's menus stay off unless named (olddefconfig would turn on
# their defaults, e.g. IPv6 and the function tracer).
run scripts/kconfig/merge_config.sh -n .config "$fragment"
check_config .config
log "building bzImage with $(nproc) jobs ($(elapsed); log: $buildlog)"
run make -j"$(nproc)" bzImage
check_config .config

cp arch/x86/boot/bzImage "$stage/bzImage"
cp .config "$stage/config"
cp "$buildlog" "$stage/build.log"
{
	echo "source: $source_pkg $(dpkg-query -W -f='${Version}' "$source_pkg")"
	echo "recipe: $RECIPE"
	echo "kernel: $(make -s kernelrelease)"
	echo "built: $(date -u +%FT%TZ) in $(elapsed) on $(nproc) cores"
} >"$stage/info"
chmod 0755 "$stage"
mv -T "$stage" "$out"
log "built in $(elapsed): $out"
echo "$out/bzImage"
