#!/usr/bin/env bash
# Assembles the read-only runner image: a squashfs with busybox (Debian busybox-static), the static
# nanoclaw-runner (musl), /etc/passwd and /etc/group with the runner user, and the mount points a run
# needs. Nothing else. Reproducible: the same inputs give the same bytes (fixed mtimes, all files owned
# by root, fixed modes, sorted entries, no xattrs).
#
#   runner-rootfs/build.sh --arch aarch64|x86_64 --out PATH [--runner BIN] [--comp zstd|xz|gzip]
#   runner-rootfs/build.sh --print-manifest      # current Debian versions and sha256s, manifest format
#
# --runner BIN   use an already built static nanoclaw-runner instead of building it here.
# Without it the runner is built with cargo for <arch>-unknown-linux-musl: Debian's clang-14 compiles
# the C code (bundled SQLite) against Debian's musl-dev headers for that arch, rust-lld links (the route
# recommended in the shared cross-compilation notes). Host needs: clang-14, llvm-14 (llvm-ar-14),
# squashfs-tools, rustup target <arch>-unknown-linux-musl. Debian packages are fetched with private apt
# lists (never dpkg --add-architecture) into target/runner-rootfs/cache and checked against the manifest.
#
# Prints the image's size and sha256. Env: RUNNER_ROOTFS_CACHE (default <repo>/target/runner-rootfs).
set -euo pipefail
umask 022

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
MANIFEST=$HERE/manifest
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
CACHE=${RUNNER_ROOTFS_CACHE:-$REPO/target/runner-rootfs}
# The image's fixed timestamp: 2024-01-01T00:00:00Z (squashfs and every inode).
EPOCH=1704067200

die() { echo "runner-rootfs: $*" >&2; exit 1; }
log() { echo "runner-rootfs: $*" >&2; }

ARCH= OUT= RUNNER= COMP=zstd PRINT=0
while [ $# -gt 0 ]; do
  case $1 in
    --arch) ARCH=${2:-}; shift 2 ;;
    --out) OUT=${2:-}; shift 2 ;;
    --runner) RUNNER=${2:-}; shift 2 ;;
    --comp) COMP=${2:-}; shift 2 ;;
    --print-manifest) PRINT=1; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

apt_opts() { # private apt state per Debian arch; never touches the host's dpkg or lists
  local a=$1 d=$CACHE/apt-$1
  mkdir -p "$d/lists/partial" "$d/cache/archives/partial"
  echo "-oAPT::Architecture=$a -oAPT::Architectures=$a -oDir::State::Lists=$d/lists -oDir::Cache=$d/cache -oDebug::NoLocking=1 -oAPT::Sandbox::User=root"
}

apt_update() { # once per cache; delete $CACHE/apt-<arch>/lists/.done to refresh
  local a=$1
  [ -e "$CACHE/apt-$a/lists/.done" ] && return 0
  log "apt-get update (private lists, $a)"
  # shellcheck disable=SC2046
  apt-get $(apt_opts "$a") update -qq >&2
  touch "$CACHE/apt-$a/lists/.done"
}

if [ "$PRINT" = 1 ]; then
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  for a in amd64 arm64; do apt_update "$a"; done
  for p in busybox-static musl-dev; do
    for a in amd64 arm64; do
      # shellcheck disable=SC2046
      v=$(apt-cache $(apt_opts "$a") policy "$p" | awk '/Candidate:/ {print $2}')
      # shellcheck disable=SC2046
      (cd "$tmp" && apt-get $(apt_opts "$a") download "$p=$v" >/dev/null 2>&1)
      f=$(ls "$tmp"/"${p}"_*_"$a".deb)
      printf '%-15s %-6s %-22s %s\n' "$p" "$a" "$v" "$(sha256sum "$f" | cut -d' ' -f1)"
      rm -f "$f"
    done
  done
  exit 0
fi

[ -n "$ARCH" ] && [ -n "$OUT" ] || die "usage: build.sh --arch aarch64|x86_64 --out PATH (see --help)"
case $ARCH in
  aarch64) DEBARCH=arm64 ;;
  x86_64) DEBARCH=amd64 ;;
  *) die "--arch must be aarch64 or x86_64, not $ARCH" ;;
esac
TRIPLE=$ARCH-unknown-linux-musl
case $COMP in zstd|xz|gzip) ;; *) die "--comp must be zstd, xz or gzip" ;; esac
command -v mksquashfs >/dev/null || die "mksquashfs not found (apt-get install squashfs-tools)"

# Fetches one pinned .deb into the cache and checks its sha256 against the manifest; prints its path.
fetch() {
  local pkg=$1 a=$2 line ver sum file
  line=$(awk -v p="$pkg" -v a="$a" '$1==p && $2==a {print $3, $4}' "$MANIFEST")
  [ -n "$line" ] || die "$pkg/$a is not in $MANIFEST"
  read -r ver sum <<<"$line"
  mkdir -p "$CACHE/debs"
  file="$CACHE/debs/${pkg}_${ver#*:}_$a.deb"
  if [ ! -e "$file" ] || [ "$(sha256sum "$file" | cut -d' ' -f1)" != "$sum" ]; then
    apt_update "$a"
    local tmp; tmp=$(mktemp -d "$CACHE/dl.XXXXXX")
    # shellcheck disable=SC2046
    if ! (cd "$tmp" && apt-get $(apt_opts "$a") download "$pkg=$ver" >/dev/null 2>&1); then
      rm -rf "$tmp"
      die "cannot download $pkg=$ver ($a): Debian may have replaced it; run build.sh --print-manifest and update $MANIFEST"
    fi
    mv "$tmp"/*.deb "$file"; rmdir "$tmp"
  fi
  local got; got=$(sha256sum "$file" | cut -d' ' -f1)
  [ "$got" = "$sum" ] || die "$file: sha256 $got does not match the manifest ($sum)"
  echo "$file"
}

T0=$(date +%s)

# ---------------------------------------------------------------- the runner binary
if [ -z "$RUNNER" ]; then
  command -v clang-14 >/dev/null || die "clang-14 not found (apt-get install clang-14 llvm-14)"
  command -v llvm-ar-14 >/dev/null || die "llvm-ar-14 not found (apt-get install llvm-14)"
  rustup target list --installed 2>/dev/null | grep -qx "$TRIPLE" || die "rustup target $TRIPLE missing (rustup target add $TRIPLE)"
  MUSL=$CACHE/musl-dev-$DEBARCH
  if [ ! -e "$MUSL/.done" ]; then
    rm -rf "$MUSL"; dpkg -x "$(fetch musl-dev "$DEBARCH")" "$MUSL"; touch "$MUSL/.done"
  fi
  mkdir -p "$CACHE/bin"
  CC_WRAP=$CACHE/bin/$ARCH-musl-clang
  cat >"$CC_WRAP" <<WRAP
#!/bin/sh
exec clang-14 --target=$ARCH-linux-musl -nostdinc -isystem "$MUSL/usr/include/$ARCH-linux-musl" -isystem "$(clang-14 -print-resource-dir)/include" "\$@"
WRAP
  chmod 755 "$CC_WRAP"
  T=${TRIPLE//-/_}; TU=$(echo "$T" | tr a-z A-Z)
  REMAP="--remap-path-prefix=$REPO=/nanoclaw --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo"
  case $TARGET_DIR in "$REPO"/*) ;; *) REMAP="--remap-path-prefix=$TARGET_DIR=/target $REMAP" ;; esac
  log "building nanoclaw-runner for $TRIPLE (clang-14 + musl headers, rust-lld)"
  # Remapped paths keep the checkout location and the cargo home out of the binary.
  env "CC_$T=$CC_WRAP" "AR_$T=llvm-ar-14" "CARGO_TARGET_${TU}_LINKER=rust-lld" \
    "CARGO_TARGET_${TU}_RUSTFLAGS=$REMAP" \
    cargo build --release --locked --manifest-path "$REPO/Cargo.toml" --target "$TRIPLE" --bin nanoclaw-runner >&2
  RUNNER=$TARGET_DIR/$TRIPLE/release/nanoclaw-runner
fi
[ -f "$RUNNER" ] || die "runner binary $RUNNER not found"
if command -v readelf >/dev/null && readelf -l "$RUNNER" 2>/dev/null | grep -q 'Requesting program interpreter'; then
  die "$RUNNER is dynamically linked; the image has no libc"
fi
T1=$(date +%s)

# ---------------------------------------------------------------- the tree
BB_DEB=$(fetch busybox-static "$DEBARCH")
STAGE=$CACHE/stage-$ARCH
rm -rf "$STAGE"; mkdir -p "$STAGE"; chmod 0755 "$STAGE"
BBX=$CACHE/busybox-$DEBARCH
rm -rf "$BBX"; dpkg -x "$BB_DEB" "$BBX"
install -d -m 0755 "$STAGE"/{bin,sbin,etc,usr,usr/bin,usr/sbin,home,home/node,home/node/.claude,proc,dev,sys}
install -d -m 0755 "$STAGE"/workspace/{group,global,extra,project,project/groups,ipc,ipc/messages,ipc/tasks,ipc/input}
install -d -m 1777 "$STAGE/tmp"
install -m 0755 "$BBX/bin/busybox" "$STAGE/bin/busybox"
install -m 0755 "$RUNNER" "$STAGE/usr/bin/nanoclaw-runner"
# Applet links: the list comes from a busybox this host can run (the target's, or the same Debian
# version for amd64, which has the same configuration).
LISTER=$BBX/bin/busybox
if ! "$LISTER" true 2>/dev/null; then
  LISTER_DIR=$CACHE/busybox-amd64-lister
  rm -rf "$LISTER_DIR"; dpkg -x "$(fetch busybox-static amd64)" "$LISTER_DIR"
  LISTER=$LISTER_DIR/bin/busybox
fi
"$LISTER" --list-full | LC_ALL=C sort | while read -r applet; do
  case $applet in bin/busybox|linuxrc|"") continue ;; esac
  dir=$(dirname "$applet")
  rel=$(echo "$dir" | sed 's#[^/]*#..#g')
  ln -s "$rel/bin/busybox" "$STAGE/$applet"
done
# The runner user: uid/gid 1000 named node, home /home/node, as the original image (contract §7.17), so
# the session mount stays at /home/node/.claude.
printf 'root:x:0:0:root:/root:/bin/sh\nnode:x:1000:1000:nanoclaw runner:/home/node:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$STAGE/etc/passwd"
printf 'root:x:0:\nnode:x:1000:\nnogroup:x:65534:\n' >"$STAGE/etc/group"
chmod 0644 "$STAGE/etc/passwd" "$STAGE/etc/group"
find "$STAGE" -exec touch -h -d "@$EPOCH" {} +

# ---------------------------------------------------------------- the image
mkdir -p "$(dirname "$OUT")"
rm -f "$OUT"
# -all-root: every inode owned by 0:0; fixed times; no xattrs; mksquashfs sorts directory entries and
# (4.4+) writes reproducible output with several threads.
mksquashfs "$STAGE" "$OUT" -noappend -quiet -no-progress -all-root -no-xattrs -comp "$COMP" \
  -mkfs-time "$EPOCH" -all-time "$EPOCH" >&2
T2=$(date +%s)
SIZE=$(stat -c %s "$OUT")
SUM=$(sha256sum "$OUT" | cut -d' ' -f1)
RSIZE=$(stat -c %s "$RUNNER")
BSIZE=$(stat -c %s "$STAGE/bin/busybox")
echo "runner image $OUT arch=$ARCH size=$SIZE bytes ($(( (SIZE + 1023) / 1024 )) KiB) sha256=$SUM runner=$RSIZE busybox=$BSIZE build=$((T1 - T0))s assemble=$((T2 - T1))s"
[ "$SIZE" -lt $((8 * 1024 * 1024)) ] || die "image is $SIZE bytes, over the 8 MiB target"
