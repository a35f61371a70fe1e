# nanoclaw A/B boot selection for RAUC's U-Boot backend (bootloader=uboot).
# RAUC sets BOOT_ORDER ("A B" or "B A") and resets BOOT_<slot>_LEFT after a good boot;
# each boot attempt costs one try, a slot with none left is skipped.
# Slot A is partition 2, slot B partition 3 (packaging/layout.toml). The kernel is in
# the slot's /boot, so an update replaces kernel and root filesystem together.

test -n "${BOOT_ORDER}" || setenv BOOT_ORDER "A B"
test -n "${BOOT_A_LEFT}" || setenv BOOT_A_LEFT 3
test -n "${BOOT_B_LEFT}" || setenv BOOT_B_LEFT 3

setenv nanoclaw_part
for slot in ${BOOT_ORDER}; do
	if test -z "${nanoclaw_part}"; then
		if test "${slot}" = "A" && test ${BOOT_A_LEFT} -gt 0; then
			setexpr BOOT_A_LEFT ${BOOT_A_LEFT} - 1
			setenv nanoclaw_part 2
			setenv nanoclaw_slot A
		elif test "${slot}" = "B" && test ${BOOT_B_LEFT} -gt 0; then
			setexpr BOOT_B_LEFT ${BOOT_B_LEFT} - 1
			setenv nanoclaw_part 3
			setenv nanoclaw_slot B
		fi
	fi
done

if test -z "${nanoclaw_part}"; then
	echo "nanoclaw: no slot has boot attempts left; resetting both and restarting"
	setenv BOOT_A_LEFT 3
	setenv BOOT_B_LEFT 3
	saveenv
	reset
fi
saveenv

part uuid ${devtype} ${devnum}:${nanoclaw_part} nanoclaw_rootuuid
test -n "${fdt_addr}" || setenv fdt_addr ${fdtcontroladdr}
setenv bootargs "${bootargs} root=PARTUUID=${nanoclaw_rootuuid} rootfstype=ext4 rootwait ro rauc.slot=${nanoclaw_slot}"
load ${devtype} ${devnum}:${nanoclaw_part} ${kernel_addr_r} /boot/Image
booti ${kernel_addr_r} - ${fdt_addr}
