################################################################################
#
# nanoclaw-runner-image
#
################################################################################

NANOCLAW_RUNNER_IMAGE_VERSION = 0.1.0
NANOCLAW_RUNNER_IMAGE_SITE = https://example.invalid/nanoclaw/releases/download/v$(NANOCLAW_RUNNER_IMAGE_VERSION)
NANOCLAW_RUNNER_IMAGE_SOURCE = nanoclaw-runner-$(NANOCLAW_RUNNER_IMAGE_VERSION)-$(call qstrip,$(BR2_ARCH)).squashfs
# nanoclaw-runner is MIT; the busybox inside is GPL-2.0 (source: the Debian
# package named in runner-rootfs/manifest*). The texts are inside the image.
NANOCLAW_RUNNER_IMAGE_LICENSE = MIT (nanoclaw-runner), GPL-2.0 (busybox)

# A single squashfs file, not an archive.
define NANOCLAW_RUNNER_IMAGE_EXTRACT_CMDS
	cp $(NANOCLAW_RUNNER_IMAGE_DL_DIR)/$(NANOCLAW_RUNNER_IMAGE_SOURCE) \
		$(@D)/runner.squashfs
endef

define NANOCLAW_RUNNER_IMAGE_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0644 $(@D)/runner.squashfs \
		$(TARGET_DIR)/usr/share/nanoclaw/runner.squashfs
endef

$(eval $(generic-package))
