#!/usr/bin/env bash
# Host setup for scripts/cross-build.sh and qemu-tests/run.sh on Debian 12 (CI runs it as root;
# the packages can also be added to scripts/setup.sh's own list; setup.sh test calls this). Idempotent.
#   qemu-system-arm: qemu-system-aarch64   clang-14 llvm-14: cross C compiler + llvm-ar (SQLite, ring)
#   kmod: depmod/modprobe on the arm64 module tree   cpio: initramfs   e2fsprogs: mkfs.ext4 + debugfs
#   fdisk: sfdisk (GPT)   squashfs-tools: the runner image   python3: layout.toml, cargo metadata
set -euo pipefail
packages=(qemu-system-arm clang-14 llvm-14 kmod cpio e2fsprogs fdisk squashfs-tools python3)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || { echo "need root to install: ${missing[*]}" >&2; exit 1; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
rustup target list --installed | grep -qx aarch64-unknown-linux-musl || rustup target add aarch64-unknown-linux-musl
