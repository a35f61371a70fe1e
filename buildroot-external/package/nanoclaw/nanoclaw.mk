################################################################################
#
# nanoclaw
#
################################################################################

NANOCLAW_VERSION = v0.1.0
NANOCLAW_SITE = https://example.invalid/nanoclaw.git
NANOCLAW_SITE_METHOD = git
NANOCLAW_LICENSE = MIT
NANOCLAW_LICENSE_FILES = LICENSE
NANOCLAW_DEPENDENCIES = host-pkgconf libseccomp sqlite

# libsqlite3-sys links Buildroot's sqlite through pkg-config when this is
# set, even though Cargo.toml enables its bundled copy.
NANOCLAW_CARGO_ENV = LIBSQLITE3_SYS_USE_PKG_CONFIG=1

# cargo install rebuilds, so features go to both build and install.
NANOCLAW_FEATURES = $(call qstrip,$(BR2_PACKAGE_NANOCLAW_CARGO_FEATURES))
ifneq ($(NANOCLAW_FEATURES),)
NANOCLAW_CARGO_BUILD_OPTS += --features $(NANOCLAW_FEATURES)
NANOCLAW_CARGO_INSTALL_OPTS += --features $(NANOCLAW_FEATURES)
endif
# The WhatsApp channel links AGPL-3.0-only code (docs/whatsapp.md, "Licence").
ifneq ($(filter whatsapp,$(subst $(comma), ,$(NANOCLAW_FEATURES))),)
NANOCLAW_LICENSE += , AGPL-3.0-only (WhatsApp channel)
endif

# cargo install --bins also installs nanoclaw-runner, which only belongs in
# the runner image (nanoclaw-runner-image).
define NANOCLAW_INSTALL_TMPFILES
	rm -f $(TARGET_DIR)/usr/bin/nanoclaw-runner
	$(INSTALL) -D -m 0644 $(@D)/packaging/systemd/nanoclaw.tmpfiles \
		$(TARGET_DIR)/usr/lib/tmpfiles.d/nanoclaw.conf
endef
NANOCLAW_POST_INSTALL_TARGET_HOOKS += NANOCLAW_INSTALL_TMPFILES

ifeq ($(BR2_PACKAGE_NANOCLAW_APPLIANCE),y)
define NANOCLAW_INSTALL_APPLIANCE
	$(INSTALL) -D -m 0644 $(@D)/packaging/systemd/data.mount \
		$(TARGET_DIR)/usr/lib/systemd/system/data.mount
	$(INSTALL) -D -m 0644 $(@D)/packaging/systemd/nanoclaw.service.d/10-appliance.conf \
		$(TARGET_DIR)/usr/lib/systemd/system/nanoclaw.service.d/10-appliance.conf
	$(INSTALL) -D -m 0644 $(@D)/packaging/systemd/nanoclaw-appliance.tmpfiles \
		$(TARGET_DIR)/etc/tmpfiles.d/nanoclaw.conf
	mkdir -p $(TARGET_DIR)/data $(TARGET_DIR)/etc/nanoclaw
	ln -sf /data/credstore/nanoclaw-model $(TARGET_DIR)/etc/nanoclaw/credentials
endef
NANOCLAW_POST_INSTALL_TARGET_HOOKS += NANOCLAW_INSTALL_APPLIANCE
endif

define NANOCLAW_INSTALL_INIT_SYSTEMD
	$(INSTALL) -D -m 0644 $(@D)/packaging/systemd/nanoclaw.service \
		$(TARGET_DIR)/usr/lib/systemd/system/nanoclaw.service
endef

# Reserves uid/gid 1000, which agent runs use inside their containers, so
# no login account owns the files agents write in group folders.
define NANOCLAW_USERS
	nanoclaw-runner 1000 nanoclaw-runner 1000 * - - - nanoclaw agent runs
endef

# Kept equal to meta-nanoclaw's recipes-kernel/linux/files/nanoclaw.cfg
# (packaging/check.sh compares the lists).
define NANOCLAW_LINUX_CONFIG_FIXUPS
	$(call KCONFIG_ENABLE_OPT,CONFIG_NAMESPACES)
	$(call KCONFIG_ENABLE_OPT,CONFIG_UTS_NS)
	$(call KCONFIG_ENABLE_OPT,CONFIG_IPC_NS)
	$(call KCONFIG_ENABLE_OPT,CONFIG_PID_NS)
	$(call KCONFIG_ENABLE_OPT,CONFIG_NET_NS)
	$(call KCONFIG_ENABLE_OPT,CONFIG_USER_NS)
	$(call KCONFIG_ENABLE_OPT,CONFIG_CGROUPS)
	$(call KCONFIG_ENABLE_OPT,CONFIG_MEMCG)
	$(call KCONFIG_ENABLE_OPT,CONFIG_CGROUP_PIDS)
	$(call KCONFIG_ENABLE_OPT,CONFIG_CGROUP_SCHED)
	$(call KCONFIG_ENABLE_OPT,CONFIG_CFS_BANDWIDTH)
	$(call KCONFIG_ENABLE_OPT,CONFIG_CGROUP_FREEZER)
	$(call KCONFIG_ENABLE_OPT,CONFIG_SECCOMP)
	$(call KCONFIG_ENABLE_OPT,CONFIG_SECCOMP_FILTER)
	$(call KCONFIG_ENABLE_OPT,CONFIG_POSIX_MQUEUE)
	$(call KCONFIG_ENABLE_OPT,CONFIG_VETH)
	$(call KCONFIG_ENABLE_OPT,CONFIG_NF_TABLES)
	$(call KCONFIG_ENABLE_OPT,CONFIG_NF_TABLES_INET)
	$(call KCONFIG_ENABLE_OPT,CONFIG_NF_CONNTRACK)
	$(call KCONFIG_ENABLE_OPT,CONFIG_NFT_CT)
	$(call KCONFIG_ENABLE_OPT,CONFIG_NFT_LOG)
	$(call KCONFIG_ENABLE_OPT,CONFIG_NFT_LIMIT)
	$(call KCONFIG_ENABLE_OPT,CONFIG_NFT_REJECT)
	$(call KCONFIG_ENABLE_OPT,CONFIG_NFT_REJECT_INET)
	$(call KCONFIG_ENABLE_OPT,CONFIG_BLK_DEV_LOOP)
	$(call KCONFIG_ENABLE_OPT,CONFIG_SQUASHFS)
	$(call KCONFIG_ENABLE_OPT,CONFIG_SQUASHFS_XZ)
	$(call KCONFIG_ENABLE_OPT,CONFIG_SQUASHFS_ZSTD)
	$(call KCONFIG_ENABLE_OPT,CONFIG_EXT4_FS)
	$(call KCONFIG_ENABLE_OPT,CONFIG_VFAT_FS)
	$(call KCONFIG_ENABLE_OPT,CONFIG_TMPFS)
	$(call KCONFIG_ENABLE_OPT,CONFIG_INOTIFY_USER)
endef

$(eval $(cargo-package))
