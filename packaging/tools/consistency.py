"""Release consistency: the Yocto layer and the Buildroot tree must describe the crate in this
checkout (Cargo.toml, Cargo.lock, LICENSE), the runner image manifest and packaging/layout.toml.

Each check prints `ok`, `FAIL` or `skip: <reason>`. Skips are for facts that cannot exist yet
(no release tag, no runner manifest, no release tarball hash); `--release` turns every skip into
a failure, for the release pipeline. Exit status 1 on any failure.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen  # noqa: E402

# Buildroot 2026.05.x download format suffixes (package/pkg-download.mk BR_FMT_VERSION_*).
BR_GIT_FMT, BR_CARGO_FMT = "-git4", "-cargo5"


class Report:
    def __init__(self, release: bool):
        self.release = release
        self.failed = 0
        self.passed = 0
        self.skipped = 0

    def ok(self, name: str) -> None:
        self.passed += 1
        print(f"consistency: ok    {name}")

    def fail(self, name: str, why: str) -> None:
        self.failed += 1
        print(f"consistency: FAIL  {name}: {why}")

    def skip(self, name: str, why: str) -> None:
        if self.release:
            self.fail(name, f"(release mode) {why}")
            return
        self.skipped += 1
        print(f"consistency: skip  {name}: {why}")

    def check(self, name: str, cond: bool, why: str) -> None:
        (self.ok(name) if cond else self.fail(name, why))


def bb_var(text: str, var: str) -> str | None:
    """Value of a simple `VAR = "..."` / `VAR ??= "..."` assignment (first one)."""
    m = re.search(rf'^{re.escape(var)}\s*(?:\?\?=|\?=|=)\s*"(.*?)"\s*$', text, re.M)
    return m.group(1) if m else None


def mk_var(text: str, var: str) -> str | None:
    m = re.search(rf"^{re.escape(var)}\s*=\s*(.*?)\s*$", text, re.M)
    return m.group(1) if m else None


def git(root: Path, *args: str) -> str | None:
    try:
        return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True,
                              text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def url_key(url: str) -> str:
    """host/path without scheme, `.git`, trailing slash: what must agree across the trees."""
    u = urlsplit(url.split(";")[0])
    return (u.netloc + u.path).removesuffix("/").removesuffix(".git")


def main(release: bool, root: Path = gen.REPO) -> int:
    REPO, LAYER, BR = root, root / "meta-nanoclaw", root / "buildroot-external"
    r = Report(release)
    cargo = tomllib.loads((REPO / "Cargo.toml").read_text())
    pkg = cargo["package"]
    version = pkg["version"]
    lock = tomllib.loads((REPO / "Cargo.lock").read_text())

    recipe_dir = LAYER / "recipes-nanoclaw" / "nanoclaw"
    recipe = recipe_dir / f"nanoclaw_{version}.bb"
    rtext = recipe.read_text() if recipe.exists() else ""
    mk = (BR / "package/nanoclaw/nanoclaw.mk").read_text()
    runner_mk = (BR / "package/nanoclaw-runner-image/nanoclaw-runner-image.mk").read_text()
    br_hash = (BR / "package/nanoclaw/nanoclaw.hash").read_text()

    # --- versions -------------------------------------------------------------------------
    versioned = sorted(p for p in LAYER.rglob("*.bb") if "_" in p.stem)
    wrong = [p.relative_to(LAYER).as_posix() for p in versioned
             if p.stem.rsplit("_", 1)[1] != version]
    r.check(f"Yocto recipe versions == Cargo.toml {version}", recipe.exists() and not wrong,
            f"missing {recipe.name}" if not recipe.exists() else f"stale: {wrong}")
    r.check("Buildroot NANOCLAW_VERSION == v<Cargo version>", mk_var(mk, "NANOCLAW_VERSION") == f"v{version}",
            f"NANOCLAW_VERSION = {mk_var(mk, 'NANOCLAW_VERSION')}, want v{version}")
    r.check("Buildroot NANOCLAW_RUNNER_IMAGE_VERSION == Cargo version",
            mk_var(runner_mk, "NANOCLAW_RUNNER_IMAGE_VERSION") == version,
            f"{mk_var(runner_mk, 'NANOCLAW_RUNNER_IMAGE_VERSION')} != {version}")

    # --- generated files (crates.inc from Cargo.lock, layout-derived files, runner sums) --
    stale = [p.relative_to(REPO).as_posix() for p in gen.stale(REPO)]
    r.check("generated files match Cargo.lock / layout.toml / runner manifest "
            "(nanoclaw-crates.inc regenerated and compared)", not stale,
            f"stale {stale}: run scripts/update-packaging.py")
    crates_io = [p for p in lock["package"] if "crates.io" in p.get("source", "")]
    inc = (recipe_dir / "nanoclaw-crates.inc").read_text()
    listed = re.findall(r"crate://crates\.io/([^/\s]+)/(\S+) \\", inc)
    sums = dict(re.findall(r'SRC_URI\[(\S+)\.sha256sum\] = "([0-9a-f]{64})"', inc))
    r.check(f"crates.inc lists all {len(crates_io)} crates.io packages with Cargo.lock checksums",
            sorted(listed) == sorted((p["name"], p["version"]) for p in crates_io)
            and all(sums.get(f"{p['name']}-{p['version']}") == p.get("checksum") for p in crates_io),
            "crate list or checksums differ from Cargo.lock")
    git_deps = sorted({p["source"] for p in lock["package"] if p.get("source", "").startswith("git+")})
    r.check("Cargo.lock has no git dependencies (each would need its own SRC_URI in the recipe "
            "and network in Buildroot's vendoring)", not git_deps, f"git sources: {git_deps}")

    # --- license ---------------------------------------------------------------------------
    lic = (REPO / "LICENSE").read_bytes()
    md5, sha = hashlib.md5(lic).hexdigest(), hashlib.sha256(lic).hexdigest()
    r.check("Cargo.toml license == recipe LICENSE == NANOCLAW_LICENSE",
            pkg.get("license") == bb_var(rtext, "LICENSE") == mk_var(mk, "NANOCLAW_LICENSE"),
            f"{pkg.get('license')} / {bb_var(rtext, 'LICENSE')} / {mk_var(mk, 'NANOCLAW_LICENSE')}")
    r.check("LIC_FILES_CHKSUM md5 == md5(LICENSE)",
            bb_var(rtext, "LIC_FILES_CHKSUM") == f"file://LICENSE;md5={md5}",
            f"{bb_var(rtext, 'LIC_FILES_CHKSUM')} vs md5 {md5}")
    r.check("nanoclaw.hash LICENSE sha256 == sha256(LICENSE)",
            f"sha256  {sha}  LICENSE" in br_hash.splitlines(), f"want sha256 {sha}")

    # --- source location -------------------------------------------------------------------
    repo_key = url_key(pkg.get("repository", ""))
    src_uri = bb_var(rtext, "SRC_URI") or ""
    homes = [bb_var(p.read_text(), "HOMEPAGE") for p in LAYER.rglob("*.bb")]
    runner_bbs = sorted((LAYER / "recipes-nanoclaw/nanoclaw-runner-image").glob("nanoclaw-runner-image_*.bb"))
    rel_uri = (bb_var(runner_bbs[0].read_text(), "NANOCLAW_RELEASE_URI") or "") if runner_bbs else ""
    br_rel = mk_var(runner_mk, "NANOCLAW_RUNNER_IMAGE_SITE") or ""
    keys = {"Yocto SRC_URI": url_key(src_uri.replace("git://", "https://")),
            "Buildroot NANOCLAW_SITE": url_key(mk_var(mk, "NANOCLAW_SITE") or ""),
            **{f"HOMEPAGE #{i}": url_key(h or "") for i, h in enumerate(homes)},
            "Yocto release URI": url_key(rel_uri).split("/releases/")[0],
            "Buildroot runner SITE": url_key(br_rel).split("/releases/")[0]}
    bad = {k: v for k, v in keys.items() if v != repo_key}
    r.check(f"every source/homepage URL names Cargo.toml repository ({repo_key})", not bad, f"{bad}")
    r.check("recipe fetches tag v${PV}", "tag=v${PV}" in src_uri, f"SRC_URI = {src_uri}")

    srcrev = bb_var(rtext, "SRCREV") or ""
    tag_commit = git(REPO, "rev-parse", "-q", "--verify", f"refs/tags/v{version}^{{commit}}")
    if not re.fullmatch(r"[0-9a-f]{40}", srcrev):
        r.fail("SRCREV", f"not a 40-hex commit id: {srcrev!r}")
    elif tag_commit:
        r.check(f"SRCREV == commit of tag v{version}", srcrev == tag_commit, f"{srcrev} != {tag_commit}")
    elif git(REPO, "rev-parse", "--git-dir") is None:
        r.skip("SRCREV", "not a git checkout, cannot look the commit up")
    else:
        exists = git(REPO, "cat-file", "-e", f"{srcrev}^{{commit}}") is not None
        if not exists:
            r.fail("SRCREV", f"{srcrev} is not a commit of this repository")
        else:
            r.skip(f"SRCREV == tag v{version}",
                   f"tag v{version} does not exist yet; SRCREV {srcrev[:12]} is a commit of this "
                   "repository (pre-release)")

    tarball = f"nanoclaw-v{version}{BR_GIT_FMT}{BR_CARGO_FMT}.tar.gz"
    entries = [ln.split() for ln in br_hash.splitlines() if ln.strip() and not ln.startswith("#")]
    tar_entries = [e for e in entries if len(e) == 3 and e[2].endswith(".tar.gz")]
    if not tar_entries:
        r.skip("nanoclaw.hash vendored tarball entry",
               f"no {tarball} hash yet (computed at release from the tagged source: docs/packaging.md, 'Releasing')")
    else:
        r.check(f"nanoclaw.hash names {tarball}", all(e[2] == tarball for e in tar_entries),
                f"entries {[e[2] for e in tar_entries]}")

    # --- runner image manifest -------------------------------------------------------------
    manifest = gen.find_runner_manifest(REPO)
    if manifest is None:
        r.skip("runner image checksums == runner-rootfs manifest",
               "runner-rootfs/manifest* does not exist yet (written on the runner branch); "
               "both trees carry no runner image checksum until it does")
    else:
        rsums = gen.runner_image_sha256(manifest)
        missing = [a for a in gen.RUNNER_ARCHES if a not in rsums]
        if missing:
            r.skip("runner image checksums == runner-rootfs manifest",
                   f"{manifest.relative_to(REPO)} records no image sha256 for {missing} "
                   "(expected `[image.<arch>] sha256 = \"…\"`)")
        else:
            r.ok(f"runner image checksums for {list(rsums)} come from {manifest.relative_to(REPO)}")

    # --- layout ----------------------------------------------------------------------------
    layout = gen.load_layout(REPO / "packaging" / "layout.toml")
    root_mib = layout.partitions[1].size_mib
    image_bb = (LAYER / "recipes-core/images/nanoclaw-image.bb").read_text()
    r.check(f"IMAGE_ROOTFS_MAXSIZE == root slot size ({root_mib} MiB)",
            bb_var(image_bb, "IMAGE_ROOTFS_MAXSIZE") == str(root_mib * 1024),
            f"IMAGE_ROOTFS_MAXSIZE = {bb_var(image_bb, 'IMAGE_ROOTFS_MAXSIZE')}")
    for bd in layout.boards:
        if not bd.buildroot_defconfig:
            continue
        path = BR / "configs" / bd.buildroot_defconfig
        if not path.exists():
            r.fail(f"defconfig {bd.buildroot_defconfig}", "missing (named in layout.toml)")
            continue
        dc = path.read_text()
        r.check(f"{bd.buildroot_defconfig}: rootfs size == slot, post-script args == board",
                f'BR2_TARGET_ROOTFS_EXT2_SIZE="{root_mib}M"' in dc
                and f'BR2_ROOTFS_POST_SCRIPT_ARGS="{bd.key}"' in dc,
                f'want BR2_TARGET_ROOTFS_EXT2_SIZE="{root_mib}M" and POST_SCRIPT_ARGS="{bd.key}"')

    # --- kernel options, config, credential path -------------------------------------------
    yk = set(re.findall(r"^(CONFIG_\w+)=y$", (LAYER / "recipes-kernel/linux/files/nanoclaw.cfg").read_text(), re.M))
    bk = set(re.findall(r"KCONFIG_ENABLE_OPT,(CONFIG_\w+)\)", mk))
    r.check(f"kernel options: Yocto fragment == Buildroot fixups ({len(yk)})", yk == bk and yk,
            f"only Yocto: {sorted(yk - bk)}, only Buildroot: {sorted(bk - yk)}")
    data_dir = f"{layout.partitions[3].mountpoint}/nanoclaw"
    confs = [LAYER / "recipes-nanoclaw/nanoclaw-conf/files/config.toml",
             BR / "board/nanoclaw/rootfs-overlay/etc/nanoclaw/config.toml"]
    dirs = [tomllib.loads(c.read_text()).get("data_dir") for c in confs]
    r.check(f"appliance configs put data_dir on the data partition ({data_dir})",
            all(d == data_dir for d in dirs), f"{dirs}")
    tmpfiles = (REPO / "packaging/systemd/nanoclaw-appliance.tmpfiles").read_text()
    cred = re.search(r"^f (\S+) 0600", tmpfiles, re.M)
    cred_path = cred.group(1) if cred else "?"
    r.check("credential symlink target == tmpfiles entry in both trees",
            f"ln -s {cred_path} " in rtext and f"ln -sf {cred_path} " in mk
            and f"d {data_dir} " in tmpfiles,
            f"tmpfiles credential {cred_path}, data dir {data_dir}")
    unit = (REPO / "packaging/systemd/nanoclaw.service").read_text()
    bins = [b.get("name") for b in cargo.get("bin", [])]
    r.check("unit ExecStart runs the crate's nanoclaw binary",
            "nanoclaw" in bins and re.search(r"^ExecStart=/usr/bin/nanoclaw run$", unit, re.M) is not None,
            f"bins {bins}")

    # --- features --------------------------------------------------------------------------
    features = set(cargo.get("features", {}))
    yf = [f for f in (bb_var(rtext, "NANOCLAW_CARGO_FEATURES") or "").split(",") if f]
    r.check("default cargo features in the recipes exist in Cargo.toml", set(yf) <= features,
            f"unknown {sorted(set(yf) - features)}")

    # --- RAUC compatible strings -----------------------------------------------------------
    bundles = sorted((LAYER / "dynamic-layers/rauc/recipes-core/bundles").glob("nanoclaw-bundle_*.bb"))
    bundle = bundles[0].read_text() if bundles else ""
    bbappend = (LAYER / "dynamic-layers/rauc/recipes-core/rauc/rauc-conf.bbappend").read_text()
    post_image = (BR / "board/nanoclaw/post-image.sh").read_text()
    br_compat = [(bd.key, (BR / f"board/nanoclaw/rauc/system-{bd.key}.conf").read_text())
                 for bd in layout.boards if bd.buildroot_defconfig]
    r.check("RAUC compatible: bundle == system.conf (Yocto nanoclaw-${MACHINE}, Buildroot nanoclaw-<board>)",
            bb_var(bundle, "RAUC_BUNDLE_COMPATIBLE") == "nanoclaw-${MACHINE}"
            and "/nanoclaw-${MACHINE}/" in bbappend
            and "compatible=nanoclaw-${BOARD}" in post_image
            and all(f"compatible=nanoclaw-{k}\n" in t for k, t in br_compat),
            "compatible strings disagree")

    print(f"consistency: {r.passed} passed, {r.failed} failed, {r.skipped} skipped")
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main("--release" in sys.argv[1:]))
