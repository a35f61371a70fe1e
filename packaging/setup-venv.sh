#!/usr/bin/env bash
# Create packaging/.venv (git-ignored) with the pinned linters from requirements.txt.
# Idempotent: does nothing when the venv already has exactly these versions.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${here}/.venv"
stamp="${venv}/.requirements.sha256"
want="$(sha256sum "${here}/requirements.txt" | cut -d' ' -f1)"
if [ -x "${venv}/bin/python" ] && [ "$(cat "${stamp}" 2>/dev/null)" = "${want}" ]; then
	exit 0
fi
python3 -m venv "${venv}"
"${venv}/bin/pip" install --quiet --disable-pip-version-check -r "${here}/requirements.txt"
echo "${want}" > "${stamp}"
