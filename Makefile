# Convenience targets; CI calls the scripts directly (.ci/run). See docs/cross.md and docs/testing.md.
ARCH ?= aarch64

.PHONY: cross qemu-test
# Static nanoclaw (and nanoclaw-runner when the tree has it) for $(ARCH), no Docker needed.
cross:
	scripts/cross-build.sh $(ARCH)

# The QEMU aarch64 acceptance suite (cross-builds first).
qemu-test:
	qemu-tests/run.sh
