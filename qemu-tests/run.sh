#!/usr/bin/env bash
# nanoclaw's QEMU aarch64 acceptance suite: from nothing to one PASS/FAIL line per scenario and an
# exit code (0 = every required scenario passed, 1 = one failed, 2 = the suite could not run).
#
#   qemu-tests/run.sh            (docs/testing.md: BSP use with your own kernel, initramfs, disk)
#
# 1. cross-builds the static aarch64 nanoclaw (scripts/cross-build.sh) and, when the tree has it,
#    the runner image (runner-rootfs/build.sh);
# 2. fetches the pinned Debian arm64 kernel, busybox and nftables (scripts/debs.sh, sha256 from
#    scripts/debs.lock, cached under .cache/);
# 3. builds an initramfs (busybox + boot modules + guest/init), a system disk laid out as
#    packaging/layout.toml says (rootA = a root filesystem with nanoclaw, nft and the modules;
#    data = fresh ext4), and per boot a control disk (tar: guest scripts, plan, inputs);
# 4. boots qemu-system-aarch64 -M virt -cpu cortex-a72 once per boot of the plan (scenarios.conf);
#    the guest reports over the serial console (NCQ-* markers) and into /data/ncq on the data
#    partition, which the host reads back with debugfs;
# 5. never hangs: a guest silent for NCQ_SILENCE_TIMEOUT or running past NCQ_BOOT_TIMEOUT is killed
#    and reported with its last console lines; each guest phase has NCQ_PHASE_TIMEOUT; boots that
#    would start after NCQ_TOTAL_TIMEOUT are not started (their phases fail as "not run").
#
# Environment (all optional):
#   NCQ_KERNEL=Image  NCQ_MODULES=DIR|none  NCQ_INITRD=file  NCQ_DISK=img  NCQ_NANOCLAW=aarch64-binary
#   NCQ_RUNNER_IMAGE=squashfs  NCQ_SCENARIOS="doctor power-cut"  NCQ_WORK=dir (target/qemu-tests)
#   NCQ_BOOT_TIMEOUT=600  NCQ_SILENCE_TIMEOUT=60  NCQ_PHASE_TIMEOUT=120  NCQ_TOTAL_TIMEOUT=1200
#   NCQ_CPU=cortex-a72
#   NCQ_SMP=2  NCQ_MEM=1024  NCQ_CUT=quit|system_reset  NCQ_CUT_AFTER_ACKS=150  NCQ_APPEND="..."
#   NCQ_PROFILE=release  NCQ_LAYOUT=packaging/layout.toml  NCQ_SELFTEST=hang-host|silent-guest
#   NCQ_FAKE_API=host-binary (default: cargo build --example fake_api)
#
# Scenarios with a script in qemu-tests/fake-api/<name>.json (round-trip, oom, egress) talk to a fake
# Messages API on this machine (examples/fake_api.rs, started here, killed on exit); the guest gets
# a virtio NIC on QEMU user networking and reaches it at 10.0.2.2. After the boot, host-check.py
# checks their database rows on the data partition and what the fake API saw.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
CACHE=${NANOCLAW_CACHE:-$ROOT/.cache}
W=${NCQ_WORK:-$ROOT/target/qemu-tests}
BOOT_TIMEOUT=${NCQ_BOOT_TIMEOUT:-600}
SILENCE_TIMEOUT=${NCQ_SILENCE_TIMEOUT:-60}
PHASE_TIMEOUT=${NCQ_PHASE_TIMEOUT:-120}
TOTAL_TIMEOUT=${NCQ_TOTAL_TIMEOUT:-1200}
CUT=${NCQ_CUT:-quit}
CUT_AFTER_ACKS=${NCQ_CUT_AFTER_ACKS:-150}
SELFTEST=${NCQ_SELFTEST:-}
T0=$EPOCHREALTIME

el() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}'; }
log() { echo "[+$(el "$T0")s] $*" >&2; }
die() { echo "qemu-tests: ERROR: $*"; echo "qemu-tests: total $(el "$T0")s"; exit 2; }

trap 'echo "qemu-tests: ERROR: internal failure at run.sh line $LINENO: $BASH_COMMAND"; exit 2' ERR
FAKE_PID=""
trap '[ -z "$FAKE_PID" ] || kill "$FAKE_PID" 2>/dev/null || true' EXIT

case ${1:-} in
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) die "no arguments are taken (configure with NCQ_* variables; see --help)" ;;
esac
case $CUT in quit|system_reset) ;; *) die "NCQ_CUT must be quit or system_reset" ;; esac
case $SELFTEST in ""|hang-host|silent-guest) ;; *) die "NCQ_SELFTEST must be hang-host or silent-guest" ;; esac

# ------------------------------------------------------------------ host tools
missing=""
for t in qemu-system-aarch64:qemu-system-arm cpio:cpio depmod:kmod modprobe:kmod mkfs.ext4:e2fsprogs \
         debugfs:e2fsprogs sfdisk:fdisk dpkg-deb:dpkg python3:python3 gzip:gzip timeout:coreutils; do
  command -v "${t%%:*}" >/dev/null || PATH=$PATH:/usr/sbin:/sbin command -v "${t%%:*}" >/dev/null || missing="$missing ${t#*:}"
done
export PATH=$PATH:/usr/sbin:/sbin
[ -z "$missing" ] || die "missing host tools; Debian: apt-get install$(echo "$missing" | tr ' ' '\n' | sort -u | tr '\n' ' ')"
mkdir -p "$W" "$CACHE"
rm -rf "$W/in" "$W"/console-* "$W"/ctl-*; mkdir -p "$W/in"
STAGE_T=$EPOCHREALTIME

# ------------------------------------------------------------------ 1. binaries + runner image
NANOCLAW_BIN=""
RUNNER_BIN=""
if [ "$SELFTEST" = hang-host ]; then
  # Self-test: a "host" that never answers. The suite must fail with a clear reason, in time.
  NANOCLAW_BIN=$W/selftest-hang-host
  printf '#!/bin/sh\n# qemu-tests self-test: a nanoclaw that never answers\nexec sleep 2147483647\n' > "$NANOCLAW_BIN"
  chmod 755 "$NANOCLAW_BIN"
  log "self-test hang-host: nanoclaw replaced by a program that never answers"
elif [ -n "${NCQ_DISK:-}" ]; then
  log "NCQ_DISK: nanoclaw and the runner image come from that disk's root filesystem"
elif [ -n "${NCQ_NANOCLAW:-}" ]; then
  [ -f "$NCQ_NANOCLAW" ] || die "NCQ_NANOCLAW=$NCQ_NANOCLAW does not exist"
  NANOCLAW_BIN=$NCQ_NANOCLAW
else
  log "cross-building nanoclaw for aarch64 (scripts/cross-build.sh)"
  out=$("$ROOT/scripts/cross-build.sh" aarch64 --profile "${NCQ_PROFILE:-release}" 2> >(sed 's/^/  /' >&2)) ||
    die "cross build failed"
  echo "$out" | sed 's/^/  /' >&2
  NANOCLAW_BIN=$(echo "$out" | awk -F'\t' '$1 ~ /\/nanoclaw$/ {print $1}')
  RUNNER_BIN=$(echo "$out" | awk -F'\t' '$1 ~ /\/nanoclaw-runner$/ {print $1}')
  [ -f "$NANOCLAW_BIN" ] || die "cross build produced no nanoclaw"
fi
CROSS_S=$(el "$STAGE_T"); STAGE_T=$EPOCHREALTIME

RUNNER_IMAGE=""
if [ -n "${NCQ_DISK:-}" ]; then
  :
elif [ -n "${NCQ_RUNNER_IMAGE:-}" ]; then
  [ -f "$NCQ_RUNNER_IMAGE" ] || die "NCQ_RUNNER_IMAGE=$NCQ_RUNNER_IMAGE does not exist"
  RUNNER_IMAGE=$NCQ_RUNNER_IMAGE
elif [ -x "$ROOT/runner-rootfs/build.sh" ]; then
  log "building the runner image (runner-rootfs/build.sh --arch aarch64)"
  # The runner built above goes in (one cargo build for both binaries); else build.sh builds it.
  "$ROOT/runner-rootfs/build.sh" --arch aarch64 --out "$W/runner.squashfs" ${RUNNER_BIN:+--runner "$RUNNER_BIN"} >&2 ||
    die "runner-rootfs/build.sh failed"
  RUNNER_IMAGE=$W/runner.squashfs
else
  log "runner image: runner-rootfs/build.sh is not in this tree yet (branch runner); the guest has none"
fi

# ------------------------------------------------------------------ 2. kernel, modules, debs
if [ -n "${NCQ_KERNEL:-}" ]; then
  [ -f "$NCQ_KERNEL" ] || die "NCQ_KERNEL=$NCQ_KERNEL does not exist"
  KERNEL=$NCQ_KERNEL
  MODROOT=${NCQ_MODULES:-}
  [ -n "$MODROOT" ] || die "with NCQ_KERNEL set NCQ_MODULES to your modules root (DIR/lib/modules/<release>) or to none"
else
  KPKG=$(awk '$1 ~ /^linux-image-[0-9]/ {print $1; exit}' "$ROOT/scripts/debs.lock")
  KVER=${KPKG#linux-image-}
  MODROOT=$CACHE/kernel-$KVER
  if [ ! -e "$MODROOT/.done" ]; then
    deb=$("$ROOT/scripts/debs.sh" get "$KPKG") || die "kernel package download failed"
    log "unpacking $KPKG"
    rm -rf "$MODROOT"; mkdir -p "$MODROOT"; dpkg-deb -x "$deb" "$MODROOT"
    depmod -b "$MODROOT" "$KVER"; touch "$MODROOT/.done"
  fi
  KERNEL=$MODROOT/boot/vmlinuz-$KVER
fi
KVER=""
if [ "$MODROOT" != none ]; then
  [ -d "$MODROOT/lib/modules" ] || die "$MODROOT/lib/modules does not exist"
  KVER=$(ls "$MODROOT/lib/modules" | head -1)
  [ -f "$MODROOT/lib/modules/$KVER/modules.dep" ] || depmod -b "$MODROOT" "$KVER"
fi
BUSYBOX_DEB=$("$ROOT/scripts/debs.sh" get busybox-static) || die "busybox-static download failed"
BUSYBOX=$W/busybox
dpkg-deb --fsys-tarfile "$BUSYBOX_DEB" | tar -xO ./bin/busybox > "$BUSYBOX"; chmod 755 "$BUSYBOX"

BOOT_MODULES=$(sed -n 's/^boot://p' "$HERE/modules.conf")
SYSTEM_MODULES=$(sed -n 's/^system://p' "$HERE/modules.conf" | xargs)
# Prints the .ko files (relative to lib/modules/<release>) that load MODULES in dependency order;
# built-in modules print nothing; unknown ones are reported.
closure() {
  [ "$MODROOT" = none ] && return 0
  local m out
  for m in "$@"; do
    if ! out=$(modprobe -d "$MODROOT" -S "$KVER" --show-depends "$m" 2>&1); then
      log "warning: kernel module $m: neither built in nor in $MODROOT (${out##*: })"; continue
    fi
    echo "$out" | awk '$1 == "insmod" {print $2}'
  done | awk '!seen[$0]++' | sed "s|^$MODROOT/lib/modules/$KVER/||"
}
copy_modules() { # DEST-root, list of relative paths on stdin
  local f
  while read -r f; do
    mkdir -p "$1/lib/modules/$KVER/$(dirname "$f")"
    cp "$MODROOT/lib/modules/$KVER/$f" "$1/lib/modules/$KVER/$f"
  done
  for f in modules.order modules.builtin modules.builtin.modinfo; do
    [ -f "$MODROOT/lib/modules/$KVER/$f" ] && cp "$MODROOT/lib/modules/$KVER/$f" "$1/lib/modules/$KVER/"
  done
  depmod -b "$1" "$KVER"
}

# ------------------------------------------------------------------ 3a. initramfs
if [ -n "${NCQ_INITRD:-}" ]; then
  [ -f "$NCQ_INITRD" ] || die "NCQ_INITRD=$NCQ_INITRD does not exist"
  INITRD=$NCQ_INITRD
else
  I=$W/initramfs; rm -rf "$I"; mkdir -p "$I/bin" "$I/etc/ncq"
  cp "$BUSYBOX" "$I/bin/busybox"
  cp "$HERE/guest/init" "$I/init"; chmod 755 "$I/init"
  # shellcheck disable=SC2086
  closure $BOOT_MODULES > "$I/etc/ncq/modules.boot"
  [ "$MODROOT" = none ] || copy_modules "$I" < "$I/etc/ncq/modules.boot"
  (cd "$I" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 | gzip -1 > "$W/initrd.gz")
  INITRD=$W/initrd.gz
fi

# ------------------------------------------------------------------ 3b. system disk (packaging/layout.toml)
LAYOUT=${NCQ_LAYOUT:-$ROOT/packaging/layout.toml}
[ -f "$LAYOUT" ] || die "layout $LAYOUT does not exist"
# First line: align_kib, the qemu board's table type, the data mount options; then one partition a
# line: name fstype size_mib gpt_type mountpoint label
PARTS=$(python3 - "$LAYOUT" <<'EOF'
import sys, tomllib
d = tomllib.load(open(sys.argv[1], "rb"))
data = [p for p in d["partition"] if p.get("mountpoint") == "/data"]
print(d.get("align_kib", 1024), d.get("board", {}).get("qemu_aarch64_virt", {}).get("table", "gpt"),
      (data[0].get("mount_options") if data else None) or "defaults")
for p in d["partition"]:
    print(p["name"], p["fstype"], p["size_mib"], p.get("gpt_type", "linux"), p.get("mountpoint") or "-",
          p.get("label") or "-")
EOF
) || die "cannot read $LAYOUT"
read -r ALIGN_KIB TABLE DATA_OPTS <<<"$(echo "$PARTS" | head -1)"
[ "$TABLE" = gpt ] || die "$LAYOUT: board qemu_aarch64_virt has table=$TABLE; the guest finds partitions by GPT name"
ALIGN_S=$(( ALIGN_KIB * 2 ))
ROOT_PART=$(echo "$PARTS" | awk 'NR > 1 && $5 == "/" {print $1; exit}')
DATA_PART=$(echo "$PARTS" | awk 'NR > 1 && $5 == "/data" {print $1; exit}')
[ -n "$ROOT_PART" ] && [ -n "$DATA_PART" ] || die "$LAYOUT needs partitions mounted at / and /data"

DISK=$W/disk.img
declare -A P_START P_SIZE
if [ -n "${NCQ_DISK:-}" ]; then
  [ -f "$NCQ_DISK" ] || die "NCQ_DISK=$NCQ_DISK does not exist"
  log "system disk: a copy of $NCQ_DISK"
  cp --sparse=always "$NCQ_DISK" "$DISK"
  eval "$(sfdisk -J "$DISK" | python3 -c '
import json, sys
for p in json.load(sys.stdin)["partitiontable"]["partitions"]:
    if "name" in p:
        print("P_START[%s]=%d P_SIZE[%s]=%d" % (p["name"], p["start"], p["name"], p["size"]))')"
  [ -n "${P_START[$ROOT_PART]:-}" ] && [ -n "${P_START[$DATA_PART]:-}" ] ||
    die "$NCQ_DISK has no GPT partitions named $ROOT_PART and $DATA_PART (packaging/layout.toml)"
else
  R=$W/rootfs; rm -rf "$R"
  mkdir -p "$R"/{bin,usr/bin,usr/sbin,etc/nanoclaw,usr/share/nanoclaw,proc,sys,dev,run,tmp,data,root}
  cp "$BUSYBOX" "$R/bin/busybox"; ln -s busybox "$R/bin/sh"
  # nft and its shared libraries (with glibc): every pinned package but the kernel, busybox, musl-dev
  for p in $(awk '$1 !~ /^#/ && $1 !~ /^linux-image-/ && $1 != "busybox-static" && $1 != "musl-dev" {print $1}' "$ROOT/scripts/debs.lock"); do
    dpkg-deb -x "$("$ROOT/scripts/debs.sh" get "$p")" "$R" || die "unpacking $p failed"
  done
  rm -rf "$R"/usr/share/{doc,man,info,lintian,locale,bug} "$R"/usr/lib/aarch64-linux-gnu/gconv
  install -m 755 "$NANOCLAW_BIN" "$R/usr/bin/nanoclaw"
  [ -z "$RUNNER_IMAGE" ] || install -m 644 "$RUNNER_IMAGE" "$R/usr/share/nanoclaw/runner.squashfs"
  cat > "$R/etc/nanoclaw/config.toml" <<EOF
# QEMU suite guest configuration: the data partition holds the data dir, as on the appliance.
data_dir = "/data/nanoclaw"
[log]
target = "stderr"
[runs]
image = "/usr/share/nanoclaw/runner.squashfs"
EOF
  printf 'root:x:0:0:root:/root:/bin/sh\nnanoclaw:x:1000:1000:nanoclaw:/data:/bin/sh\n' > "$R/etc/passwd"
  printf 'root:x:0:\nnanoclaw:x:1000:\n' > "$R/etc/group"
  # shellcheck disable=SC2086
  [ "$MODROOT" = none ] || closure $BOOT_MODULES $SYSTEM_MODULES | copy_modules "$R"

  # Partition table from the layout: aligned starts, sizes as given, GPT names = layout names.
  start=$ALIGN_S; table="label: gpt"$'\n'
  while read -r name _ size gpt_type _; do
    P_START[$name]=$start; P_SIZE[$name]=$((size * 2048))
    table+="start=$start, size=$((size * 2048)), type=$gpt_type, name=\"$name\""$'\n'
    start=$(( (start + size * 2048 + ALIGN_S - 1) / ALIGN_S * ALIGN_S ))
  done < <(echo "$PARTS" | tail -n +2)
  rm -f "$DISK"; truncate -s $(( (start + 2048) * 512 )) "$DISK"
  echo "$table" | sfdisk -q "$DISK" >/dev/null || die "sfdisk failed on the layout"
  while read -r name fstype size _ _ label; do
    off=$(( P_START[$name] * 512 ))
    lbl=(); [ "$label" = - ] || lbl=(-L "$label")
    if [ "$name" = "$ROOT_PART" ]; then
      case $fstype in
        ext4) mkfs.ext4 -q -F "${lbl[@]}" -d "$R" -E "offset=$off,root_owner=0:0" "$DISK" "${size}M" ||
                die "mkfs.ext4 of $name failed" ;;
        *) die "root partition fstype $fstype: only ext4 is supported by the suite" ;;
      esac
    elif [ "$name" = "$DATA_PART" ]; then
      mkfs.ext4 -q -F "${lbl[@]}" -E "offset=$off" "$DISK" "${size}M" || die "mkfs.ext4 of $name failed"
    fi # boot (bootloader files: QEMU boots the kernel directly) and the B slot stay empty
  done < <(echo "$PARTS" | tail -n +2)
fi
DATA_OFF=$(( P_START[$DATA_PART] * 512 ))
if [ -n "${NCQ_DISK:-}" ]; then
  # The scenarios expect an empty data partition; the user's image file itself is never touched.
  mkfs.ext4 -q -F -L "$DATA_PART" -E "offset=$DATA_OFF" "$DISK" "$(( P_SIZE[$DATA_PART] / 2 ))k" ||
    die "formatting the data partition failed"
fi
log "images ready: kernel $(basename "$KERNEL") ${KVER:+($KVER)}, initrd $(stat -c %s "$INITRD") B, disk $(du -k "$DISK" | cut -f1) KiB used of $(( $(stat -c %s "$DISK") >> 20 )) MiB ($LAYOUT: root=$ROOT_PART data=$DATA_PART)"
IMAGES_S=$(el "$STAGE_T")

# ------------------------------------------------------------------ 4. plan (scenarios.conf)
declare -A SC_STATUS SC_REASON SC_PHASES SC_SELECTED BOOT_PHASES BOOT_CUT RES RES_DETAIL
SC_ORDER=()
NBOOTS=0
while IFS= read -r line; do
  line=${line%%#*}; [ -n "${line// }" ] || continue
  reason=""; [[ $line == *"|"* ]] && { reason=${line#*|}; reason=$(echo "$reason" | xargs); line=${line%%|*}; }
  read -r name status phases <<<"$line"
  case $status in required|pending|off) ;; *) die "scenarios.conf: $name: status must be required, pending or off" ;; esac
  SC_ORDER+=("$name"); SC_STATUS[$name]=$status; SC_REASON[$name]=$reason; SC_PHASES[$name]=""
  sel=1
  if [ -n "${NCQ_SCENARIOS:-}" ]; then [[ " $NCQ_SCENARIOS " == *" $name "* ]] || sel=0
  else [ "$status" != off ] || sel=0; fi
  SC_SELECTED[$name]=$sel
  [ "$sel" = 1 ] || continue
  for ph in $phases; do
    [ "$ph" = - ] && continue
    b=${ph%%:*}; p=${ph#*:}; cut=0
    [[ $p == *! ]] && { p=${p%!}; cut=1; }
    [[ $b =~ ^[1-9][0-9]*$ ]] || die "scenarios.conf: $name: bad phase $ph (want <boot>:<phase>)"
    [ -z "${BOOT_CUT[$b]:-}" ] || die "scenarios.conf: boot $b: nothing may follow the power-cut phase ${BOOT_CUT[$b]}"
    BOOT_PHASES[$b]="${BOOT_PHASES[$b]:-} $name:$p"
    SC_PHASES[$name]="${SC_PHASES[$name]} $b:$p"
    [ $cut = 1 ] && BOOT_CUT[$b]=$name:$p
    [ "$b" -gt "$NBOOTS" ] && NBOOTS=$b
  done
done < "$HERE/scenarios.conf"
[ "$NBOOTS" -gt 0 ] || die "no scenario selected (NCQ_SCENARIOS=${NCQ_SCENARIOS:-})"
# Boots with nothing to run (their scenarios not selected) are skipped; the data disk carries over.
BOOTS=(); for b in $(seq 1 "$NBOOTS"); do [ -z "${BOOT_PHASES[$b]:-}" ] || BOOTS+=("$b"); done

# ------------------------------------------------------------------ 4b. fake model API (build machine)
FAKE_SCENARIOS=()
for sc in "${SC_ORDER[@]}"; do
  [ "${SC_SELECTED[$sc]}" = 1 ] && [ -n "$(echo "${SC_PHASES[$sc]}" | xargs)" ] &&
    [ -f "$HERE/fake-api/$sc.json" ] && FAKE_SCENARIOS+=("$sc")
done
FAKE_ENV=""
NIC=(-nic none)
if [ ${#FAKE_SCENARIOS[@]} -gt 0 ]; then
  FAKE_BIN=${NCQ_FAKE_API:-}
  if [ -z "$FAKE_BIN" ]; then
    command -v cargo >/dev/null || die "scenarios ${FAKE_SCENARIOS[*]} need the fake model API: no cargo here; set NCQ_FAKE_API to a build of examples/fake_api.rs"
    log "building the host-side fake model API (cargo build --example fake_api)"
    (cd "$ROOT" && cargo build -q --example fake_api >&2) || die "cargo build --example fake_api failed"
    td=${CARGO_TARGET_DIR:-target}; case $td in /*) ;; *) td=$ROOT/$td ;; esac
    FAKE_BIN=$td/debug/examples/fake_api
  fi
  [ -x "$FAKE_BIN" ] || die "fake API binary $FAKE_BIN missing"
  # A fresh test credential per suite run; the fake API answers 401 to anything else.
  TEST_KEY="sk-ant-qemu-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
  (umask 077; echo "$TEST_KEY" > "$W/test-key")
  fargs=(--key-file "$W/test-key" --canary --max-secs $((TOTAL_TIMEOUT + 240)))
  for sc in "${FAKE_SCENARIOS[@]}"; do fargs+=(--serve "$sc=$HERE/fake-api/$sc.json"); done
  # It ends when run.sh closes its stdin (below), on the EXIT trap, or at --max-secs.
  rm -f "$W/fake.in"; mkfifo "$W/fake.in"; exec {FAKE_FD}<>"$W/fake.in"
  # (The child must not inherit our write end, or it never sees EOF.)
  timeout $((TOTAL_TIMEOUT + 300)) "$FAKE_BIN" "${fargs[@]}" < "$W/fake.in" > "$W/fake-api.log" 2>&1 {FAKE_FD}>&- &
  FAKE_PID=$!
  for _ in $(seq 300); do grep -q '^ready$' "$W/fake-api.log" && break; kill -0 "$FAKE_PID" 2>/dev/null || break; sleep 0.1; done
  if ! grep -q '^ready$' "$W/fake-api.log"; then
    frc=running; kill -0 "$FAKE_PID" 2>/dev/null || { frc=0; wait "$FAKE_PID" || frc=$?; }
    die "the fake API ($FAKE_BIN) did not start within 30s (exit: $frc): $(tail -5 "$W/fake-api.log" | tr '\n' ' ')"
  fi
  while read -r _ name port; do
    v=$(echo "$name" | tr 'a-z-' 'A-Z_')
    if [ "$name" = canary ]; then FAKE_ENV+="CANARY_PORT=$port"$'\n'
    else FAKE_ENV+="API_PORT_$v=$port"$'\n'; fi
  done < <(grep '^listening ' "$W/fake-api.log")
  FAKE_ENV+="TEST_KEY=$TEST_KEY"$'\n'
  log "fake model API for ${FAKE_SCENARIOS[*]}: $(grep '^listening ' "$W/fake-api.log" | awk '{printf "%s=127.0.0.1:%s ", $2, $3}')(guest: 10.0.2.2)"
  NIC=(-netdev "user,id=net0,restrict=off" -device "virtio-net-pci,netdev=net0,romfile=")
fi

# ------------------------------------------------------------------ 5. boots
QEMU_S=0
STOP_REASON=""
APPEND="console=ttyAMA0 panic=-1 quiet ncq.root=$ROOT_PART ncq.data=$DATA_PART ncq.dataopts=$DATA_OPTS ${NCQ_APPEND:-}"
[ "$SELFTEST" = silent-guest ] && APPEND="$APPEND ncq.selftest=silent-initramfs"
mkfifo_fresh() { rm -f "$1"; mkfifo "$1"; }

for b in "${BOOTS[@]}"; do
  phases=$(echo "${BOOT_PHASES[$b]}" | xargs)
  [ -n "$STOP_REASON" ] || [ "$SECONDS" -lt "$TOTAL_TIMEOUT" ] ||
    STOP_REASON="suite time limit NCQ_TOTAL_TIMEOUT=${TOTAL_TIMEOUT}s reached before boot $b"
  if [ -n "$STOP_REASON" ]; then
    for ph in $phases; do RES[$ph]=FAIL; RES_DETAIL[$ph]="not run: $STOP_REASON"; done
    continue
  fi
  # Control disk: the guest scripts, the plan of this boot, and what earlier boots produced.
  C=$W/ctl-$b; mkdir -p "$C/bin" "$C/in"
  cp "$BUSYBOX" "$C/bin/busybox"
  cp -r "$HERE/guest" "$HERE/expect" "$C/"
  cp "$W"/in/* "$C/in/" 2>/dev/null || true
  cat > "$C/plan.env" <<EOF
BOOT=$b
PHASES="$phases"
PHASE_TIMEOUT=$PHASE_TIMEOUT
SYSTEM_MODULES="$SYSTEM_MODULES"
CUT_AFTER_ACKS=$CUT_AFTER_ACKS
$FAKE_ENV
EOF
  tar -cf "$W/ctl-$b.tar" --owner=0 --group=0 -C "$C" .
  LOG=$W/console-$b.log; : > "$LOG"
  mkfifo_fresh "$W/mon.in"; mkfifo_fresh "$W/mon.out"
  log "boot $b of ${#BOOTS[@]}: $phases"
  qt=$EPOCHREALTIME
  qemu-system-aarch64 -M virt -cpu "${NCQ_CPU:-cortex-a72}" -smp "${NCQ_SMP:-2}" -m "${NCQ_MEM:-1024}" \
    -display none -monitor pipe:"$W/mon" -serial file:"$LOG" -no-reboot "${NIC[@]}" \
    -kernel "$KERNEL" -initrd "$INITRD" -append "$APPEND" \
    -drive file="$DISK",if=none,format=raw,id=sys -device virtio-blk-pci,drive=sys,serial=ncq-sys \
    -drive file="$W/ctl-$b.tar",if=none,format=raw,id=ctl,readonly=on -device virtio-blk-pci,drive=ctl,serial=ncq-ctl \
    </dev/null >"$W/qemu-$b.err" 2>&1 &
  qpid=$!
  cat "$W/mon.out" > /dev/null &   # drain the monitor's output so qemu never blocks on it
  drain=$!
  start=$SECONDS; last_size=-1; last_change=$SECONDS; cut_sent=0; cut_at=0; end=""; target=0
  while kill -0 "$qpid" 2>/dev/null; do
    sleep 0.2
    size=$(stat -c %s "$LOG")
    [ "$size" != "$last_size" ] && { last_size=$size; last_change=$SECONDS; }
    if [ -n "${BOOT_CUT[$b]:-}" ] && [ $cut_sent = 0 ]; then
      sc=${BOOT_CUT[$b]%%:*}
      # acks seen since the guest armed the cut
      read -r armed n_after < <(tr -d '\r' < "$LOG" | awk -v s="$sc" '
        $1 == "NCQ-CUT-ARMED" && $2 == s {armed = $3; n = 0; next}
        armed && $1 == "NCQ-ACK" && $2 == s && $3 ~ /^torture-[0-9]+$/ {n++}
        END {print (armed ? armed : 0), n + 0}')
      if [ "$armed" -gt 0 ]; then
        [ $target -gt 0 ] || target=$(( armed + RANDOM % 50 ))   # jitter: cut at a different commit each run
        if [ "$n_after" -ge $target ]; then
          # qemu holds the fifo open read-write; the timeout covers qemu having just exited.
          timeout 5 sh -c 'echo "$1" > "$2"' _ "$CUT" "$W/mon.in" || true
          cut_sent=1; cut_at=$SECONDS; end="power cut ($CUT) after $n_after acks"
          log "  power cut: monitor '$CUT' after $n_after acknowledged commits"
        fi
      fi
    fi
    if [ $cut_sent = 1 ] && [ $((SECONDS - cut_at)) -gt 10 ]; then
      kill -9 "$qpid" 2>/dev/null; end="$end; qemu ignored '$CUT' for 10s and was killed"; break
    fi
    if [ $((SECONDS - last_change)) -ge "$SILENCE_TIMEOUT" ]; then
      kill -9 "$qpid" 2>/dev/null; end="guest silent for ${SILENCE_TIMEOUT}s (killed)"; break
    fi
    if [ $((SECONDS - start)) -ge "$BOOT_TIMEOUT" ] || [ "$SECONDS" -ge $((TOTAL_TIMEOUT + 60)) ]; then
      kill -9 "$qpid" 2>/dev/null; end="still running after $((SECONDS - start))s: boot limit NCQ_BOOT_TIMEOUT=${BOOT_TIMEOUT}s or suite limit reached (killed)"; break
    fi
  done
  qrc=0; wait "$qpid" 2>/dev/null || qrc=$?
  kill "$drain" 2>/dev/null || true; wait "$drain" 2>/dev/null || true
  took=$(el "$qt"); QEMU_S=$(awk -v a="$QEMU_S" -v b="$took" 'BEGIN{print a + b}')
  tr -d '\r' < "$LOG" > "$LOG.txt"
  grep -E '^NCQ-(STEP|RESULT|FATAL|DONE|LOG)' "$LOG.txt" | sed 's/^/  /' >&2 || true
  fatal=$(grep -m1 '^NCQ-FATAL' "$LOG.txt" || true)
  done_line=$(grep -m1 '^NCQ-DONE' "$LOG.txt" || true)
  if [ -z "$end" ]; then
    if [ -n "$fatal" ]; then end="guest init failed: ${fatal#NCQ-FATAL }"
    elif [ -n "$done_line" ]; then end="done"
    else end="guest stopped without finishing (qemu rc=$qrc; kernel panic or crash?)"; fi
  fi
  log "  boot $b ended after ${took}s: $end"

  # Acknowledged ids go to the next boots' control disks.
  for sc in "${SC_ORDER[@]}"; do
    grep -E "^NCQ-ACK $sc torture-[0-9]{9}$" "$LOG.txt" | awk '{print $3}' >> "$W/in/$sc.acks" || true
    [ -s "$W/in/$sc.acks" ] || rm -f "$W/in/$sc.acks"
  done
  # Second result channel: the data partition (only complete after a clean shutdown).
  disk_results=""
  if [ "$end" = "done" ]; then
    disk_results=$(debugfs -R "cat /ncq/results-boot$b.txt" "$DISK?offset=$DATA_OFF" 2>/dev/null | grep '^NCQ-RESULT' || true)
    n_con=$(grep -c '^NCQ-RESULT' "$LOG.txt" || true); n_disk=$(echo -n "$disk_results" | grep -c '^NCQ-RESULT' || true)
    [ "$n_con" = "$n_disk" ] || log "  warning: console has $n_con results, the data partition $n_disk"
  fi
  for ph in $phases; do
    sc=${ph%%:*}; p=${ph#*:}
    line=$(grep -m1 "^NCQ-RESULT $sc $p " "$LOG.txt" || true)
    [ -n "$line" ] || line=$(echo "$disk_results" | grep -m1 "^NCQ-RESULT $sc $p " || true)
    if [ "${BOOT_CUT[$b]:-}" = "$ph" ]; then
      if [ $cut_sent = 1 ]; then RES[$ph]=PASS; RES_DETAIL[$ph]="$end"
      else RES[$ph]=FAIL; RES_DETAIL[$ph]="no power cut: ${line#NCQ-RESULT $sc $p FAIL }${line:+; }boot ended: $end"; fi
    elif [ -n "$line" ]; then
      read -r _ _ _ verdict rest <<<"$line"
      RES[$ph]=$verdict; RES_DETAIL[$ph]=$rest
    else
      RES[$ph]=FAIL; RES_DETAIL[$ph]="no result: $end"
    fi
  done
  # Build-machine half of the fake-API scenarios: database rows and what the fake API saw.
  if [ "$end" = "done" ]; then
    for ph in $phases; do
      sc=${ph%%:*}
      [[ " ${FAKE_SCENARIOS[*]} " == *" $sc "* ]] || continue
      hc=$(python3 "$HERE/host-check.py" "$sc" "$DISK" "$DATA_OFF" "$W/fake-api.log" 2>&1) || hc="FAIL host-check.py: $hc"
      log "  host check $sc: $hc"
      case $hc in
        PASS*) RES_DETAIL[$ph]="${RES_DETAIL[$ph]}; host: ${hc#PASS }" ;;
        *) RES[$ph]=FAIL; RES_DETAIL[$ph]="${RES_DETAIL[$ph]}; host check: ${hc#FAIL }" ;;
      esac
    done
  fi
  if [ "$end" != "done" ] && [ $cut_sent = 0 ]; then
    echo "---- boot $b: last console lines ($LOG.txt)" >&2
    { grep -vE '^NCQ-(ACK|ALIVE)' "$LOG.txt" || true; } | tail -25 | sed 's/^/  | /' >&2
    if [ -s "$W/qemu-$b.err" ]; then sed 's/^/  qemu: /' "$W/qemu-$b.err" >&2; fi
    STOP_REASON="boot $b failed ($end)"
  fi
done

if [ -n "$FAKE_PID" ]; then
  exec {FAKE_FD}>&-   # EOF: the fake API prints its summary and exits
  for _ in $(seq 50); do kill -0 "$FAKE_PID" 2>/dev/null || break; sleep 0.1; done
  grep '^summary ' "$W/fake-api.log" | sed 's/^/  fake API /' >&2 || true
fi

# ------------------------------------------------------------------ 6. summary
npass=0; nfail=0; npend=0; noff=0
echo "qemu-tests: results"
for sc in "${SC_ORDER[@]}"; do
  st=${SC_STATUS[$sc]}
  if [ "${SC_SELECTED[$sc]}" = 0 ] || [ -z "$(echo "${SC_PHASES[$sc]}" | xargs)" ]; then
    noff=$((noff + 1))
    if [ "$st" = off ]; then why=${SC_REASON[$sc]:-off in scenarios.conf}
    elif [ "${SC_SELECTED[$sc]}" = 0 ]; then why="not selected (NCQ_SCENARIOS)"
    else why="no phases yet${SC_REASON[$sc]:+: ${SC_REASON[$sc]}}"; fi
    printf '  SKIP     %-13s %s\n' "$sc" "$why"
    continue
  fi
  verdict=PASS; why=""
  for bp in ${SC_PHASES[$sc]}; do
    ph=$sc:${bp#*:}
    why="$why${why:+; }${bp#*:}: ${RES_DETAIL[$ph]:-}"
    [ "${RES[$ph]:-FAIL}" = PASS ] || verdict=FAIL
  done
  if [ "$st" = pending ]; then
    npend=$((npend + 1))
    if [ $verdict = PASS ]; then printf '  PASS     %-13s %s [pending: now passes, mark it required]\n' "$sc" "$why"
    else printf '  PENDING  %-13s %s [not counted: %s]\n' "$sc" "$why" "${SC_REASON[$sc]}"; fi
  elif [ $verdict = PASS ]; then
    npass=$((npass + 1)); printf '  PASS     %-13s %s\n' "$sc" "$why"
  else
    nfail=$((nfail + 1)); printf '  FAIL     %-13s %s\n' "$sc" "$why"
  fi
done
echo "qemu-tests: $npass passed, $nfail failed, $npend pending, $noff skipped; ${#BOOTS[@]} boots;" \
  "total $(el "$T0")s (cross build ${CROSS_S}s, images ${IMAGES_S}s, qemu ${QEMU_S}s)"
[ $nfail = 0 ] || exit 1
