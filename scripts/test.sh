#!/usr/bin/env bash
# The project's test command (README): every test tier that can run on this machine.
# Tests that need root or kernel features print why they skip when those are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --locked --all-targets

# Yocto layer and Buildroot tree: lints, BitBake parse, consistency with Cargo.lock and the layout.
packaging/check.sh
