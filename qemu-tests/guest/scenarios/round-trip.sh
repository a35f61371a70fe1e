# shellcheck shell=dash
# round-trip: a message on the local channel → `nanoclaw run` → a real container from the runner
# image in its own netns → the runner → the host's API gateway (token swapped for the real key) →
# QEMU user networking → the fake Messages API on the build machine → the reply back on the socket.
# The fake API answers 401 to any key but the test key, so a reply proves the swap. run.sh adds the
# database checks (message row, agent cursor) from the data partition after the boot.
REPLY_TEXT="qemu round trip: hello from the fake model"

round_trip_run() {
  host_start rt "${API_PORT_ROUND_TRIP:-}" || return 1
  t0=$(up)
  chat "ncq round trip ping" 60 "$NCQ/out/rt-chat.txt" &
  # The reply, or a run that ended without one (then fail now, not after 60 s).
  wait_until 60 sh -c "grep -qF '$REPLY_TEXT' '$NCQ/out/rt-chat.txt' || grep -q 'run finished' '$HOST_LOG'"
  took=$(awk -v a="$t0" -v b="$(up)" 'BEGIN{printf "%.1f", b-a}')
  # The run must end by itself: idle for idle_timeout_secs (5), the host writes input/_close and
  # the runner (uid 1000) consumes it and exits 0. The agent cursor is committed by then too.
  wait_until 20 run_ended
  reply=$(grep -F "$REPLY_TEXT" "$NCQ/out/rt-chat.txt" | head -1)
  status=$(run_status)
  host_stop; hrc=$?
  left=$(host_leftovers)
  if [ -z "$reply" ]; then
    log_file "$NCQ/out/rt-chat.txt"; tail -20 "$HOST_LOG" | log_file /dev/stdin
    detail "no scripted reply on local:main (run status ${status:-none}; chat said: $(head -c 200 "$NCQ/out/rt-chat.txt" | tr '\n' ' '))"
    return 1
  fi
  [ "$status" = "Exited(0)" ] || { tail -20 "$HOST_LOG" | log_file /dev/stdin; detail "reply ok, but the run did not end by itself after its idle close (status ${status:-still running after 20s})"; return 1; }
  [ -n "$left" ] && { detail "reply ok, but after stop:$left"; return 1; }
  [ $hrc = 0 ] || { tail -20 "$HOST_LOG" | log_file /dev/stdin; detail "reply ok, but nanoclaw run exited $hrc on SIGTERM"; return 1; }
  detail "reply \"$REPLY_TEXT\" in ${took}s, run ended by idle close with status=$status, host exit 0, nothing left behind"
}
