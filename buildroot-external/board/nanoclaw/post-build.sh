#!/bin/sh
# nanoclaw post-build: RAUC configuration when BR2_PACKAGE_RAUC is enabled.
# Called by Buildroot as: post-build.sh TARGET_DIR BOARD (BR2_ROOTFS_POST_SCRIPT_ARGS).
set -eu

BOARD_DIR="$(dirname "$0")"
TARGET="$1"
BOARD="$2"

if ! grep -q '^BR2_PACKAGE_RAUC=y$' "${BR2_CONFIG}"; then
	exit 0
fi

SYSTEM_CONF="${BOARD_DIR}/rauc/system-${BOARD}.conf"
if [ ! -f "${SYSTEM_CONF}" ]; then
	echo "nanoclaw: no RAUC system.conf for board '${BOARD}' (${SYSTEM_CONF})" >&2
	exit 1
fi
install -D -m 0644 "${SYSTEM_CONF}" "${TARGET}/etc/rauc/system.conf"

# Keyring: the project's CA certificate, or a development CA made once per output
# directory (never for production: devices would accept bundles signed by that key).
KEYDIR="${NANOCLAW_RAUC_KEYDIR:-${BASE_DIR}/nanoclaw-rauc-dev-keys}"
if [ ! -f "${KEYDIR}/cert.pem" ] || [ ! -f "${KEYDIR}/key.pem" ]; then
	echo "nanoclaw: WARNING: creating a DEVELOPMENT RAUC signing key in ${KEYDIR}" >&2
	mkdir -p "${KEYDIR}"
	OPENSSL="${HOST_DIR}/bin/openssl"
	[ -x "${OPENSSL}" ] || OPENSSL=openssl
	"${OPENSSL}" req -x509 -newkey rsa:4096 -nodes -days 3650 \
		-subj "/O=nanoclaw development/CN=nanoclaw development bundle signer" \
		-keyout "${KEYDIR}/key.pem" -out "${KEYDIR}/cert.pem"
fi
install -D -m 0644 "${KEYDIR}/cert.pem" "${TARGET}/etc/rauc/keyring.pem"

# RAUC's U-Boot backend edits the environment that U-Boot (rpi_arm64) keeps in
# uboot.env on the boot partition, which is mounted on /uboot for that.
mkdir -p "${TARGET}/uboot"
printf '/uboot/uboot.env 0x0000 0x4000\n' > "${TARGET}/etc/fw_env.config"
mkdir -p "${TARGET}/usr/lib/systemd/system"
cat > "${TARGET}/usr/lib/systemd/system/uboot.mount" <<'UNIT'
# The boot partition (label "boot"), for RAUC's access to the U-Boot environment.
[Unit]
Description=Boot partition (U-Boot environment)
Before=local-fs.target rauc.service

[Mount]
What=/dev/disk/by-label/boot
Where=/uboot
Type=vfat
Options=noatime,nodev,nosuid,noexec,umask=0077

[Install]
WantedBy=local-fs.target
UNIT

# RAUC keeps its state in /data/rauc (data-directory), on the data partition.
mkdir -p "${TARGET}/usr/lib/systemd/system/rauc.service.d"
cat > "${TARGET}/usr/lib/systemd/system/rauc.service.d/10-nanoclaw-data.conf" <<'UNIT'
[Unit]
RequiresMountsFor=/data /uboot
UNIT
