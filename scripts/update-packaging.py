#!/usr/bin/env python3
"""Regenerate the packaging files derived from Cargo.lock, packaging/layout.toml and the runner
image manifest: meta-nanoclaw's nanoclaw-crates.inc (the format of oe-core's
`bitbake -c update_crates`), the wic kickstarts, genimage templates, RAUC system.conf files,
packaging/systemd/data.mount and the runner image checksums of both trees.

    scripts/update-packaging.py          # rewrite stale files, list them
    scripts/update-packaging.py --check  # exit 1 and list stale files, write nothing

Run it after every Cargo.lock change (other branches add dependencies) and commit the result.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "packaging" / "tools"))
import gen  # noqa: E402


def main() -> int:
    check = "--check" in sys.argv[1:]
    if check:
        bad = gen.stale()
        for p in bad:
            print(f"stale: {p.relative_to(gen.REPO)} (run scripts/update-packaging.py)")
        return 1 if bad else 0
    for p in gen.write_all():
        print(f"wrote {p.relative_to(gen.REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
