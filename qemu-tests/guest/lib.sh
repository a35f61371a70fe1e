# shellcheck shell=dash
# Helpers for guest scenarios (sourced by main.sh and by every phase).
#
# A scenario is qemu-tests/guest/scenarios/<name>.sh defining one shell function per phase,
# <name>_<phase> (dashes become underscores). A phase returns 0 for PASS, non-zero for FAIL, and
# may call `detail TEXT` for the one-line reason the host prints. It runs in its own shell under
# `timeout $PHASE_TIMEOUT`; its stdout/stderr go to $NCQ/log/<scenario>-<phase>.log (the last
# lines are echoed as NCQ-LOG on failure). `say` writes straight to the console.
NCQ=${NCQ:-/run/ncq}
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
