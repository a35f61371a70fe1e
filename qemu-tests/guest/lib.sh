# shellcheck shell=dash
# Helpers for guest scenarios (sourced by main.sh and by every phase).
#
# A scenario is qemu-tests/guest/scenarios/<name>.sh defining one shell function per phase,
# <name>_<phase> (dashes become underscores). A phase returns 0 for PASS, non-zero for FAIL, and
# may call `detail TEXT` for the one-line reason the host prints. It runs in its own shell under
# `timeout $PHASE_TIMEOUT`; its stdout/stderr go to $NCQ/log/<scenario>-<phase>.log (the last
# lines are echoed as NCQ-LOG on failure). `say` writes straight to the console.
NCQ=${NCQ:-/run/ncq}
# This boot's plan (phases run in their own shell and see it too): ports, test key, limits.
[ -f "$NCQ/plan.env" ] && . "$NCQ/plan.env"
NANOCLAW=${NANOCLAW:-/usr/bin/nanoclaw}
RESULTS=/data/ncq/results-boot${BOOT:-0}.txt
PASS=${PASS:-0}
FAIL=${FAIL:-0}

up() { read -r u _ < /proc/uptime; echo "$u"; }
say() { echo "$*" > /dev/console; }
# One-line reason for this phase's result.
detail() { echo "$*" > "$NCQ/out/$SCENARIO-$PHASE.detail"; }
# Inputs the host passes to later boots (e.g. acknowledged ids seen on the console).
input() { echo "$NCQ/in/$1"; }

# Prints every line of stdin as "NCQ-ACK <scenario> <line>" on the console.
ack_to_console() {
  exec 3>/dev/console
  while IFS= read -r id; do
    case $id in
      torture-*) echo "NCQ-ACK $SCENARIO $id" >&3 ;;
      *) echo "NCQ-LOG $SCENARIO: $id" >&3 ;;
    esac
  done
}

# Prints a file's lines as NCQ-LOG so they land in the host's CI log.
log_file() { sed "s/^/NCQ-LOG $SCENARIO: /" "$1" > /dev/console; }

result() {
  local s=$1 p=$2 verdict=$3; shift 3
  if [ "$verdict" = PASS ]; then PASS=$((PASS + 1)); else FAIL=$((FAIL + 1)); fi
  echo "NCQ-RESULT $s $p $verdict $*"
  echo "NCQ-RESULT $s $p $verdict $*" >> "$RESULTS"
}

run_phase() {
  local s=$1 p=$2 fn rc t0 log
  fn="$(echo "$s" | tr '-' '_')_$(echo "$p" | tr '-' '_')"
  log=$NCQ/log/$s-$p.log
  t0=$(up)
  echo "NCQ-PHASE $s $p start"
  if [ ! -f "$NCQ/guest/scenarios/$s.sh" ]; then
    result "$s" "$p" FAIL "no guest/scenarios/$s.sh"; return
  fi
  SCENARIO=$s PHASE=$p timeout "$PHASE_TIMEOUT" sh -c \
    "set -o pipefail; . $NCQ/guest/lib.sh; . $NCQ/guest/scenarios/$s.sh; $fn" > "$log" 2>&1
  rc=$?
  local d; d=$(cat "$NCQ/out/$s-$p.detail" 2>/dev/null)
  local took; took=$(awk -v a="$t0" -v b="$(up)" 'BEGIN{printf "%.1f", b-a}')
  if [ $rc = 0 ]; then
    result "$s" "$p" PASS "${d:-ok} (${took}s)"
  else
    # busybox timeout kills with TERM: 143
    [ $rc = 143 ] && d="timed out after ${PHASE_TIMEOUT}s (no answer)${d:+; $d}"
    result "$s" "$p" FAIL "rc=$rc ${d:-} (${took}s)"
    tail -15 "$log" | sed "s/^/NCQ-LOG $s-$p: /"
  fi
}

# ---- a real `nanoclaw run` for the scenarios that need the host (round-trip, oom, egress)
# The fake Messages API runs on the build machine (examples/fake_api.rs, started by run.sh); the guest
# reaches it through QEMU user networking at 10.0.2.2. plan.env carries its ports and the test key.

# Polls `cmd...` every 0.2 s for up to SECS seconds; returns its last status.
wait_until() {
  local n=$(( $1 * 5 )); shift
  while [ $n -gt 0 ]; do "$@" && return 0; sleep 0.2; n=$((n - 1)); done
  "$@"
}

# host_start NAME API_PORT [extra [runs] lines]: writes a config with data dir /data/nanoclaw-NAME,
# the test credential and upstream http://10.0.2.2:API_PORT, starts `nanoclaw run` and waits for its
# local socket. Sets HOST_CFG, HOST_DATA, HOST_LOG, HOST_PID.
host_start() {
  local name=$1 port=$2 extra=${3:-}
  [ -n "$port" ] || { detail "no fake API port for $name in plan.env (run.sh did not start examples/fake_api)"; return 1; }
  [ -n "${TEST_KEY:-}" ] || { detail "no test key in plan.env"; return 1; }
  HOST_DATA=/data/nanoclaw-$name
  HOST_CFG=$NCQ/out/$name.toml
  HOST_LOG=$NCQ/log/$name-host.log
  HOST_RUN=/run/nanoclaw-$name
  # Root-owned, mode 600: the secret broker refuses anything else.
  (umask 077; echo "ANTHROPIC_API_KEY=$TEST_KEY" > "$NCQ/out/credentials")
  cat > "$HOST_CFG" <<EOC
data_dir = "$HOST_DATA"
run_dir = "$HOST_RUN"
[log]
target = "stderr"
level = "info"
[runs]
image = "/usr/share/nanoclaw/runner.squashfs"
timeout_secs = 100
idle_timeout_secs = 5
$extra
[queue]
max_retries = 0
shutdown_grace_secs = 3
[mounts]
allowlist = "$NCQ/out/mount-allowlist.json"
[model]
credentials_file = "$NCQ/out/credentials"
upstream_url = "http://10.0.2.2:$port"
EOC
  # The product's tools (iproute2's ip, nft) before the suite's busybox applets.
  # NO_COLOR: the stderr log is grepped (tracing colours it even when it is not a terminal).
  NO_COLOR=1 PATH=/usr/sbin:/usr/bin:/sbin:/bin:$NCQ/bin "$NANOCLAW" --config "$HOST_CFG" run > "$HOST_LOG" 2>&1 &
  HOST_PID=$!
  # The phase's timeout (TERM to this shell) must not leave a host behind for the next phase.
  trap 'kill -TERM "$HOST_PID" 2>/dev/null; sleep 3; kill -KILL "$HOST_PID" 2>/dev/null; exit 143' TERM
  if ! wait_until 30 test -S "$HOST_RUN/local.sock"; then
    detail "nanoclaw run did not open $HOST_RUN/local.sock within 30s"
    log_file "$HOST_LOG"; host_stop; return 1
  fi
}

# Stops the host (SIGTERM, then SIGKILL after 20 s); returns its exit status.
host_stop() {
  [ -n "${HOST_PID:-}" ] || return 0
  kill -TERM "$HOST_PID" 2>/dev/null
  local n=100
  while kill -0 "$HOST_PID" 2>/dev/null && [ $n -gt 0 ]; do sleep 0.2; n=$((n - 1)); done
  kill -0 "$HOST_PID" 2>/dev/null && { kill -KILL "$HOST_PID"; echo "host ignored SIGTERM for 20s" >&2; }
  wait "$HOST_PID"; local rc=$?
  HOST_PID=""
  return $rc
}

# chat TEXT WAIT OUT: one message on local:main; waits up to WAIT s for the reply, into OUT.
chat() {
  echo "$1" | "$NANOCLAW" --config "$HOST_CFG" chat --history 0 --wait "$2" > "$3" 2>&1
}

# The live run's cgroup directory (cgroup v2, parent "nanoclaw"), once the run exists.
run_cgroup() {
  local d
  for d in /sys/fs/cgroup/nanoclaw/*/; do
    [ -f "${d}memory.max" ] && { echo "${d%/}"; return 0; }
  done
  return 1
}

# Common checks after a host stopped: no leftover netns/links/cgroups, the key never logged.
host_leftovers() {
  local l=""
  [ -n "$(ls /run/netns 2>/dev/null)" ] && l="$l netns:[$(ls /run/netns | tr '\n' ' ')]"
  ip -o link 2>/dev/null | grep -q 'nclw' && l="$l links:[$(ip -o link | grep nclw | awk '{print $2}' | tr '\n' ' ')]"
  [ -n "$(ls -d /sys/fs/cgroup/nanoclaw/*/ 2>/dev/null)" ] && l="$l cgroups:[$(ls /sys/fs/cgroup/nanoclaw | tr '\n' ' ')]"
  nft list tables 2>/dev/null | grep -q 'inet nanoclaw' && l="$l nft:inet-nanoclaw"
  grep -qF "$TEST_KEY" "$HOST_LOG" && l="$l the-real-key-in-the-host-log"
  echo "$l"
}

# Whether the host logged the end of a run (then waiting for anything else of that run is pointless).
run_ended() { grep -q "run finished" "$HOST_LOG"; }
# The status of the first finished run, as the host logged it (e.g. Exited(0), Oom).
run_status() { grep -m1 "run finished" "$HOST_LOG" | sed -n 's/.*status=\([^ ]*\).*/\1/p'; }
# wait_file SECS FILE: until FILE is non-empty or the run ended.
wait_file() { wait_until "$1" sh -c "test -s '$2' || grep -q 'run finished' '$HOST_LOG'"; test -s "$2"; }
