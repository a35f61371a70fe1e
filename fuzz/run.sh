#!/usr/bin/env bash
# Runs every fuzz target for the given number of seconds each (default 60), seeded from fuzz/seeds/ and
# replaying fuzz/regressions/ first. Needs a nightly toolchain and cargo-fuzz:
#   rustup toolchain install nightly && cargo install cargo-fuzz
# Exits non-zero when a target finds a crash; the crashing input is left in fuzz/artifacts/<target>/.
# The targets are safe Rust looking for panics and broken properties, so no sanitizer by default
# (faster build and runs); FUZZ_SANITIZER=address restores cargo-fuzz's default.
set -euo pipefail

seconds="${1:-60}"
sanitizer="${FUZZ_SANITIZER:-none}"
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

targets=(ipc_parse ipc_auth mount_policy)
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    if [ -d "seeds/$target" ]; then
        cp -n "seeds/$target"/* "corpus/$target/" 2>/dev/null || true
    fi
    # Earlier crashes must stay fixed: replay them before fuzzing.
    if [ -d "regressions/$target" ] && [ -n "$(ls -A "regressions/$target")" ]; then
        cargo +nightly fuzz run --sanitizer "$sanitizer" "$target" "regressions/$target"/* -- -runs=0
    fi
    echo "fuzzing $target for ${seconds}s"
    cargo +nightly fuzz run --sanitizer "$sanitizer" "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -max_len=8192 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
done
