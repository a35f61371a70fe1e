"""Run oelint-adv (pinned in packaging/requirements.txt) on every recipe and append of
meta-nanoclaw, for each release the layer declares (wrynose, blacksail).

Settings: packaging/oelint.cfg (known variables, network-only rule suppressed). One finding is
dropped here instead of suppressed globally: `oelint.vars.inconspaces` (and its companion info
`oelint.vars.notneededspace`) on the generated nanoclaw-crates.inc, whose `SRC_URI += " \\`
opening is the exact output of oe-core's `bitbake -c update_crates` (meta-oe's own generated
-crates.inc files trip the same rule). Everything else counts: any error or warning fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAYER = REPO / "meta-nanoclaw"
RELEASES = ("wrynose", "blacksail")
GENERATED_SKIP = {("nanoclaw-crates.inc", "oelint.vars.inconspaces"),
                  ("nanoclaw-crates.inc", "oelint.vars.notneededspace")}


def main() -> int:
    exe = Path(sys.executable).with_name("oelint-adv")
    files = sorted(str(p) for p in LAYER.rglob("*") if p.suffix in (".bb", ".bbappend"))
    env = dict(os.environ, OELINT_CONFIG=str(REPO / "packaging" / "oelint.cfg"))
    bad = 0
    for rel in RELEASES:
        res = subprocess.run([str(exe), "--quiet", "--release", rel, "--messageformat",
                              "{path}:{line}:{severity}:{id}:{msg}", *files],
                             capture_output=True, text=True, env=env)
        counts = {"error": 0, "warning": 0, "info": 0}
        dropped = 0
        for line in (res.stdout + res.stderr).splitlines():
            parts = line.split(":", 4)
            if len(parts) < 5 or parts[2] not in counts:
                if line.strip():
                    print(f"oelint[{rel}]: {line}")
                    bad += 1
                continue
            path, _, sev, rule, _ = parts
            if (Path(path).name, rule) in GENERATED_SKIP:
                dropped += 1
                continue
            counts[sev] += 1
            if sev != "info":
                print(f"oelint[{rel}]: {Path(path).relative_to(REPO)}:{parts[1]}: {sev}: {rule}: {parts[4]}")
        bad += counts["error"] + counts["warning"]
        print(f"oelint[{rel}]: {len(files)} files: {counts['error']} errors, {counts['warning']} "
              f"warnings, {counts['info']} infos ({dropped} findings on the generated crates.inc dropped)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
