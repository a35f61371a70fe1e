"""Build each Buildroot board's SD image with the real post-image.sh and genimage, from dummy
inputs, and check the result against packaging/layout.toml.

This runs the code path a Buildroot build runs after the root filesystem exists: template
substitution, genimage (Debian's 16, Buildroot ships 19), partition table. Inputs are a small
ext4 "rootfs" and, for the Raspberry Pi, empty firmware/U-Boot files. Then `sfdisk --json` and
`blkid` read the image back: table type, partition count, order, start alignment, sizes, types,
GPT names, the bootable flag and the filesystem labels of boot and data must be what the layout
says. RAUC bundling is skipped (no BR2_PACKAGE_HOST_RAUC in the fake .config).

Needs: genimage, dosfstools, mtools, e2fsprogs, fdisk (sfdisk), util-linux (blkid). Rootless.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen  # noqa: E402

TOOLS = ("genimage", "mkfs.vfat", "mcopy", "mdir", "mkfs.ext4", "sfdisk", "blkid")


def missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None
            and not any(Path(p, t).exists() for p in ("/sbin", "/usr/sbin"))]


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = env.get("PATH", "") + ":/sbin:/usr/sbin"
    return subprocess.run(cmd, check=True, capture_output=True, text=True, env=kw.pop("env", env), **kw)


def build_board(board: gen.Board, work: Path) -> Path:
    binaries = work / "images"
    binaries.mkdir(parents=True)
    (work / "build").mkdir()
    rootfs_src = work / "rootfs"
    (rootfs_src / "etc").mkdir(parents=True)
    (rootfs_src / "etc" / "hostname").write_text("nanoclaw\n")
    run(["mkfs.ext4", "-q", "-F", "-d", str(rootfs_src), str(binaries / "rootfs.ext4"), "16M"])
    if board.key == "raspberrypi4_64":
        (binaries / "rpi-firmware").mkdir()
        for name in ("start4.elf", "fixup4.dat", "config.txt", "cmdline.txt"):
            (binaries / "rpi-firmware" / name).write_text("dummy\n")
        for name in ("bcm2711-rpi-4-b.dtb", "u-boot.bin", "boot.scr"):
            (binaries / name).write_text("dummy\n")
    br2_config = work / ".config"
    br2_config.write_text("BR2_aarch64=y\n")
    env = dict(os.environ)
    env.update({
        "BINARIES_DIR": str(binaries), "BUILD_DIR": str(work / "build"), "BASE_DIR": str(work),
        "HOST_DIR": str(work / "host"), "BR2_CONFIG": str(br2_config),
        "BR2_EXTERNAL_NANOCLAW_PATH": str(gen.BR),
        "PATH": env.get("PATH", "") + ":/sbin:/usr/sbin",
    })
    script = gen.BR / "board" / "nanoclaw" / "post-image.sh"
    run([str(script), str(binaries), board.key], env=env)
    return binaries / "sdcard.img"


def boot_files(img: Path, layout: gen.Layout) -> set[str]:
    """Top-level names in the boot partition, read with mtools at the partition offset."""
    offset = layout.align_kib * 1024  # partition 1 starts at the first aligned offset
    out = run(["mdir", "-b", "-i", f"{img}@@{offset}", "::"], env={**os.environ, "MTOOLS_SKIP_CHECK": "1"}).stdout
    return {line.strip().removeprefix("::/") for line in out.splitlines() if line.strip()}


def check_image(layout: gen.Layout, board: gen.Board, img: Path) -> list[str]:
    errs: list[str] = []
    table = json.loads(run(["sfdisk", "--json", str(img)]).stdout)["partitiontable"]
    want_label = "gpt" if board.table == "gpt" else "dos"
    if table["label"] != want_label:
        errs.append(f"table {table['label']}, layout says {want_label}")
    parts = table.get("partitions", [])
    if len(parts) != len(layout.partitions):
        return errs + [f"{len(parts)} partitions, layout has {len(layout.partitions)}"]
    sector = table.get("sectorsize", 512)
    for i, (got, want) in enumerate(zip(parts, layout.partitions), start=1):
        tag = f"partition {i} ({want.name})"
        start_b, size_b = got["start"] * sector, got["size"] * sector
        if start_b % (layout.align_kib * 1024):
            errs.append(f"{tag}: starts at {start_b} bytes, not {layout.align_kib} KiB aligned")
        if size_b != want.size_mib * 1024 * 1024:
            errs.append(f"{tag}: {size_b} bytes, layout says {want.size_mib} MiB")
        if board.table == "gpt":
            if got["type"].lower() != want.gpt_type:
                errs.append(f"{tag}: type {got['type']}, layout says {want.gpt_type}")
            if got.get("name") != want.name:
                errs.append(f"{tag}: GPT name {got.get('name')!r}, layout says {want.name!r}")
        else:
            if int(got["type"], 16) != int(want.mbr_type, 16):
                errs.append(f"{tag}: type {got['type']}, layout says {want.mbr_type}")
            if bool(got.get("bootable", False)) != want.bootable:
                errs.append(f"{tag}: bootable={got.get('bootable', False)}, layout says {want.bootable}")
        if want.label or want.content == "rootfs":
            probe = run(["blkid", "-p", "-o", "export", "-O", str(start_b), str(img)],
                        ).stdout if want.content != "empty" or want.label else ""
            fields = dict(line.split("=", 1) for line in probe.splitlines() if "=" in line)
            fstype = {"vfat": "vfat", "ext4": "ext4"}[want.fstype]
            if fields.get("TYPE") != fstype:
                errs.append(f"{tag}: filesystem {fields.get('TYPE')}, layout says {fstype}")
            if want.label and fields.get("LABEL") != want.label:
                errs.append(f"{tag}: label {fields.get('LABEL')!r}, layout says {want.label!r}")
    return errs


def main() -> int:
    miss = missing_tools()
    if miss:
        print(f"image-check: skipping: tools not installed: {' '.join(miss)} "
              "(apt-get install genimage dosfstools mtools e2fsprogs fdisk)")
        return 0
    layout = gen.load_layout()
    failures = 0
    for board in layout.boards:
        if not board.buildroot_defconfig:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            try:
                img = build_board(board, Path(tmp))
                errs = check_image(layout, board, img)
                names = boot_files(img, layout)
                want = {"u-boot.bin", "boot.scr", "start4.elf", "config.txt", "bcm2711-rpi-4-b.dtb"} if board.key == "raspberrypi4_64" else set()
                if not want <= names:
                    errs.append(f"boot partition lacks {sorted(want - names)} (has {sorted(names)})")
            except subprocess.CalledProcessError as e:
                errs = [f"{' '.join(e.cmd)} failed: {e.stderr.strip()[-2000:]}"]
        for e in errs:
            print(f"image-check: {board.key}: {e}")
        failures += bool(errs)
        print(f"image-check: {board.key}: {'FAIL' if errs else 'ok'} "
              f"({board.table}, {len(layout.partitions)} partitions from layout.toml)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
