#!/usr/bin/env bash
# Installs what this tree's commands need on Debian 12 (idempotent; installs only what is missing).
#   scripts/setup.sh run     the README's run command: the runner image build (clang-14, llvm-14,
#                            squashfs-tools, the x86_64 musl target) and the host's own tools
#                            (nftables, iproute2)
#   scripts/setup.sh test    + everything scripts/test.sh uses: busybox-static (test rootfs), crun
#                            (sandbox benchmark), packaging-check tools, the QEMU suite's host tools
#                            and aarch64 target (qemu-tests/ci-setup.sh), cargo-fuzz
#   scripts/setup.sh ci      + rustfmt, clippy and cargo-deny (.ci/run)
# Needs root only when something is missing; otherwise it says what is missing and exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."
level=${1:-test}
case "$level" in run | test | ci) ;; *)
  echo "usage: scripts/setup.sh run|test|ci" >&2
  exit 2
  ;;
esac

# nftables, iproute2: the host's run networks (nft -j, ip netns, veth) and doctor's checks;
# squashfs-tools clang-14 llvm-14: the runner image (static musl runner, C code compiled by clang).
packages=(nftables iproute2 squashfs-tools clang-14 llvm-14)
if [ "$level" != run ]; then
  # busybox-static: test rootfs for container runs; crun: the sandbox benchmark's reference runtime;
  # systemd shellcheck genimage dosfstools mtools e2fsprogs fdisk: packaging checks (unit verify,
  # script lint, image layout read-back).
  packages+=(busybox-static crun systemd shellcheck genimage dosfstools mtools e2fsprogs fdisk)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing Debian packages: ${missing[*]} (run scripts/setup.sh $level as root)" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

rustup target list --installed | grep -qx x86_64-unknown-linux-musl ||
  rustup target add x86_64-unknown-linux-musl
[ "$level" = run ] && exit 0

# The QEMU aarch64 suite: qemu-system-arm, kmod, cpio, python3 and the aarch64 musl target.
qemu-tests/ci-setup.sh
# The fuzz smoke run: cargo-fuzz drives libFuzzer; no nightly needed (fuzz/run.sh).
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
[ "$level" = test ] && exit 0

rustup component add rustfmt clippy >/dev/null 2>&1 || true
command -v cargo-deny >/dev/null 2>&1 || cargo install --locked cargo-deny
