# shellcheck shell=dash
# runner-image: the read-only runner image configured as runs.image mounts (loop, read-only) and
# holds nanoclaw-runner.
IMG=/usr/share/nanoclaw/runner.squashfs

runner_image_mount() {
  [ -f "$IMG" ] || { detail "$IMG not in the root filesystem"; return 1; }
  mkdir -p /run/ncq/runner
  mount -o loop,ro "$IMG" /run/ncq/runner || { detail "mount -o loop,ro $IMG failed"; return 1; }
  r=$(find /run/ncq/runner -name nanoclaw-runner -type f | head -1)
  size=$(stat -c %s "$IMG")
  umount /run/ncq/runner
  [ -n "$r" ] || { detail "no nanoclaw-runner in the image"; return 1; }
  detail "$IMG ($size bytes) mounts read-only, runner at ${r#/run/ncq/runner}"
}
