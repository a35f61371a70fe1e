# shellcheck shell=dash
# oom: cgroup v2 limits in a real agent run. The fake model calls the bash tool twice (scripts in
# qemu-tests/fake-api/oom.json); the run's tool commands wait for go-files this phase drops into the
# group folder, so the limits are read while the run is alive:
#   1. the run's cgroup has memory.max, memory.swap.max, pids.max and cpu.max as configured;
#   2. tool 1: a fork storm past pids.max fails ("can't fork", pids.events max > 0), then a 128 MiB
#      dd past memory.max is OOM-killed (memory.events oom_kill > 0) and the runner carries on;
#   3. tool 2: the runner makes itself the OOM killer's choice (oom_score_adj 1000) and hogs again:
#      the run ends with status Oom in the host log and the run log, and everything is cleaned up.
MEM_MIB=32
PIDS=32
CPU_PCT=50

oom_run() {
  host_start oom "${API_PORT_OOM:-}" "memory_max_mib = $MEM_MIB
pids_max = $PIDS
cpu_percent = $CPU_PCT" || return 1
  g=$HOST_DATA/groups/main
  chat "ncq oom" 5 "$NCQ/out/oom-chat.txt" &
  # Tool 1 writes `started` first: the run is past create and start (the helper completes and
  # verifies the limits in between), so what is read now is what the workload runs under.
  wait_file 60 "$g/started"
  if ! [ -s "$g/started" ] || ! run_cgroup >/dev/null; then
    tail -20 "$HOST_LOG" | log_file /dev/stdin; host_stop
    detail "tool 1 never started in a live run cgroup under /sys/fs/cgroup/nanoclaw (run status: $(run_status))"; return 1
  fi
  cg=$(run_cgroup)
  mem=$(cat "$cg/memory.max"); swap=$(cat "$cg/memory.swap.max" 2>/dev/null || echo missing)
  pids=$(cat "$cg/pids.max"); cpu=$(cat "$cg/cpu.max")
  limits="memory.max=$mem memory.swap.max=$swap pids.max=$pids cpu.max=[$cpu]"
  say "NCQ-LOG oom: $cg: $limits"
  bad=""
  [ "$mem" = $((MEM_MIB * 1048576)) ] || bad="$bad memory.max=$mem"
  [ "$swap" = 0 ] || bad="$bad memory.swap.max=$swap"
  [ "$pids" = $PIDS ] || bad="$bad pids.max=$pids"
  [ "$cpu" = "$((CPU_PCT * 1000)) 100000" ] || bad="$bad cpu.max=$cpu"

  touch "$g/go1"
  if ! wait_file 90 "$g/hog1.txt"; then
    tail -20 "$HOST_LOG" | log_file /dev/stdin; host_stop
    detail "$limits; tool 1 did not finish (run status: $(run_status))"; return 1
  fi
  ooms=$(sed -n 's/^oom_kill //p' "$cg/memory.events"); pmax=$(sed -n 's/^max //p' "$cg/pids.events")
  hog1=$(cat "$g/hog1.txt"); forks=$(grep -c "can't fork" "$g/pids.err" 2>/dev/null)
  [ "$hog1" = "dd_rc=137" ] || bad="$bad tool-hog:$hog1"
  [ "${ooms:-0}" -ge 1 ] || bad="$bad memory.events-oom_kill=${ooms:-none}"
  [ "${pmax:-0}" -ge 1 ] && [ "${forks:-0}" -ge 1 ] || bad="$bad pids.events-max=${pmax:-none},can't-fork=${forks:-0}"

  touch "$g/go2"
  wait_until 90 run_ended
  status=$(run_status)
  adj=$(cat "$g/adj.txt" 2>/dev/null)
  runlog=$(grep -l "Status: Oom" "$g"/logs/*.log 2>/dev/null | head -1)
  wait_until 10 sh -c "! test -d $cg"
  cg_gone=yes; [ -d "$cg" ] && cg_gone=no
  host_stop; hrc=$?
  left=$(host_leftovers)
  [ "$status" = Oom ] || bad="$bad run-status=${status:-none}(adj=${adj:-?})"
  [ -n "$runlog" ] || bad="$bad no-run-log-with-Status:Oom"
  [ -f "$g/hog2.txt" ] && bad="$bad runner-survived:$(cat "$g/hog2.txt")"
  [ $cg_gone = yes ] || bad="$bad cgroup-left:$cg"
  [ -n "$left" ] && bad="$bad left:$left"
  [ $hrc = 0 ] || bad="$bad host-exit=$hrc"
  summary="$limits; tool hog $hog1, oom_kill=$ooms; fork storm: pids.events max=$pmax; run status=$status (${runlog##*/})"
  if [ -n "$bad" ]; then
    tail -30 "$HOST_LOG" | log_file /dev/stdin
    detail "wrong:$bad; $summary"; return 1
  fi
  detail "$summary"
}
