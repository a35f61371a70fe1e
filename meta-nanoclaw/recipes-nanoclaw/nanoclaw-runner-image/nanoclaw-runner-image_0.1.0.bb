SUMMARY = "nanoclaw runner image: the read-only root filesystem of every agent run"
DESCRIPTION = "A squashfs with busybox (static) and the static nanoclaw-runner, built \
               reproducibly by runner-rootfs/build.sh in the nanoclaw repository and \
               published with each release. Installed where the host looks by default."
HOMEPAGE = "https://example.invalid/nanoclaw"
BUGTRACKER = "https://example.invalid/nanoclaw/issues"
SECTION = "net"
CVE_PRODUCT = "nanoclaw"
# nanoclaw-runner is MIT; busybox inside the image is GPL-2.0-only (source: Debian's busybox
# package named in runner-rootfs/manifest*).
LICENSE = "MIT & GPL-2.0-only"
# nooelint: oelint.var.licenseremotefile - a prebuilt image: its license texts are not in ${S}
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302 \
    file://${COMMON_LICENSE_DIR}/GPL-2.0-only;md5=801f80980d171dd6425610833a22dbe6 \
"

# Where release assets live. For an image built locally with
# `runner-rootfs/build.sh --arch <arch> --out DIR/nanoclaw-runner-${PV}-<arch>.squashfs`,
# set NANOCLAW_RELEASE_URI = "file://DIR" (local files are not checksummed by bitbake).
NANOCLAW_RELEASE_URI ??= "https://example.invalid/nanoclaw/releases/download/v${PV}"
NANOCLAW_RUNNER_ARCH = "${TARGET_ARCH}"
COMPATIBLE_HOST = "(aarch64|x86_64).*-linux"

SRC_URI = "${NANOCLAW_RELEASE_URI}/nanoclaw-runner-${PV}-${NANOCLAW_RUNNER_ARCH}.squashfs;name=runner-${NANOCLAW_RUNNER_ARCH};unpack=0"

# sha256 per arch, generated from runner-rootfs/manifest* by scripts/update-packaging.py.
require ${BPN}-checksums.inc

S = "${UNPACKDIR}"

INHIBIT_DEFAULT_DEPS = "1"
do_configure[noexec] = "1"
do_compile[noexec] = "1"

do_install() {
    install -d ${D}${datadir}/nanoclaw
    install -m 0644 ${UNPACKDIR}/nanoclaw-runner-${PV}-${NANOCLAW_RUNNER_ARCH}.squashfs \
        ${D}${datadir}/nanoclaw/runner.squashfs
}

FILES:${PN} += "${datadir}/nanoclaw/runner.squashfs"
