SUMMARY = "RAUC update bundle for nanoclaw-image"
DESCRIPTION = "A verity bundle with one slot image, installed into whichever root slot \
               is not booted. Signing key and certificate come from the BSP \
               (RAUC_KEY_FILE, RAUC_CERT_FILE)."
HOMEPAGE = "https://example.invalid/nanoclaw"
BUGTRACKER = "https://example.invalid/nanoclaw/issues"
SECTION = "image"
LICENSE = "MIT"

# Nothing to fetch: bundle.bbclass collects the deployed images (hook scripts would be added
# here with SRC_URI +=).
SRC_URI = ""

inherit bundle

RAUC_BUNDLE_COMPATIBLE = "nanoclaw-${MACHINE}"
RAUC_BUNDLE_FORMAT = "verity"
RAUC_BUNDLE_SLOTS = "rootfs"
RAUC_SLOT_rootfs = "nanoclaw-image"
RAUC_SLOT_rootfs[fstype] = "ext4"
