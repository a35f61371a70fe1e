#!/usr/bin/env bash
# Packaging checks for meta-nanoclaw/ and buildroot-external/ (CI entry; see docs/packaging.md).
#
#   packaging/check.sh            all checks; skips (with a printed reason) what cannot be known yet
#   packaging/check.sh --release  the same, but every skip is a failure (tag, release hashes,
#                                 runner manifest must all exist)
#
# Needs python3 (3.11+), git, and for every check to run: systemd (systemd-analyze), shellcheck,
# genimage, dosfstools, mtools, e2fsprogs, fdisk. PyPI tools go to packaging/.venv (git-ignored).
set -uo pipefail
cd "$(dirname "$0")/.."

release=()
[ "${1:-}" = "--release" ] && release=(--release)

start=$(date +%s)
passed=0
failed=0
failures=()

step() {
	local name="$1"
	shift
	printf '\n== %s\n' "${name}"
	if "$@"; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		failures+=("${name}")
	fi
}

step "venv (pinned oelint-adv, bitbake-setup, kas)" packaging/setup-venv.sh
py=packaging/.venv/bin/python

step "generated files are current (scripts/update-packaging.py --check)" \
	"${py}" scripts/update-packaging.py --check
step "consistency: versions, checksums, layout, runner manifest" \
	"${py}" packaging/tools/consistency.py "${release[@]}"
step "oelint-adv on every recipe and append" "${py}" packaging/tools/run_oelint.py
step "BitBake parser over meta-nanoclaw" "${py}" packaging/tools/bb_parse.py meta-nanoclaw
step "kas files against kas's schema" "${py}" -c '
import glob, sys, jsonschema, yaml
from kas.configschema import CONFIGSCHEMA
files = sorted(glob.glob("meta-nanoclaw/kas/*.yml"))
for f in files:
    jsonschema.validate(yaml.safe_load(open(f)), CONFIGSCHEMA)
print(f"kas-schema: {len(files)} files valid")
'
step "check-package-style lint of buildroot-external" "${py}" packaging/tools/br_lint.py buildroot-external
step "SD images from genimage vs layout.toml" "${py}" packaging/tools/image_check.py
step "systemd-analyze verify" packaging/tools/unit_check.sh
step "unit tests of the packaging tools" "${py}" -m unittest discover -s packaging/tests

printf '\n== packaging checks: %ss\n' "$(( $(date +%s) - start ))"
for f in "${failures[@]}"; do
	echo "failed: ${f}"
done
echo "${passed} passed, ${failed} failed"
[ "${failed}" -eq 0 ]
