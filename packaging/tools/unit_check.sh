#!/usr/bin/env bash
# systemd-analyze verify on the packaged units (nanoclaw.service with its appliance drop-in,
# data.mount). ExecStart's binary must exist for verify to pass, so a copy of the unit points
# at a stub executable; any output (unknown key, bad value, missing dependency) is a failure.
set -euo pipefail
here="$(cd "$(dirname "$0")/../systemd" && pwd)"
if ! command -v systemd-analyze >/dev/null 2>&1; then
	echo "unit-check: skipping: systemd-analyze not installed (apt-get install systemd)"
	exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT
printf '#!/bin/sh\nexit 0\n' > "${tmp}/nanoclaw"
chmod +x "${tmp}/nanoclaw"
sed "s|^ExecStart=/usr/bin/nanoclaw |ExecStart=${tmp}/nanoclaw |" "${here}/nanoclaw.service" > "${tmp}/nanoclaw.service"
grep -q "^ExecStart=${tmp}/nanoclaw run$" "${tmp}/nanoclaw.service"
cp -r "${here}/nanoclaw.service.d" "${here}/data.mount" "${tmp}/"
out="$(cd "${tmp}" && systemd-analyze verify --man=no ./nanoclaw.service ./data.mount 2>&1)" || {
	echo "${out}"; echo "unit-check: FAIL (systemd-analyze verify exit status)"; exit 1; }
if [ -n "${out}" ]; then
	echo "${out}"
	echo "unit-check: FAIL (systemd-analyze verify printed findings)"
	exit 1
fi
echo "unit-check: ok (systemd $(systemd-analyze --version | head -1 | cut -d' ' -f2): nanoclaw.service + drop-in, data.mount)"
