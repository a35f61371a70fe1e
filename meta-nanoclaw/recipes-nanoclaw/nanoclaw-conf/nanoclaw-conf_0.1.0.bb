SUMMARY = "nanoclaw configuration for an appliance image"
DESCRIPTION = "Installs /etc/nanoclaw/config.toml and the mount allowlist. The example \
               config puts data_dir on the data partition (/data/nanoclaw), because a \
               read-only root keeps /var/lib on a tmpfs."
HOMEPAGE = "https://example.invalid/nanoclaw"
BUGTRACKER = "https://example.invalid/nanoclaw/issues"
SECTION = "net"
LICENSE = "MIT"
# nooelint: oelint.var.licenseremotefile - configuration files, licensed like the layer
LIC_FILES_CHKSUM = "file://${COREBASE}/meta/COPYING.MIT;md5=3da9cfbcb788c80a0384361b4de20420"

# A BSP replaces these with its own files (FILESEXTRAPATHS in a bbappend, or other names).
NANOCLAW_CONFIG_FILE ??= "config.toml"
NANOCLAW_ALLOWLIST_FILE ??= "mount-allowlist.json"

SRC_URI = "file://${NANOCLAW_CONFIG_FILE} \
    file://${NANOCLAW_ALLOWLIST_FILE} \
"

S = "${UNPACKDIR}"

INHIBIT_DEFAULT_DEPS = "1"
PACKAGE_ARCH = "${MACHINE_ARCH}"
do_configure[noexec] = "1"
do_compile[noexec] = "1"

do_install() {
    if grep -q '^# nanoclaw-conf example' ${UNPACKDIR}/${NANOCLAW_CONFIG_FILE}; then
        bbwarn "nanoclaw-conf: installing the layer's example config.toml; set NANOCLAW_CONFIG_FILE to your own"
    fi
    install -d ${D}${sysconfdir}/nanoclaw
    install -m 0644 ${UNPACKDIR}/${NANOCLAW_CONFIG_FILE} ${D}${sysconfdir}/nanoclaw/config.toml
    install -m 0644 ${UNPACKDIR}/${NANOCLAW_ALLOWLIST_FILE} ${D}${sysconfdir}/nanoclaw/mount-allowlist.json
}

CONFFILES:${PN} = "${sysconfdir}/nanoclaw/config.toml ${sysconfdir}/nanoclaw/mount-allowlist.json"
