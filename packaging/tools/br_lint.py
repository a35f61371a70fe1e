"""A check-package-style linter for buildroot-external/ (our own code).

Buildroot's utils/check-package is not available from a registry we can reach, so this checks
the conventions of the Buildroot manual ("Writing rules" for .mk, Config.in and .hash files,
"Tips and tricks", customize-outside-br) that check-package enforces, plus rules specific to
this tree (a cargo package's features in both build and install options, `select`s that repeat
the selected symbols' dependencies, every package sourced from the top Config.in).

Usage: br_lint.py [BR2_EXTERNAL_DIR]   exit 1 on any finding; prints one line per finding.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

HASH_LEN = {"md5": 32, "sha1": 40, "sha224": 56, "sha256": 64, "sha384": 96, "sha512": 128}
TOP_LEVEL = {"choice", "comment", "config", "endchoice", "endif", "endmenu", "if", "menu",
             "menuconfig", "source"}
ATTR_ORDER = {"bool": 1, "prompt": 1, "string": 1, "int": 1, "hex": 1, "tristate": 1,
              "default": 2, "depends": 3, "select": 4, "help": 5}
INDENTED = {"bool", "default", "depends", "help", "prompt", "select", "string", "int", "hex"}
CONDITIONAL = re.compile(r"^\s*(ifeq|ifneq|ifdef|ifndef|else|endif)\b")
# Variables a package .mk may set that do not carry its prefix.
MK_ALLOWED = {"BR_NO_CHECK_HASH_FOR"}
# Symbols whose own `depends on` a selecting package must repeat (Kconfig `select` ignores them).
SELECT_NEEDS = {
    "BR2_PACKAGE_LIBSECCOMP": {"BR2_PACKAGE_LIBSECCOMP_ARCH_SUPPORTS", "BR2_TOOLCHAIN_HEADERS_AT_LEAST_3_17"},
    "BR2_PACKAGE_NFTABLES": {"BR2_USE_WCHAR"},
    "BR2_PACKAGE_HOST_RUSTC": {"BR2_PACKAGE_HOST_RUSTC_TARGET_ARCH_SUPPORTS"},
}


class Lint:
    def __init__(self, root: Path):
        self.root = root
        self.findings: list[str] = []

    def add(self, path: Path, lineno: int, msg: str) -> None:
        self.findings.append(f"{path.relative_to(self.root)}:{lineno}: {msg}")

    # --- every text file ------------------------------------------------------------------
    def common(self, path: Path, lines: list[str]) -> None:
        prev_empty = False
        for i, line in enumerate(lines, 1):
            body = line.rstrip("\n")
            if body != body.rstrip():
                self.add(path, i, "line contains trailing whitespace")
            if not body.isascii():
                self.add(path, i, "line contains non-ASCII characters")
            empty = body.strip() == ""
            if empty and prev_empty:
                self.add(path, i, "consecutive empty lines")
            prev_empty = empty
        if lines:
            if not lines[-1].endswith("\n"):
                self.add(path, len(lines), "missing newline at end of file")
            if lines[-1].strip() == "":
                self.add(path, len(lines), "empty line at end of file")

    # --- package .mk ----------------------------------------------------------------------
    def mk(self, path: Path, lines: list[str]) -> None:
        pkg = path.stem
        prefix = pkg.replace("-", "_").upper()
        header = ["#" * 80, "#", f"# {pkg}", "#", "#" * 80, ""]
        for i, want in enumerate(header, 1):
            got = lines[i - 1].rstrip("\n") if i <= len(lines) else None
            if got != want:
                self.add(path, i, f"header line {i} should be {want!r}")
        in_define = backslash = False
        text = "".join(lines)
        for i, raw in enumerate(lines, 1):
            line = raw.rstrip("\n")
            if re.match(r"^\s*define\s", line):
                in_define = True
                continue
            if re.match(r"^\s*endef\b", line):
                in_define = False
                continue
            want_tab = in_define or backslash
            if not backslash and CONDITIONAL.match(line):
                want_tab = False
            if line.strip() and not (in_define and line.lstrip().startswith("#")):
                if want_tab and not line.startswith("\t"):
                    self.add(path, i, "expected indent with tabs")
                if not want_tab and line.startswith("\t"):
                    self.add(path, i, "unexpected indent with tabs")
            if backslash and line.strip() == "":
                self.add(path, i - 1, "remove trailing backslash")
            backslash = line.endswith("\\") and not line.startswith("#")
            if re.match(r"^.*(  |\t ?)\\$", line):
                self.add(path, i, "use only one space before backslash")
            if re.match(r"^[^#].*[^$]\$\{\w+\}", line):
                self.add(path, i, "use $() to delimit variables, not ${}")
            if re.match(r"^\s*(else\s+)?ifn?def\s", line):
                self.add(path, i, "use ifeq ($(SYMBOL),y) / ifneq, not ifdef / ifndef")
            m = re.match(r"^(?:define\s+)?([A-Z0-9_]+_[A-Z0-9_]+)\s*(?:\+=|:=|\?=|=|$)", line)
            if m and not in_define:
                var = m.group(1)
                if not re.match(rf"^(HOST_)?{prefix}_", var) and var not in MK_ALLOWED:
                    self.add(path, i, f"possible typo, variable not prefixed with {prefix}_: {var}")
            if re.search(r"_(INSTALL_TARGET\s*=\s*YES|INSTALL_STAGING\s*=\s*NO|"
                         r"INSTALL_IMAGES\s*=\s*NO|REDISTRIBUTE\s*=\s*YES)\b", line):
                self.add(path, i, "useless default value")
            if re.match(rf"^{prefix}_SOURCE\s*=\s*{re.escape(pkg)}-\$\({prefix}_VERSION\)\.tar\.gz$", line):
                self.add(path, i, "remove default value of _SOURCE")
        for var in ("VERSION", "SITE", "LICENSE"):
            if not re.search(rf"^{prefix}_{var}\s*=", text, re.M):
                self.add(path, 1, f"{prefix}_{var} is not set")
        if re.search(rf"^{prefix}_LICENSE\s*=", text, re.M) and "generic-package" not in text \
                and not re.search(rf"^{prefix}_LICENSE_FILES\s*=", text, re.M):
            self.add(path, 1, f"{prefix}_LICENSE_FILES is not set")
        if "$(eval $(cargo-package))" in text:
            build = re.findall(rf"^{prefix}_CARGO_BUILD_OPTS\s*\+?=\s*(.*)$", text, re.M)
            inst = re.findall(rf"^{prefix}_CARGO_INSTALL_OPTS\s*\+?=\s*(.*)$", text, re.M)
            bf = [b for b in build if "--features" in b]
            inf = [b for b in inst if "--features" in b]
            if bf != inf:
                self.add(path, 1, "cargo features must be passed in both _CARGO_BUILD_OPTS and "
                         "_CARGO_INSTALL_OPTS (cargo install rebuilds)")
            if re.search(rf"^{prefix}_SITE_METHOD\s*=\s*local", text, re.M):
                self.add(path, 1, "a cargo package with SITE_METHOD = local is never vendored: "
                         "cargo build --offline fails")
        if not re.search(r"^\$\(eval \$\((host-)?[a-z0-9-]+-package\)\)$", text, re.M):
            self.add(path, len(lines), "missing $(eval $(<infra>-package))")

    # --- Config.in ------------------------------------------------------------------------
    def config_in(self, path: Path, lines: list[str]) -> None:
        state = 0
        in_help = first_help = False
        backslash = False
        entry: str | None = None
        entries: dict[str, dict] = {}
        for i, raw in enumerate(lines, 1):
            line = raw.rstrip("\n")
            stripped = line.strip()
            if in_help:
                if stripped == "" or line.startswith("\t  "):
                    if stripped and not re.match(r"^(https?|git)://\S*$", stripped):
                        pat = r"^\t  \S.{0,61}$" if first_help else r"^\t  .{0,62}$"
                        if not re.match(pat, line):
                            self.add(path, i, "help text: <tab><2 spaces><62 chars>")
                    if stripped:
                        first_help = False
                        entries[entry]["help_last"] = stripped if entry else None
                    continue
                in_help = False
            if stripped == "" or stripped.startswith("#"):
                continue
            word = stripped.split()[0]
            if backslash:
                if not line.startswith("\t"):
                    self.add(path, i, "continuation line should be indented with tabs")
                backslash = line.endswith("\\")
                continue
            backslash = line.endswith("\\")
            if word in TOP_LEVEL:
                state = 0
                if line != line.lstrip():
                    self.add(path, i, "should not be indented")
                m = re.match(r"^(?:menu)?config\s+(\w+)", line)
                entry = m.group(1) if m else None
                if entry:
                    if entry in entries:
                        self.add(path, i, f"config {entry} redeclared")
                    entries[entry] = {"depends": set(), "select": [], "help_last": None, "line": i}
                continue
            if word in INDENTED and not line.startswith(f"\t{word}"):
                self.add(path, i, "should be indented with one tab")
            if word in ATTR_ORDER:
                new = ATTR_ORDER[word]
                if state > new:
                    self.add(path, i, "attributes order: type, default, depends on, select, help")
                state = new
            if re.match(r"^\tdefault n$", line.split("#")[0].rstrip()):
                self.add(path, i, "'default n' is redundant")
            if entry and word == "depends":
                expr = line.split("#")[0]
                entries[entry]["depends"].update(re.findall(r"\bBR2_\w+", expr))
            if entry and word == "select":
                entries[entry]["select"].append(line.split()[1])
            if word == "help":
                in_help, first_help = True, True
        for name, e in entries.items():
            pkg_symbol = f"BR2_PACKAGE_{path.parent.name.replace('-', '_').upper()}"
            if name == pkg_symbol and path.parent.parent.name == "package":
                if not re.match(r"^(https?|git)://", e["help_last"] or ""):
                    self.add(path, e["line"], f"{name}: help should end with the upstream URL")
            for sel in e["select"]:
                need = SELECT_NEEDS.get(sel, set()) - e["depends"]
                if need:
                    self.add(path, e["line"], f"{name} selects {sel} but does not depend on "
                             f"{sorted(need)} (select ignores the selected symbol's dependencies)")

    # --- .hash ----------------------------------------------------------------------------
    def hash_file(self, path: Path, lines: list[str]) -> None:
        for i, raw in enumerate(lines, 1):
            line = raw.rstrip("\n")
            if line.strip() == "" or line.startswith("#"):
                continue
            f = line.split()
            if len(f) != 3:
                self.add(path, i, "expected three fields")
                continue
            if f[0] not in HASH_LEN:
                self.add(path, i, "unexpected type of hash")
            elif not re.fullmatch(rf"[0-9a-fA-F]{{{HASH_LEN[f[0]]}}}", f[1]):
                self.add(path, i, f"hash size does not match type (expected {HASH_LEN[f[0]]} hex digits)")
            if line != f"{f[0]}  {f[1]}  {f[2]}":
                self.add(path, i, "separate fields with two spaces")

    # --- defconfig ------------------------------------------------------------------------
    def defconfig(self, path: Path, lines: list[str], symbols: set[str]) -> None:
        if "BR2_DOWNLOAD_FORCE_CHECK_HASHES=y\n" not in lines:
            self.add(path, 0, "missing BR2_DOWNLOAD_FORCE_CHECK_HASHES=y")
        seen: set[str] = set()
        for i, raw in enumerate(lines, 1):
            line = raw.rstrip("\n")
            m = re.match(r"^(BR2_\w+)=|^# (BR2_\w+) is not set$", line)
            if not m:
                self.add(path, i, "not a defconfig line")
                continue
            sym = m.group(1) or m.group(2)
            if sym in seen:
                self.add(path, i, f"{sym} set twice")
            seen.add(sym)
            if sym.startswith("BR2_PACKAGE_NANOCLAW") and sym not in symbols:
                self.add(path, i, f"{sym} is not defined by this tree's Config.in files")

    # --- scripts --------------------------------------------------------------------------
    def script(self, path: Path) -> None:
        if not os.access(path, os.X_OK):
            self.add(path, 0, "script is not executable")
        if shutil.which("shellcheck"):
            res = subprocess.run(["shellcheck", "-f", "gcc", str(path)], capture_output=True, text=True)
            for line in res.stdout.splitlines():
                self.findings.append(f"{Path(line.split(':', 1)[0]).resolve().relative_to(self.root)}:"
                                     f"{line.split(':', 1)[1]}")

    def run(self) -> int:
        r = self.root
        for f in ("external.desc", "external.mk", "Config.in"):
            if not (r / f).exists():
                self.add(r / f if (r / f).exists() else r, 0, f"missing {f}")
        desc = (r / "external.desc").read_text() if (r / "external.desc").exists() else ""
        m = re.search(r"^name:\s*([A-Za-z0-9_]+)\s*$", desc, re.M)
        if not m:
            self.add(r / "external.desc", 1, "needs `name: <NAME>` ([A-Za-z0-9_])")
        name = m.group(1) if m else "?"
        top = (r / "Config.in").read_text() if (r / "Config.in").exists() else ""
        symbols: set[str] = set()
        for cfg in sorted(r.rglob("Config.in*")):
            symbols.update(re.findall(r"^(?:menu)?config\s+(BR2_\w+)", cfg.read_text(), re.M))
        for pkgdir in sorted(p for p in (r / "package").iterdir() if p.is_dir()):
            for f in ("Config.in", f"{pkgdir.name}.mk", f"{pkgdir.name}.hash"):
                if not (pkgdir / f).exists():
                    self.add(pkgdir, 0, f"missing {f}")
            src = f'source "$BR2_EXTERNAL_{name}_PATH/package/{pkgdir.name}/Config.in"'
            if src not in top:
                self.add(r / "Config.in", 0, f"does not source {pkgdir.name}/Config.in")
        for path in sorted(p for p in r.rglob("*") if p.is_file()):
            lines = path.read_text().splitlines(keepends=True)
            rel = path.relative_to(r).as_posix()
            if path.suffix in (".mk", ".hash", ".in", ".desc", ".sh", ".cfg", ".conf", ".txt", ".cmd") \
                    or path.name.startswith("Config.in") or path.name.endswith("_defconfig"):
                self.common(path, lines)
            if rel.startswith("package/") and path.suffix == ".mk":
                self.mk(path, lines)
            elif path.name.startswith("Config.in"):
                self.config_in(path, lines)
            elif path.suffix == ".hash":
                self.hash_file(path, lines)
            elif rel.startswith("configs/") and path.name.endswith("_defconfig"):
                self.defconfig(path, lines, symbols)
            elif path.suffix == ".sh":
                self.script(path)
        for f in self.findings:
            print(f"br-lint: {f}")
        if not shutil.which("shellcheck"):
            print("br-lint: note: shellcheck not installed, shell scripts not checked (apt-get install shellcheck)")
        print(f"br-lint: {len(self.findings)} finding(s) in {r}")
        return 1 if self.findings else 0


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "buildroot-external")
    sys.exit(Lint(root.resolve()).run())
