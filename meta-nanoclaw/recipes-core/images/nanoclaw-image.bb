SUMMARY = "nanoclaw appliance image: read-only A/B root filesystem with a data partition"
DESCRIPTION = "systemd, the nanoclaw host, its runner image and configuration on a \
               read-only root. The SD card layout (boot, rootA, rootB, data) comes \
               from files/wic/nanoclaw-image[.<machine>].wks (packaging/layout.toml)."
HOMEPAGE = "https://example.invalid/nanoclaw"
BUGTRACKER = "https://example.invalid/nanoclaw/issues"
SECTION = "image"
LICENSE = "MIT"

inherit core-image

IMAGE_FEATURES += "read-only-rootfs"

IMAGE_INSTALL:append = " nanoclaw \
    nanoclaw-service \
    nanoclaw-appliance \
    nanoclaw-conf \
    nanoclaw-runner-image \
    kernel-image \
"

# ext4 first: it is the slot image RAUC bundles (RAUC_IMAGE_FSTYPE defaults to the first type).
IMAGE_FSTYPES = "ext4 wic"
# Root slots are 512 MiB (packaging/layout.toml); a bigger rootfs would not fit slot B.
IMAGE_ROOTFS_MAXSIZE = "524288"
# wic picks nanoclaw-image.${MACHINE}.wks, else nanoclaw-image.wks, from files/wic.
