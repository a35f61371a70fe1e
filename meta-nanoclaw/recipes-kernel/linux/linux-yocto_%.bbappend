# Kernel options nanoclaw's sandbox needs; only for DISTRO = "nanoclaw" so adding the layer
# does not change other distros' kernels. Other kernel recipes (linux-raspberrypi) take the
# same fragment: see README.md.
FILESEXTRAPATHS:prepend:nanoclaw := "${THISDIR}/files:"
SRC_URI:append:nanoclaw = " file://nanoclaw.cfg"
