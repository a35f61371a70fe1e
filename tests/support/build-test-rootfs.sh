#!/bin/sh
# Build the small busybox rootfs used by the sandbox tests and `nanoclaw bench sandbox`.
#
# Usage: tests/support/build-test-rootfs.sh [OUT_DIR]   (default: target/test-rootfs)
#
# Busybox comes from Debian's `busybox-static` package: `apt-get download` + `dpkg -x` (no install
# needed); if that fails (offline CI), an installed static /bin/busybox is used instead.
# The result is cached: a second call with the same package version is a no-op. The rootfs is
# shared read-only by every run, so every mount point the sandbox uses is created here.
set -eu

here=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-"$here/target/test-rootfs"}
stamp="$out/.nanoclaw-test-rootfs"

version=$(apt-cache policy busybox-static 2>/dev/null | awk '/Candidate:/ {print $2}')
[ -n "$version" ] || version=unknown
# Bump the layout number whenever the tree below changes, so cached copies are rebuilt.
want="busybox-static $version layout-2"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "$out"
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
busybox=""
if (cd "$work" && apt-get download busybox-static >/dev/null 2>&1); then
    dpkg -x "$work"/busybox-static_*.deb "$work/x"
    busybox="$work/x/bin/busybox"
elif [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; then
    busybox=/bin/busybox
else
    echo "build-test-rootfs: cannot fetch busybox-static (apt-get download) and no static /bin/busybox" >&2
    exit 1
fi

tmp="$out.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp/bin" "$tmp/etc" "$tmp/proc" "$tmp/dev" "$tmp/sys" "$tmp/tmp" \
    "$tmp/home/node/.claude" "$tmp/app" \
    "$tmp/workspace/group" "$tmp/workspace/global" "$tmp/workspace/project" \
    "$tmp/workspace/ipc" "$tmp/workspace/extra" "$tmp/workspace/env-dir"
cp "$busybox" "$tmp/bin/busybox"
chmod 0755 "$tmp/bin/busybox"
for applet in $("$tmp/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$tmp/bin/$applet"
done
# main sees every group folder here (sandbox::mounts::PROJECT_GROUPS_MOUNT).
mkdir -p "$tmp/workspace/project/groups"
echo 'root:x:0:0:root:/root:/bin/sh' >"$tmp/etc/passwd"
echo 'node:x:1000:1000:node:/home/node:/bin/sh' >>"$tmp/etc/passwd"
echo 'root:x:0:' >"$tmp/etc/group"
echo 'node:x:1000:' >>"$tmp/etc/group"
echo 'nanoclaw-test-rootfs' >"$tmp/etc/hostname"
# Marker read by the symlink-escape test: proves a path resolved inside the image, not the host.
echo 'inside-the-image' >"$tmp/etc/nanoclaw-marker"
chmod 1777 "$tmp/tmp"
echo "$want" >"$tmp/.nanoclaw-test-rootfs"
rm -rf "$out"
mv "$tmp" "$out"
echo "$out"
