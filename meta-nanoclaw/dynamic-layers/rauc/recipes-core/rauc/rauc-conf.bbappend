# Only for DISTRO = "nanoclaw". nanoclaw's system.conf: files/<machine>/system.conf (generated from packaging/layout.toml),
# files/system.conf for other machines. The compatible string matches nanoclaw-bundle.bb.
FILESEXTRAPATHS:prepend:nanoclaw := "${THISDIR}/files:"

SRC_URI:append:nanoclaw = " file://rauc-data.conf"

do_install:append:nanoclaw() {
    sed -i -e 's/@@NANOCLAW_RAUC_COMPATIBLE@@/nanoclaw-${MACHINE}/' ${D}${nonarch_libdir}/rauc/system.conf
    # RAUC keeps its state in data-directory=/data/rauc, on the data partition.
    install -d ${D}${systemd_system_unitdir}/rauc.service.d
    install -m 0644 ${UNPACKDIR}/rauc-data.conf ${D}${systemd_system_unitdir}/rauc.service.d/10-nanoclaw-data.conf
}

FILES:${PN}:append:nanoclaw = " ${systemd_system_unitdir}/rauc.service.d"
