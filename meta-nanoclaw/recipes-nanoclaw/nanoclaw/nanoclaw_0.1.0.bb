SUMMARY = "Embedded-first personal-assistant host with sandboxed agent runs"
DESCRIPTION = "nanoclaw receives chat messages, stores them in SQLite, queues them per group \
               and runs each agent turn inside a locked-down OCI container (youki \
               libcontainer) with nftables default-deny egress."
HOMEPAGE = "https://example.invalid/nanoclaw"
BUGTRACKER = "https://example.invalid/nanoclaw/issues"
SECTION = "net"
CVE_PRODUCT = "nanoclaw"
LICENSE = "MIT"
# With the WhatsApp channel the binary also contains AGPL-3.0-only code (docs/whatsapp.md, "Licence").
LICENSE .= "${@' & AGPL-3.0-only' if 'whatsapp' in (d.getVar('NANOCLAW_CARGO_FEATURES') or '').split(',') else ''}"
LIC_FILES_CHKSUM = "file://LICENSE;md5=c6526fd3b9867d03041d382e337340ab"

DEPENDS += "libseccomp sqlite3"

SRC_URI = "git://example.invalid/nanoclaw.git;protocol=https;branch=main;tag=v${PV}"
# The commit tagged v${PV}: set in the release commit (README.md, "Releasing"); packaging/check.sh
# compares it with the tag whenever the tag exists, and otherwise checks that it is a commit of
# this repository.
SRCREV = "090241be75f14b0af912157c570c93788eb4ade2"

# Generated from Cargo.lock by scripts/update-packaging.py (the output of
# `bitbake -c update_crates nanoclaw`); cargo builds --frozen, so it must match Cargo.lock.
require ${BPN}-crates.inc

inherit cargo cargo-update-recipe-crates pkgconfig systemd useradd

# libsqlite3-sys links the distro SQLite through pkg-config when this is set, even though
# Cargo.toml enables its `bundled` feature (one SQLite on the device, patched by the distro).
export LIBSQLITE3_SYS_USE_PKG_CONFIG = "1"

# oe-core has no CARGO_FEATURES: features reach `cargo build` through CARGO_BUILD_FLAGS.
# Comma-separated, e.g. NANOCLAW_CARGO_FEATURES = "whatsapp" in local.conf.
NANOCLAW_CARGO_FEATURES ??= ""
CARGO_BUILD_FLAGS += "${@'--features ' + d.getVar('NANOCLAW_CARGO_FEATURES') if d.getVar('NANOCLAW_CARGO_FEATURES') else ''}"

do_install:append() {
    install -d ${D}${systemd_system_unitdir}
    install -m 0644 ${S}/packaging/systemd/nanoclaw.service ${D}${systemd_system_unitdir}/
    install -d ${D}${nonarch_libdir}/tmpfiles.d
    install -m 0644 ${S}/packaging/systemd/nanoclaw.tmpfiles ${D}${nonarch_libdir}/tmpfiles.d/nanoclaw.conf

    # Read-only appliance root: data partition mount, unit drop-in, credential on /data.
    install -m 0644 ${S}/packaging/systemd/data.mount ${D}${systemd_system_unitdir}/
    install -d ${D}${systemd_system_unitdir}/nanoclaw.service.d
    install -m 0644 ${S}/packaging/systemd/nanoclaw.service.d/10-appliance.conf \
        ${D}${systemd_system_unitdir}/nanoclaw.service.d/
    install -d ${D}${sysconfdir}/tmpfiles.d ${D}${sysconfdir}/nanoclaw
    install -m 0644 ${S}/packaging/systemd/nanoclaw-appliance.tmpfiles ${D}${sysconfdir}/tmpfiles.d/nanoclaw.conf
    ln -s /data/credstore/nanoclaw-model ${D}${sysconfdir}/nanoclaw/credentials

    install -d ${D}${docdir}/${BPN}
    install -m 0644 ${S}/docs/packaging.md ${D}${docdir}/${BPN}/
}

# nanoclaw: the host binary. -service: its unit and tmpfiles entry (own subpackage, as in
# meta-rauc). -appliance: what a read-only A/B image adds. -runner: the in-container runner
# binary, which belongs in the runner image (nanoclaw-runner-image), not on the host.
PACKAGES =+ "${PN}-service ${PN}-appliance ${PN}-runner"
FILES:${PN}-service += "${systemd_system_unitdir}/nanoclaw.service ${nonarch_libdir}/tmpfiles.d/nanoclaw.conf"
FILES:${PN}-appliance += "${systemd_system_unitdir}/data.mount \
    ${systemd_system_unitdir}/nanoclaw.service.d \
    ${sysconfdir}/tmpfiles.d/nanoclaw.conf \
    ${sysconfdir}/nanoclaw/credentials \
"
FILES:${PN}-runner += "${bindir}/nanoclaw-runner"
ALLOW_EMPTY:${PN}-runner = "1"

SYSTEMD_PACKAGES = "${PN}-service ${PN}-appliance"
SYSTEMD_SERVICE:${PN}-service = "nanoclaw.service"
SYSTEMD_SERVICE:${PN}-appliance = "data.mount"

RDEPENDS:${PN}-service += "${PN}"
RDEPENDS:${PN}-appliance += "${PN}-service"
# `ip netns` and veth links (net::netns) and `nft -j` at run time (nftables crate): meta-networking's nftables has json in its default
# PACKAGECONFIG. Modules are recommendations: built-in options need no package.
RDEPENDS:${PN} += "iproute2-ip nftables"
RRECOMMENDS:${PN} += "${PN}-service \
    kernel-module-nf-tables \
    kernel-module-nft-ct \
    kernel-module-veth \
    kernel-module-squashfs \
    kernel-module-loop \
"

# Reserve the uid/gid agent runs use inside their containers (1000, the original NanoClaw
# runner's uid) so no login account on the device owns the files agents write in group
# folders. No home, no shell: nothing ever logs in or runs as it on the host.
USERADD_PACKAGES = "${PN}"
GROUPADD_PARAM:${PN} = "--system --gid 1000 nanoclaw-runner"
USERADD_PARAM:${PN} = "--system --uid 1000 --gid nanoclaw-runner --home-dir /nonexistent --no-create-home --shell ${base_sbindir}/nologin nanoclaw-runner"
