"""Tests for the packaging tools: each linter/check must fail on the defect it exists for.

Run with the packaging venv (BitBake's `bb` comes from it):
    packaging/.venv/bin/python -m unittest discover -s packaging/tests -v
"""

from __future__ import annotations

import contextlib
import io
import shutil
import sys
import tempfile
import textwrap
import unittest
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[1] / "tools"
sys.path.insert(0, str(TOOLS))

import br_lint  # noqa: E402
import consistency  # noqa: E402
import gen  # noqa: E402

REPO = gen.REPO

try:
    import bb_parse  # noqa: E402
except ImportError:  # plain python3 without the venv
    bb_parse = None


def quiet(fn, *args, **kw):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = fn(*args, **kw)
    return rc, buf.getvalue()


class CratesInc(unittest.TestCase):
    LOCK = textwrap.dedent('''\
        version = 4

        [[package]]
        name = "app"
        version = "0.1.0"
        dependencies = ["libc"]

        [[package]]
        name = "libc"
        version = "0.2.1"
        source = "registry+https://github.com/rust-lang/crates.io-index"
        checksum = "aaaa"

        [[package]]
        name = "from-git"
        version = "1.0.0"
        source = "git+https://example.invalid/x.git#abc"

        [[package]]
        name = "serde"
        version = "1.0.0"
        source = "registry+https://github.com/rust-lang/crates.io-index"
        checksum = "bbbb"
        ''')

    def test_format_matches_update_crates_output(self):
        # The exact layout oe-core's cargo-update-recipe-crates writes for one Cargo.lock:
        # crates.io packages only, in lock order, then a blank line and the checksums.
        want = ('# from Cargo.lock\n'
                'SRC_URI += " \\\n'
                '    crate://crates.io/libc/0.2.1 \\\n'
                '    crate://crates.io/serde/1.0.0 \\\n'
                '"\n'
                '\n'
                'SRC_URI[libc-0.2.1.sha256sum] = "aaaa"\n'
                'SRC_URI[serde-1.0.0.sha256sum] = "bbbb"\n')
        self.assertEqual(gen.crates_inc_for_lock(self.LOCK, "Cargo.lock"), want)

    def test_lock_without_crates_io_packages_gives_nothing(self):
        self.assertIsNone(gen.crates_inc_for_lock('version = 4\n[[package]]\nname = "a"\nversion = "1"\n',
                                                  "Cargo.lock"))

    def test_repository_inc_is_current(self):
        inc = REPO / "meta-nanoclaw/recipes-nanoclaw/nanoclaw/nanoclaw-crates.inc"
        self.assertEqual(inc.read_text(), gen.crates_inc(REPO))


class Layout(unittest.TestCase):
    def layout_text(self) -> str:
        return (REPO / "packaging/layout.toml").read_text()

    def load(self, text: str) -> gen.Layout:
        with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
            f.write(text)
        try:
            return gen.load_layout(Path(f.name))
        finally:
            Path(f.name).unlink()

    def test_repository_layout_loads(self):
        lay = self.load(self.layout_text())
        self.assertEqual([p.name for p in lay.partitions], ["boot", "rootA", "rootB", "data"])

    def test_slots_of_different_size_are_rejected(self):
        text = self.layout_text().replace('name = "rootB"\nfstype = "ext4"\nlabel = ""\nsize_mib = 512',
                                          'name = "rootB"\nfstype = "ext4"\nlabel = ""\nsize_mib = 256')
        self.assertNotEqual(text, self.layout_text())
        with self.assertRaisesRegex(gen.LayoutError, "same size"):
            self.load(text)

    def test_unaligned_size_is_rejected(self):
        text = self.layout_text().replace("size_mib = 64", "size_mib = 65")
        with self.assertRaisesRegex(gen.LayoutError, "multiple of the alignment"):
            self.load(text)

    def test_wks_per_table_type(self):
        lay = self.load(self.layout_text())
        rpi = gen.wks(lay, lay.board("raspberrypi4_64"), "raspberrypi4-64")
        qemu = gen.wks(lay, lay.board("qemu_aarch64_virt"), "qemuarm64")
        self.assertIn("bootloader --ptable msdos", rpi)
        self.assertIn("--active", rpi)
        self.assertNotIn("--part-name", rpi)
        self.assertIn("--part-name rootB", qemu)
        self.assertIn("bootloader --ptable gpt", qemu)
        self.assertEqual(qemu.count("--fixed-size 512M"), 2)


class BuildrootLint(unittest.TestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp())
        self.tree = self.tmp / "br"
        shutil.copytree(gen.BR, self.tree)

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def lint(self) -> tuple[int, str]:
        return quiet(br_lint.Lint(self.tree).run)

    def edit(self, rel: str, old: str, new: str) -> None:
        p = self.tree / rel
        text = p.read_text()
        self.assertIn(old, text)
        p.write_text(text.replace(old, new, 1))

    def test_tree_is_clean(self):
        rc, out = self.lint()
        self.assertEqual(rc, 0, out)

    def test_features_only_in_build_opts(self):
        self.edit("package/nanoclaw/nanoclaw.mk",
                  "NANOCLAW_CARGO_INSTALL_OPTS += --features $(NANOCLAW_FEATURES)\n", "")
        rc, out = self.lint()
        self.assertEqual(rc, 1)
        self.assertIn("both _CARGO_BUILD_OPTS and _CARGO_INSTALL_OPTS", out)

    def test_spaces_in_define_and_braces_and_typo(self):
        self.edit("package/nanoclaw/nanoclaw.mk", "\trm -f $(TARGET_DIR)", "    rm -f ${TARGET_DIR}")
        self.edit("package/nanoclaw/nanoclaw.mk", "NANOCLAW_CARGO_ENV =", "NANOCLAW_CARGO_ENVV =\nNANOCLAWCARGO_ENV =")
        rc, out = self.lint()
        self.assertIn("expected indent with tabs", out)
        self.assertIn("use $() to delimit variables", out)
        self.assertIn("not prefixed with NANOCLAW_: NANOCLAWCARGO_ENV", out)

    def test_config_in_order_default_n_and_select_deps(self):
        self.edit("package/nanoclaw/Config.in",
                  "\tdepends on BR2_PACKAGE_LIBSECCOMP_ARCH_SUPPORTS\n", "")
        self.edit("package/nanoclaw/Config.in", "\tselect BR2_PACKAGE_SQLITE\n",
                  "\tselect BR2_PACKAGE_SQLITE\n\tdefault n\n")
        rc, out = self.lint()
        self.assertIn("attributes order", out)
        self.assertIn("'default n' is redundant", out)
        self.assertIn("selects BR2_PACKAGE_LIBSECCOMP but does not depend on "
                      "['BR2_PACKAGE_LIBSECCOMP_ARCH_SUPPORTS']", out)

    def test_hash_and_defconfig(self):
        self.edit("package/nanoclaw/nanoclaw.hash", "sha256  f8f6", "sha256  f8f")
        self.edit("configs/nanoclaw_qemu_aarch64_virt_defconfig", "BR2_DOWNLOAD_FORCE_CHECK_HASHES=y\n", "")
        self.edit("configs/nanoclaw_qemu_aarch64_virt_defconfig", "BR2_PACKAGE_NANOCLAW=y",
                  "BR2_PACKAGE_NANOCLAW=y\nBR2_PACKAGE_NANOCLAW_WHATSAP=y")
        rc, out = self.lint()
        self.assertIn("hash size does not match type", out)
        self.assertIn("missing BR2_DOWNLOAD_FORCE_CHECK_HASHES=y", out)
        self.assertIn("BR2_PACKAGE_NANOCLAW_WHATSAP is not defined", out)

    def test_package_not_sourced(self):
        self.edit("Config.in", 'source "$BR2_EXTERNAL_NANOCLAW_PATH/package/nanoclaw-runner-image/Config.in"\n', "")
        rc, out = self.lint()
        self.assertIn("does not source nanoclaw-runner-image/Config.in", out)


class Consistency(unittest.TestCase):
    FILES = ("Cargo.toml", "Cargo.lock", "LICENSE", "packaging", "meta-nanoclaw", "buildroot-external",
             "runner-rootfs")

    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp())
        for f in self.FILES:
            src = REPO / f
            if src.is_dir():
                shutil.copytree(src, self.tmp / f, ignore=shutil.ignore_patterns(".venv", ".cache"))
            else:
                shutil.copy(src, self.tmp / f)

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def run_check(self, release=False):
        return quiet(consistency.main, release, self.tmp)

    def test_copy_is_consistent_and_release_mode_is_stricter(self):
        rc, out = self.run_check()
        self.assertEqual(rc, 0, out)
        self.assertIn("skip  SRCREV", out)  # no git checkout in the copy
        rc, out = self.run_check(release=True)
        self.assertEqual(rc, 1)
        self.assertIn("(release mode)", out)

    def test_version_bump_without_recipes_fails(self):
        p = self.tmp / "Cargo.toml"
        p.write_text(p.read_text().replace('version = "0.1.0"', 'version = "0.2.0"', 1))
        rc, out = self.run_check()
        self.assertEqual(rc, 1)
        self.assertIn("FAIL  Yocto recipe versions", out)
        self.assertIn("FAIL  Buildroot NANOCLAW_VERSION", out)

    def test_lock_change_without_regeneration_fails_then_regeneration_fixes_it(self):
        lock = self.tmp / "Cargo.lock"
        text = lock.read_text()
        i = text.index('checksum = "') + len('checksum = "')
        lock.write_text(text[:i] + ("0" if text[i] != "0" else "1") + text[i + 1:])
        rc, out = self.run_check()
        self.assertEqual(rc, 1)
        self.assertIn("nanoclaw-crates.inc", out)
        for path, content in gen.outputs(self.tmp).items():
            path.write_text(content)
        rc, out = self.run_check()
        self.assertEqual(rc, 0, out)

    def test_license_change_fails(self):
        p = self.tmp / "LICENSE"
        p.write_text(p.read_text().replace("2026", "2027"))
        rc, out = self.run_check()
        self.assertIn("FAIL  LIC_FILES_CHKSUM", out)
        self.assertIn("FAIL  nanoclaw.hash LICENSE", out)

    def test_runner_manifest_checksums_flow_into_both_trees(self):
        # Only the checksum manifest under test; the package pins in `manifest` carry no image sums.
        (self.tmp / "runner-rootfs").mkdir(exist_ok=True)
        (self.tmp / "runner-rootfs/manifest").unlink(missing_ok=True)
        a, x = "a" * 64, "b" * 64
        (self.tmp / "runner-rootfs/manifest.toml").write_text(
            f'[image.aarch64]\nsha256 = "{a}"\n\n[image.x86_64]\nsha256 = "{x}"\n')
        rc, out = self.run_check()
        self.assertEqual(rc, 1)  # generated checksum files are now stale
        for path, content in gen.outputs(self.tmp).items():
            path.write_text(content)
        rc, out = self.run_check()
        self.assertEqual(rc, 0, out)
        self.assertIn("ok    runner image checksums", out)
        inc = (self.tmp / "meta-nanoclaw/recipes-nanoclaw/nanoclaw-runner-image/"
               "nanoclaw-runner-image-checksums.inc").read_text()
        self.assertIn(f'SRC_URI[runner-aarch64.sha256sum] = "{a}"', inc)
        br_hash = (self.tmp / "buildroot-external/package/nanoclaw-runner-image/"
                   "nanoclaw-runner-image.hash").read_text()
        self.assertIn(f"sha256  {x}  nanoclaw-runner-0.1.0-x86_64.squashfs", br_hash)

    def test_kernel_option_lists_must_agree(self):
        p = self.tmp / "meta-nanoclaw/recipes-kernel/linux/files/nanoclaw.cfg"
        p.write_text(p.read_text().replace("CONFIG_VETH=y\n", ""))
        rc, out = self.run_check()
        self.assertIn("only Buildroot: ['CONFIG_VETH']", out)


@unittest.skipIf(bb_parse is None, "BitBake's bb library missing: run with packaging/.venv/bin/python")
class BitBakeParse(unittest.TestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp())
        self.layer = self.tmp / "meta-nanoclaw"
        shutil.copytree(gen.LAYER, self.layer)
        self.recipe = self.layer / "recipes-nanoclaw/nanoclaw/nanoclaw_0.1.0.bb"

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def parse(self):
        return quiet(bb_parse.main, self.layer)

    def test_layer_parses(self):
        rc, out = self.parse()
        self.assertEqual(rc, 0, out)

    def test_broken_inline_python(self):
        self.recipe.write_text(self.recipe.read_text().replace(
            "d.getVar('NANOCLAW_CARGO_FEATURES') else ''}", "d.getVar('NANOCLAW_CARGO_FEATURES') else +}"))
        rc, out = self.parse()
        self.assertEqual(rc, 1)
        self.assertIn("nanoclaw_0.1.0.bb", out)

    def test_shell_syntax_error_in_task(self):
        self.recipe.write_text(self.recipe.read_text().replace(
            "    install -d ${D}${docdir}/${BPN}\n", "    if [ -d ${D} ]; then\n"))
        rc, out = self.parse()
        self.assertEqual(rc, 1)
        self.assertIn("shell function do_install", out)

    def test_missing_crates_inc(self):
        (self.recipe.parent / "nanoclaw-crates.inc").unlink()
        rc, out = self.parse()
        self.assertEqual(rc, 1)
        self.assertIn("Could not include required file", out)

    def test_old_override_syntax(self):
        self.recipe.write_text(self.recipe.read_text() + 'DEPENDS_append = " busybox"\n')
        rc, out = self.parse()
        self.assertEqual(rc, 1)
        self.assertIn("old override syntax", out)

    def test_recipe_outside_bbfiles(self):
        (self.layer / "misc").mkdir()
        shutil.copy(self.layer / "recipes-core/images/nanoclaw-image.bb", self.layer / "misc/x_1.0.bb")
        rc, out = self.parse()
        self.assertIn("misc/x_1.0.bb is matched by no BBFILES pattern", out)

    def test_wic_dir_at_layer_top(self):
        (self.layer / "wic").mkdir()
        rc, out = self.parse()
        self.assertIn("top-level wic/ directory", out)


if __name__ == "__main__":
    unittest.main()
