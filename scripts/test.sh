#!/usr/bin/env bash
# The project's test command (README): every test tier that can run on this machine.
# Tests that need root or kernel features print why they skip when those are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
step() { printf '\n== test: %s  [+%ss]\n' "$*" "$(( $(date +%s) - start ))"; }

# The runner image the end-to-end tests boot (static musl runner + busybox, squashfs).
step "runner image (x86_64)"
if [ ! -f target/runner-x86_64.squashfs ] || [ -n "${CI:-}" ]; then
  runner-rootfs/build.sh --arch x86_64 --out target/runner-x86_64.squashfs
fi

step "cargo test"
cargo test --locked --all-targets

step "runner image reproducibility"
runner-rootfs/check-reproducible.sh x86_64

# Yocto layer and Buildroot tree: lints, BitBake parse, consistency with Cargo.lock and the layout.
step "packaging checks"
packaging/check.sh
step "done"
