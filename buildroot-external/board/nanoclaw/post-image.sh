#!/usr/bin/env bash
# nanoclaw post-image: the SD card image (genimage, layout from packaging/layout.toml)
# and, with RAUC, a signed update bundle of the root filesystem.
# Called by Buildroot as: post-image.sh BINARIES_DIR BOARD.
set -euo pipefail

BOARD_DIR="$(dirname "$0")"
BOARD="$2"
TEMPLATE="${BOARD_DIR}/genimage-${BOARD}.cfg.in"
GENIMAGE_CFG="${BINARIES_DIR}/genimage-${BOARD}.cfg"
GENIMAGE_TMP="${BUILD_DIR}/genimage.tmp"

if [ ! -f "${TEMPLATE}" ]; then
	echo "nanoclaw: no genimage template for board '${BOARD}' (${TEMPLATE})" >&2
	exit 1
fi

# Files for the boot partition: Raspberry Pi firmware, device trees, U-Boot and
# its script where the board has them. The kernel stays in each root slot.
files=()
if [ -d "${BINARIES_DIR}/rpi-firmware" ]; then
	for f in "${BINARIES_DIR}"/rpi-firmware/*; do
		files+=("rpi-firmware/${f##*/}")
	done
	for f in "${BINARIES_DIR}"/*.dtb; do
		[ -e "${f}" ] && files+=("${f##*/}")
	done
fi
for f in u-boot.bin boot.scr; do
	[ -e "${BINARIES_DIR}/${f}" ] && files+=("${f}")
done

boot_files=""
for f in "${files[@]}"; do
	boot_files+="$(printf '\t\t\t"%s",' "${f}")"$'\n'
done
empty=""
[ "${#files[@]}" -eq 0 ] && empty=$'\tempty = true'
awk -v files="${boot_files%$'\n'}" -v empty="${empty}" '
	$0 == "@BOOT_FILES@" { if (files != "") print files; next }
	$0 == "@BOOT_EMPTY@" { if (empty != "") print empty; next }
	{ print }' \
	"${TEMPLATE}" > "${GENIMAGE_CFG}"

ROOTPATH_TMP="$(mktemp -d)"
trap 'rm -rf "${ROOTPATH_TMP}"' EXIT
rm -rf "${GENIMAGE_TMP}"
genimage \
	--rootpath "${ROOTPATH_TMP}" \
	--tmppath "${GENIMAGE_TMP}" \
	--inputpath "${BINARIES_DIR}" \
	--outputpath "${BINARIES_DIR}" \
	--config "${GENIMAGE_CFG}"

if [ "${BOARD}" = "qemu_aarch64_virt" ]; then
	cat > "${BINARIES_DIR}/start-qemu.sh" <<'QEMU'
#!/bin/sh
# Boots the nanoclaw SD image: kernel passed directly, root slot A (partition 2).
cd "$(dirname "$0")"
exec qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 2 -m 1024 -nographic \
	-kernel Image -append "rootwait root=/dev/vda2 ro console=ttyAMA0" \
	-drive file=sdcard.img,if=none,format=raw,id=hd0 -device virtio-blk-device,drive=hd0 \
	-netdev user,id=eth0 -device virtio-net-device,netdev=eth0 "$@"
QEMU
	chmod +x "${BINARIES_DIR}/start-qemu.sh"
fi

if grep -q '^BR2_PACKAGE_HOST_RAUC=y$' "${BR2_CONFIG}"; then
	KEYDIR="${NANOCLAW_RAUC_KEYDIR:-${BASE_DIR}/nanoclaw-rauc-dev-keys}"
	BUNDLE_DIR="${BUILD_DIR}/nanoclaw-bundle"
	rm -rf "${BUNDLE_DIR}"
	mkdir -p "${BUNDLE_DIR}"
	cp "${BINARIES_DIR}/rootfs.ext4" "${BUNDLE_DIR}/rootfs.ext4"
	version="$(sed -n 's/^NANOCLAW_VERSION = v//p' "${BR2_EXTERNAL_NANOCLAW_PATH}/package/nanoclaw/nanoclaw.mk")"
	cat > "${BUNDLE_DIR}/manifest.raucm" <<MANIFEST
[update]
compatible=nanoclaw-${BOARD}
version=${version}

[bundle]
format=verity

[image.rootfs]
filename=rootfs.ext4
MANIFEST
	rm -f "${BINARIES_DIR}/nanoclaw-${BOARD}.raucb"
	"${HOST_DIR}/bin/rauc" bundle --cert "${KEYDIR}/cert.pem" --key "${KEYDIR}/key.pem" \
		"${BUNDLE_DIR}" "${BINARIES_DIR}/nanoclaw-${BOARD}.raucb"
fi
