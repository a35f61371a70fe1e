"""Parse meta-nanoclaw with BitBake's own parser, offline.

BitBake itself is not installable from Debian, but the PyPI `bitbake-setup` wheel ships BitBake's
`bb` library. Without oe-core there is no bitbake.conf and no classes, so this script gives the
parser a minimal stand-in: a stub bitbake.conf that derives PN/PV/BPN/THISDIR like the real one,
and an empty .bbclass for every class our files inherit. What that proves, per file:

- every line parses (assignments, overrides syntax, functions, `require` targets exist);
- every variable expands: inline python `${@...}` compiles and runs, with DISTRO=nanoclaw
  overrides active so the `:nanoclaw` bbappend branches are exercised;
- every shell task body passes `bash -n`, every python function compiles;
- layer.conf: the collection, LAYERSERIES_COMPAT, and that BBFILES / BBFILES_DYNAMIC match every
  .bb/.bbappend in the layer (a recipe in a directory the layer does not scan is never built);
- no top-level `wic/` directory (wrynose's sanity check rejects it; kickstarts go in files/wic).

It does not know what the real classes do (cargo, systemd, useradd semantics): that needs
`bitbake -p` with oe-core, which README.md lists as not verified here.

The wheel's `bb.siggen` imports `hashserv` (not in the wheel); parsing never uses it, so a stub
module is registered. `bb` is internal API, so this is pinned with the wheel version.
"""

from __future__ import annotations

import fnmatch
import glob
import logging
import os
import re
import subprocess
import sys
import tempfile
import types
from pathlib import Path

_hs = types.ModuleType("hashserv")
_hs.__path__ = []  # type: ignore[attr-defined]
_hsc = types.ModuleType("hashserv.client")
_hs.client = _hsc  # type: ignore[attr-defined]
sys.modules.setdefault("hashserv", _hs)
sys.modules.setdefault("hashserv.client", _hsc)

import bb  # noqa: E402
import bb.data  # noqa: E402
import bb.parse  # noqa: E402
import bb.siggen  # noqa: E402
import bb.utils  # noqa: E402

STUB_BITBAKE_CONF = r"""
# Stand-in for oe-core's bitbake.conf: only what recipe parsing needs.
PN = "${@bb.parse.vars_from_file(d.getVar('FILE', False), d)[0] or 'defaultpkgname'}"
PV = "${@bb.parse.vars_from_file(d.getVar('FILE', False), d)[1] or '1.0'}"
PR = "r0"
BPN = "${PN}"
BP = "${BPN}-${PV}"
FILE_DIRNAME = "${@os.path.dirname(d.getVar('FILE', False))}"
WORKDIR = "/stub/work/${PN}/${PV}"
UNPACKDIR = "${WORKDIR}/sources"
S = "${UNPACKDIR}/${BP}"
B = "${S}"
D = "${WORKDIR}/image"
COREBASE = "/stub/oe-core"
COMMON_LICENSE_DIR = "${COREBASE}/meta/files/common-licenses"
prefix = "/usr"
exec_prefix = "/usr"
bindir = "/usr/bin"
sbindir = "/usr/sbin"
base_sbindir = "/usr/sbin"
libdir = "/usr/lib"
nonarch_libdir = "/usr/lib"
datadir = "/usr/share"
docdir = "/usr/share/doc"
sysconfdir = "/etc"
systemd_system_unitdir = "/usr/lib/systemd/system"
TARGET_ARCH = "aarch64"
MACHINE = "qemuarm64"
DISTRO = "nanoclaw"
OVERRIDES = "linux:aarch64:class-target:qemuarm64:nanoclaw:pn-${PN}"
DISTRO_FEATURES = "systemd usrmerge seccomp"
BBFILE_COLLECTIONS = "core openembedded-layer networking-layer"
"""

SHELL_FUNC_SKIP = {"__anonymous"}


class _Collect(logging.Handler):
    """BitBake reports many parse errors through its logger before raising a bare exception."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


BB_LOG = _Collect()
logging.getLogger("BitBake").addHandler(BB_LOG)
logging.getLogger("BitBake").propagate = False


class Failure(Exception):
    pass


def inherited_classes(files: list[Path]) -> set[str]:
    names: set[str] = set()
    for f in files:
        for line in f.read_text().splitlines():
            m = re.match(r"\s*inherit\s+(.*)$", line)
            if m:
                names.update(m.group(1).split())
    return names


def make_stub(tmp: Path, classes: set[str]) -> None:
    (tmp / "conf").mkdir(parents=True)
    (tmp / "conf" / "bitbake.conf").write_text(STUB_BITBAKE_CONF)
    (tmp / "classes-recipe").mkdir()
    (tmp / "classes").mkdir()
    for c in classes | {"base"}:
        (tmp / "classes-recipe" / f"{c}.bbclass").write_text("")


def base_data(stub: Path):
    d = bb.data.init()
    d.setVar("BBPATH", str(stub))
    d.setVar("TOPDIR", str(stub))
    bb.parse.handle(str(stub / "conf" / "bitbake.conf"), d, True)
    # What the cooker sets before parsing recipes: class search dirs and the (no-op) signer
    # that finalize() calls.
    d.setVar("__bbclasstype", "recipe")
    bb.parse.siggen = bb.siggen.init(d)
    return d


def check_functions(d, label: str, errors: list[str]) -> None:
    # `do_install:append() {…}` on a stub class flags "do_install:append" as the function, while
    # the merged body is read from "do_install": check the base name of every flagged key.
    funcs: dict[str, bool] = {}
    for key in list(d.keys()):
        if d.getVarFlag(key, "func", False):
            base = key.split(":")[0]
            funcs[base] = funcs.get(base, False) or bool(d.getVarFlag(key, "python", False))
    for key, is_python in sorted(funcs.items()):
        if key in SHELL_FUNC_SKIP:
            continue
        body = d.getVar(key, False) or ""
        if is_python:
            try:
                compile(f"def {key.replace('-', '_').replace(':', '_')}(d):\n" + body, label, "exec")
            except SyntaxError as e:
                errors.append(f"{label}: python function {key}: {e}")
            continue
        try:
            text = d.expand(body)
        except Exception as e:  # bb raises several expansion error types
            errors.append(f"{label}: shell function {key} does not expand: {e}")
            continue
        res = subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True)
        if res.returncode != 0:
            errors.append(f"{label}: shell function {key}: {res.stderr.strip()}")


def check_expansion(d, label: str, errors: list[str]) -> None:
    funcs = {k.split(":")[0] for k in d.keys() if d.getVarFlag(k, "func", False)}
    for key in list(d.keys()):
        if key.split(":")[0] in funcs:
            continue
        try:
            d.getVar(key)
        except Exception as e:
            errors.append(f"{label}: {key} does not expand: {e}")


def parse_recipe(path: Path, stub: Path, errors: list[str], appends: list[Path] = ()) -> None:
    d = base_data(stub)
    # As the cooker does: appends are named in __BBAPPEND and applied before finalize.
    d.setVar("__BBAPPEND", " ".join(str(a) for a in appends))
    try:
        variants = bb.parse.handle(str(path), d)
        d = variants[""] if isinstance(variants, dict) else variants
    except Exception as e:
        logged = "; ".join(BB_LOG.messages)
        BB_LOG.messages.clear()
        errors.append(f"{path.name}: parse error: {type(e).__name__}: {e} {logged}".rstrip())
        return
    label = (appends[0] if appends else path).name
    for var in ("LICENSE", "SUMMARY"):
        if not appends and not d.getVar(var):
            errors.append(f"{label}: {var} is not set")
    check_expansion(d, label, errors)
    check_functions(d, label, errors)


def check_layer_conf(layer: Path, stub: Path, recipes: list[Path], errors: list[str]) -> dict:
    d = base_data(stub)
    d.setVar("LAYERDIR", str(layer))
    try:
        bb.parse.handle(str(layer / "conf" / "layer.conf"), d, True)
    except Exception as e:
        errors.append(f"layer.conf: parse error: {e}")
        return {}
    check_expansion(d, "layer.conf", errors)
    colls = (d.getVar("BBFILE_COLLECTIONS") or "").split()
    if "nanoclaw" not in colls:
        errors.append("layer.conf: BBFILE_COLLECTIONS lacks nanoclaw")
    compat = (d.getVar("LAYERSERIES_COMPAT_nanoclaw") or "").split()
    if "wrynose" not in compat:
        errors.append(f"layer.conf: LAYERSERIES_COMPAT_nanoclaw {compat} lacks wrynose")
    if not d.getVar("LAYERDEPENDS_nanoclaw"):
        errors.append("layer.conf: LAYERDEPENDS_nanoclaw is empty")
    patterns = (d.getVar("BBFILES") or "").split()
    dynamic = {}
    for item in (d.getVar("BBFILES_DYNAMIC") or "").split():
        coll, _, pat = item.partition(":")
        dynamic.setdefault(coll, []).append(pat)
    for r in recipes:
        direct = any(fnmatch.fnmatch(str(r), p) for p in patterns)
        dyn = [c for c, ps in dynamic.items() if any(fnmatch.fnmatch(str(r), p) for p in ps)]
        if not direct and not dyn:
            errors.append(f"layer.conf: {r.relative_to(layer)} is matched by no BBFILES pattern")
    return {"compat": compat, "dynamic": dynamic, "patterns": patterns}


def main(layer: Path) -> int:
    errors: list[str] = []
    recipes = sorted(Path(p) for p in glob.glob(str(layer / "**" / "*.bb"), recursive=True))
    appends = sorted(Path(p) for p in glob.glob(str(layer / "**" / "*.bbappend"), recursive=True))
    confs = [layer / "conf" / "layer.conf"] + sorted((layer / "conf" / "distro").glob("*.conf"))
    if (layer / "wic").exists():
        errors.append("top-level wic/ directory: wrynose only searches files/wic and rejects wic/")
    with tempfile.TemporaryDirectory() as tmp:
        stub = Path(tmp) / "stub"
        make_stub(stub, inherited_classes(recipes + appends))
        info = check_layer_conf(layer, stub, recipes + appends, errors)
        for conf in confs[1:]:
            d = base_data(stub)
            try:
                bb.parse.handle(str(conf), d, True)
                check_expansion(d, conf.name, errors)
            except Exception as e:
                errors.append(f"{conf.name}: parse error: {e}")
        for r in recipes:
            parse_recipe(r, stub, errors)
        # Appends whose recipe lives in another layer: parse onto an empty stand-in recipe.
        for a in appends:
            pn_glob = a.name.replace(".bbappend", ".bb").replace("%", "*")
            if any(fnmatch.fnmatch(r.name, pn_glob) for r in recipes):
                continue
            standin = Path(tmp) / "standin" / a.name.replace(".bbappend", ".bb").replace("%", "1.0")
            standin.parent.mkdir(exist_ok=True)
            standin.write_text('LICENSE = "MIT"\nSUMMARY = "stand-in"\nSRC_URI = ""\n'
                               'do_install() {\n    :\n}\nFILES:${PN} = ""\n')
            parse_recipe(standin, stub, errors, [a])
    for e in errors:
        print(f"bb-parse: error: {e}")
    n = len(recipes) + len(appends) + len(confs)
    print(f"bb-parse: BitBake {bb.__version__} parsed {len(recipes)} recipes, {len(appends)} appends, "
          f"{len(confs)} conf files; LAYERSERIES_COMPAT {' '.join(info.get('compat', []))}; "
          f"{len(errors)} error(s) in {n} files")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]).resolve()))
