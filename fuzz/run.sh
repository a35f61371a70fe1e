#!/usr/bin/env bash
# Runs every fuzz target for the given number of seconds each (default 60), seeded from fuzz/seeds/ and
# replaying fuzz/regressions/ first. Needs cargo-fuzz (`cargo install --locked cargo-fuzz`) and no
# nightly: the default toolchain runs with RUSTC_BOOTSTRAP=1 (cargo-fuzz passes -Z flags), because
# CI machines carry only the stable toolchain. The same route is used everywhere.
# Exits non-zero when a target finds a crash; the crashing input is left in fuzz/artifacts/<target>/.
# The targets are safe Rust looking for panics and broken properties, so no sanitizer by default
# (faster build and runs); FUZZ_SANITIZER=address restores cargo-fuzz's default.
set -euo pipefail

seconds="${1:-60}"
sanitizer="${FUZZ_SANITIZER:-none}"
# FUZZ_PROFILE=dev: unoptimized build (2–3 min instead of ~9 min on 2 cores, several times fewer
# executions per second); scripts/test.sh uses it for CI's 60-second smoke run.
profile=()
[ "${FUZZ_PROFILE:-release}" = dev ] && profile=(--dev)
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

export RUSTC_BOOTSTRAP=1
fuzz() { cargo fuzz "$@"; }

targets=(ipc_parse ipc_auth mount_policy)
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    if [ -d "seeds/$target" ]; then
        cp -n "seeds/$target"/* "corpus/$target/" 2>/dev/null || true
    fi
    # Earlier crashes must stay fixed: replay them before fuzzing.
    if [ -d "regressions/$target" ] && [ -n "$(ls -A "regressions/$target")" ]; then
        fuzz run "${profile[@]}" --sanitizer "$sanitizer" "$target" "regressions/$target"/* -- -runs=0
    fi
    echo "fuzzing $target for ${seconds}s"
    fuzz run "${profile[@]}" --sanitizer "$sanitizer" "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -max_len=8192 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
done
