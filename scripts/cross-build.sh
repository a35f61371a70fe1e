#!/usr/bin/env bash
# Offline-capable cross build of the static binaries (no Docker):
#
#   scripts/cross-build.sh aarch64 [--profile release] [--bin NAME]...      (also: make cross ARCH=aarch64)
#
# Route (measured in ../shared/notes/qemu-cross.md as the CI choice): Rust target aarch64-unknown-linux-musl,
# the C code (bundled SQLite) compiled by Debian's clang against Debian's arm64 musl headers (musl-dev,
# fetched pinned and sha256-checked by scripts/debs.sh), linked by rust-lld with rustc's self-contained musl
# crt and libc. Result: static binaries that need nothing on the board.
# Host needs: rustup, clang (clang-14 on Debian 12) and llvm-ar; `rustup target add` is done here.
# Prints the path and stripped size of every binary built. Other routes: docs/cross.md.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${NANOCLAW_CACHE:-$ROOT/.cache}
die() { echo "cross-build: $*" >&2; exit 1; }

ARCH=${1:-}; shift || true
PROFILE=release
BINS=()
while [ $# -gt 0 ]; do
  case $1 in
    --profile) PROFILE=$2; shift 2 ;;
    --bin) BINS+=("$2"); shift 2 ;;
    *) die "unknown argument $1" ;;
  esac
done

case $ARCH in
  aarch64|arm64) TARGET=aarch64-unknown-linux-musl; CLANG_TARGET=aarch64-linux-musl; MUSL_DEB=musl-dev; MUSL_INC=aarch64-linux-musl ;;
  armv7|armhf)
    # Measured on our CI machines: `rustup target add armv7-unknown-linux-musleabihf` fails (the
    # rust-std download is not served by the mirror they reach), so this route cannot build armv7
    # there, and an untested armv7 path is not offered. Where rustup can install that target, use
    # cargo-zigbuild or cross (Cross.toml): docs/cross.md.
    die "armv7: rust-std for armv7-unknown-linux-musleabihf is not installable here (rustup target add fails); use cargo-zigbuild or cross where it is, see docs/cross.md" ;;
  *) die "usage: cross-build.sh aarch64 [--profile P] [--bin NAME]..." ;;
esac

# Tools: prefer the unversioned names, else Debian 12's -14 suffix.
pick() { for t in "$@"; do command -v "$t" >/dev/null && { echo "$t"; return; }; done; return 1; }
CLANG=$(pick clang clang-14) || die "clang not found (Debian: apt-get install clang-14)"
LLVM_AR=$(pick llvm-ar llvm-ar-14) || die "llvm-ar not found (Debian: apt-get install llvm-14)"
command -v rustup >/dev/null || die "rustup not found"
rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET" >&2

# musl headers: the pinned Debian package, unpacked once into the cache.
SYSROOT=$CACHE/sysroot-$TARGET
if [ ! -e "$SYSROOT/.done" ]; then
  deb=$("$ROOT/scripts/debs.sh" get "$MUSL_DEB")
  rm -rf "$SYSROOT"; mkdir -p "$SYSROOT"; dpkg-deb -x "$deb" "$SYSROOT"; touch "$SYSROOT/.done"
fi
[ -d "$SYSROOT/usr/include/$MUSL_INC" ] || die "musl headers missing in $SYSROOT"
mkdir -p "$CACHE/bin"
CC_WRAP=$CACHE/bin/$CLANG_TARGET-clang
# -nostdinc keeps the host's glibc headers out: with them SQLite references open64/stat64, which musl lacks.
printf '#!/bin/sh\nexec %s --target=%s -nostdinc -isystem "%s" -isystem "%s" "$@"\n' \
  "$CLANG" "$CLANG_TARGET" "$SYSROOT/usr/include/$MUSL_INC" "$("$CLANG" -print-resource-dir)/include" > "$CC_WRAP"
chmod +x "$CC_WRAP"

T=${TARGET^^}; T=${T//-/_}
export "CARGO_TARGET_${T}_LINKER=rust-lld"
export "CC_${TARGET//-/_}=$CC_WRAP" "AR_${TARGET//-/_}=$LLVM_AR"
# Stripped at link time by rustc, so no target strip tool is needed whatever the profile says.
export "CARGO_PROFILE_${PROFILE^^}_STRIP=symbols"
# No checkout or cargo-home paths in the binaries (panic locations): the same flags as
# runner-rootfs/build.sh, so the two scripts share one set of compiled dependencies.
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
REMAP="--remap-path-prefix=$ROOT=/nanoclaw --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo"
case $TARGET_DIR in "$ROOT"/*) ;; *) REMAP="--remap-path-prefix=$TARGET_DIR=/target $REMAP" ;; esac
export "CARGO_TARGET_${T}_RUSTFLAGS=$REMAP"

# Every binary of the package unless --bin was given: nanoclaw, and nanoclaw-runner once it exists.
ALL_BINS=$(cargo metadata --no-deps --format-version 1 --manifest-path "$ROOT/Cargo.toml" |
  python3 -c 'import json,sys; print(" ".join(t["name"] for p in json.load(sys.stdin)["packages"] for t in p["targets"] if "bin" in t["kind"]))')
[ ${#BINS[@]} -gt 0 ] || read -r -a BINS <<<"$ALL_BINS"
case " $ALL_BINS " in *" nanoclaw-runner "*) ;; *) echo "cross-build: nanoclaw-runner is not in this tree yet (branch runner); skipped" >&2 ;; esac
args=(); for b in "${BINS[@]}"; do args+=(--bin "$b"); done

t0=$(date +%s)
cargo build --locked --manifest-path "$ROOT/Cargo.toml" --profile "$PROFILE" --target "$TARGET" "${args[@]}" >&2
dir=$TARGET_DIR/$TARGET/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
echo "cross-build: $TARGET ($PROFILE) in $(( $(date +%s) - t0 ))s" >&2
READELF=$(pick readelf llvm-readelf llvm-readelf-14 || true)
for b in "${BINS[@]}"; do
  f=$dir/$b
  [ -f "$f" ] || die "$f was not built"
  if [ -n "$READELF" ] && "$READELF" -l "$f" | grep -q 'INTERP'; then die "$f is dynamically linked"; fi
  printf '%s\t%s bytes (stripped, static)\n' "$f" "$(stat -c %s "$f")"
done
