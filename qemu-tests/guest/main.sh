# shellcheck shell=dash
# PID 1 of the QEMU guest after switch_root (run by the busybox in the control archive, so it works
# on any root filesystem). Mounts cgroup2, loads the system modules, runs this boot's phases from
# /run/ncq/plan.env, reports each on the serial console, and powers off.
#
# Console markers (the host parses only these):
#   NCQ-STEP <name> ok|FAIL <detail>              infrastructure step
#   NCQ-RESULT <scenario> <phase> PASS|FAIL <detail>
#   NCQ-ACK <scenario> <id>                       an id the store acknowledged (power-cut bookkeeping)
#   NCQ-CUT-ARMED <scenario> <n>                  host: pull the power after <n> more acks
#   NCQ-LOG <text>                                phase output worth keeping in the CI log
#   NCQ-PHASE <scenario> <phase> start            a phase begins (so a hang names its phase)
#   NCQ-ALIVE <uptime>                            heartbeat every 10 s: silence means a dead guest
#   NCQ-DONE boot=<n> pass=<p> fail=<f>           then poweroff
NCQ=/run/ncq
/run/ncq/bin/busybox --install -s "$NCQ/bin"
# Busybox applets first (same behaviour on every root filesystem), the product's binaries after.
export PATH=$NCQ/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
. "$NCQ/plan.env"
. "$NCQ/guest/lib.sh"
# devtmpfs has no /dev/fd, /dev/stdout...: udev or systemd make them on the appliance.
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
for i in 0:stdin 1:stdout 2:stderr; do [ -e "/dev/${i#*:}" ] || ln -s "/proc/self/fd/${i%%:*}" "/dev/${i#*:}"; done
echo "NCQ-STEP switch-root ok boot=$BOOT phases=[$PHASES] uptime=$(up)"

mkdir -p /sys/fs/cgroup
if mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup; then
  echo "NCQ-STEP cgroup2 ok controllers=[$(cat /sys/fs/cgroup/cgroup.controllers)]"
else
  echo "NCQ-STEP cgroup2 FAIL mount -t cgroup2 failed"
fi

KVER=$(uname -r)
missing=""
for m in $SYSTEM_MODULES; do
  [ -d "/sys/module/$m" ] && continue
  grep -qs "/$m.ko" "/lib/modules/$KVER/modules.builtin" && continue
  modprobe "$m" 2>/tmp/modprobe.err || missing="$missing $m($(head -c 80 /tmp/modprobe.err | tr '\n' ' '))"
done
if [ -z "$missing" ]; then echo "NCQ-STEP system-modules ok [$SYSTEM_MODULES] uptime=$(up)"
else echo "NCQ-STEP system-modules FAIL not loaded:$missing"; fi
ip link set lo up 2>/dev/null
mkdir -p /data/ncq "$NCQ/log" "$NCQ/out"

# Heartbeat: the host's silence watchdog then catches a dead guest, not a slow phase (phases have
# their own PHASE_TIMEOUT).
( while sleep 10; do echo "NCQ-ALIVE $(up)"; done ) &
HEARTBEAT=$!

for ph in $PHASES; do
  run_phase "${ph%%:*}" "${ph#*:}"
done

kill $HEARTBEAT 2>/dev/null
# As at shutdown: end what the phases left behind (a hung process may hold /data open).
kill -9 -1 2>/dev/null; sleep 0.2
echo "pass=$PASS fail=$FAIL" >> "$RESULTS"
sync
umount /data 2>/dev/null || { sleep 1; sync; umount /data 2>/dev/null; } || echo "NCQ-LOG umount /data failed: $(grep ' /data ' /proc/mounts)"
echo "NCQ-DONE boot=$BOOT pass=$PASS fail=$FAIL uptime=$(up)"
poweroff -f
sleep 30
