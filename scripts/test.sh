#!/usr/bin/env bash
# The project's test command (README): every test tier that can run on this machine.
# Tests that need root or kernel features print why they skip when those are missing. Installs
# what it needs first (scripts/setup.sh test; root when something is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
step() { printf '\n== test: %s  [+%ss]\n' "$*" "$(( $(date +%s) - start ))"; }

# What the tiers below need (Debian packages, rust targets, cargo-fuzz); a no-op when present.
step "setup (scripts/setup.sh test)"
scripts/setup.sh test

# The runner image the end-to-end tests boot (static musl runner + busybox, squashfs).
step "runner image (x86_64)"
if [ ! -f target/runner-x86_64.squashfs ] || [ -n "${CI:-}" ]; then
  runner-rootfs/build.sh --arch x86_64 --out target/runner-x86_64.squashfs
fi

step "cargo test"
cargo test --locked --all-targets

# The optional WhatsApp channel's boundary tests (feature off in default builds).
step "cargo test --features whatsapp (channel::whatsapp)"
cargo test --locked --features whatsapp --lib channel::whatsapp

step "runner image reproducibility"
runner-rootfs/check-reproducible.sh x86_64

# Yocto layer and Buildroot tree: lints, BitBake parse, consistency with Cargo.lock and the layout.
step "packaging checks"
packaging/check.sh

# The IPC parser and the authorization and mount-policy evaluators under libFuzzer, 60 s each,
# after replaying every committed regression input (fuzz/run.sh).
step "fuzz smoke (60 s per target)"
FUZZ_PROFILE=dev fuzz/run.sh 60

# Tier 2: the QEMU aarch64 acceptance suite (docs/testing.md); prints its own wall time.
step "QEMU aarch64 acceptance suite"
qemu-tests/run.sh
step "done"
