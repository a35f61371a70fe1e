# shellcheck shell=dash
# egress: the guest reaches the canary on the build machine (10.0.2.2, QEMU user networking), a run
# does not. The fake model's bash tool call (qemu-tests/fake-api/egress.json) tries it twice:
# directly (nc; dropped by the `inet nanoclaw` table, counted by the run's nft counter) and through
# the run's HTTP proxy (an absolute-form GET with nc; refused, 10.0.2.2 is not on the allowlist). Both show up as audit
# events in the host log; run.sh checks their audit_events rows in the database after the boot and
# that the canary never heard from the run.
egress_run() {
  [ -n "${CANARY_PORT:-}" ] || { detail "no canary port in plan.env"; return 1; }
  # Positive control: from the guest itself the canary answers (the network is there).
  ctl=$(echo ncq-control | nc -w 10 10.0.2.2 "$CANARY_PORT" 2>&1)
  [ "$ctl" = canary-ok ] || { detail "positive control failed: the guest cannot reach the canary at 10.0.2.2:$CANARY_PORT ($ctl)"; return 1; }
  host_start egress "${API_PORT_EGRESS:-}" || return 1
  g=$HOST_DATA/groups/main
  chat "ncq egress" 120 "$NCQ/out/egress-chat.txt" &
  wait_until 90 sh -c "test -e '$g/probed' || grep -q 'run finished' '$HOST_LOG'"
  if ! test -e "$g/probed"; then
    tail -20 "$HOST_LOG" | log_file /dev/stdin; host_stop
    detail "the run's probes did not finish (run status: $(run_status))"; return 1
  fi
  # The run's drop rule is live until the run ends: read its counter now.
  nft list table inet nanoclaw > "$NCQ/out/egress-nft.txt" 2>&1
  dropped=$(grep 'comment "run ' "$NCQ/out/egress-nft.txt" | grep -o 'counter packets [0-9]*' | awk '{s += $3} END {print s + 0}')
  touch "$g/go"
  wait_until 60 sh -c "grep -q 'qemu egress: probe done' '$NCQ/out/egress-chat.txt' || grep -q 'run finished' '$HOST_LOG'"
  reply=$(grep -c "qemu egress: probe done" "$NCQ/out/egress-chat.txt")
  wait_until 30 run_ended
  host_stop; hrc=$?
  left=$(host_leftovers)
  direct=$(tr '\n' ' ' < "$g/direct.out"); proxy=$(tr '\r\n' '  ' < "$g/proxy.out")
  audit_drop=$(grep -c 'egress.packets_dropped' "$HOST_LOG"); audit_proxy=$(grep -c 'egress.http_proxy' "$HOST_LOG")
  bad=""
  echo "$direct" | grep -q canary-ok && bad="$bad direct-connection-reached-the-canary"
  echo "$proxy" | grep -q canary-ok && bad="$bad proxy-connection-reached-the-canary"
  echo "$proxy" | grep -q 403 || bad="$bad proxy-did-not-answer-403"
  [ "$dropped" -ge 1 ] || bad="$bad nft-run-counter=$dropped"
  [ "$audit_drop" -ge 1 ] || bad="$bad no-egress.packets_dropped-audit-in-host-log"
  [ "$audit_proxy" -ge 1 ] || bad="$bad no-egress.http_proxy-audit-in-host-log"
  [ "$reply" -ge 1 ] || bad="$bad no-final-reply"
  [ -n "$left" ] && bad="$bad left:$left"
  [ $hrc = 0 ] || bad="$bad host-exit=$hrc"
  status_line=$(head -1 "$g/proxy.out" | tr -d '\r')
  summary="guest reached the canary; from the run: direct [$direct], via proxy [$status_line]; nft run counter $dropped packets; audit in host log: packets_dropped=$audit_drop http_proxy=$audit_proxy"
  if [ -n "$bad" ]; then
    log_file "$NCQ/out/egress-nft.txt"; tail -30 "$HOST_LOG" | log_file /dev/stdin
    detail "wrong:$bad; $summary"; return 1
  fi
  detail "$summary"
}
