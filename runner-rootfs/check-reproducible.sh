#!/usr/bin/env bash
# Reproducibility check for CI: builds the runner image for ARCH twice and fails unless both have the
# same sha256. The second build starts from an empty package cache (fresh downloads, fresh extraction,
# a different staging path, other file times, another umask), reusing only the runner binary of the
# first build, so it proves the image assembly is deterministic. With FULL=1 the runner binary is also
# compiled a second time in a separate target dir (slow: a whole musl release build).
#
#   runner-rootfs/check-reproducible.sh [x86_64|aarch64]
set -euo pipefail
ARCH=${1:-x86_64}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
OUT=$REPO/target/runner-rootfs/repro
rm -rf "$OUT"; mkdir -p "$OUT"

"$HERE/build.sh" --arch "$ARCH" --out "$OUT/first.squashfs" | tee "$OUT/first.txt"
RUNNER=$REPO/target/$ARCH-unknown-linux-musl/release/nanoclaw-runner
if [ "${FULL:-0}" = 1 ]; then
  CARGO_TARGET_DIR=$OUT/target RUNNER_ROOTFS_CACHE=$OUT/cache \
    "$HERE/build.sh" --arch "$ARCH" --out "$OUT/second.squashfs" | tee "$OUT/second.txt"
  cmp "$RUNNER" "$OUT/target/$ARCH-unknown-linux-musl/release/nanoclaw-runner" \
    || { echo "FAIL runner-rootfs reproducible: the runner binary differs between two builds"; exit 1; }
else
  (umask 077; sleep 1; RUNNER_ROOTFS_CACHE=$OUT/cache \
    "$HERE/build.sh" --arch "$ARCH" --out "$OUT/second.squashfs" --runner "$RUNNER") | tee "$OUT/second.txt"
fi
a=$(sha256sum "$OUT/first.squashfs" | cut -d' ' -f1)
b=$(sha256sum "$OUT/second.squashfs" | cut -d' ' -f1)
if [ "$a" = "$b" ]; then
  echo "PASS runner-rootfs reproducible ($ARCH): sha256=$a"
else
  echo "FAIL runner-rootfs reproducible ($ARCH): $a != $b"
  exit 1
fi
