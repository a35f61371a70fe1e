# shellcheck shell=dash
# doctor: `nanoclaw doctor` on the guest, each check compared with qemu-tests/expect/doctor.conf
# ("pass" checks must be ok; "pending" checks may fail until their component exists; checks the
# file does not list must pass).
doctor_run() {
  out=$NCQ/out/doctor.txt
  "$NANOCLAW" doctor > "$out" 2>&1
  rc=$?
  log_file "$out"
  bad="" pending_fail="" pending_ok="" n=0
  while IFS='|' read -r name want _; do
    name=$(echo "$name" | sed 's/^ *//; s/ *$//'); want=$(echo "$want" | tr -d ' ')
    case $name in ''|'#'*) continue ;; esac
    n=$((n + 1))
    line=$(grep -F "] $name " "$out" | head -1)
    if [ -z "$line" ]; then bad="$bad [$name: missing from doctor output]"; continue; fi
    case $line in
      "[ok  ]"*) [ "$want" = pending ] && pending_ok="$pending_ok [$name]" ;;
      *) if [ "$want" = pending ]; then pending_fail="$pending_fail [$name]"; else bad="$bad [$name]"; fi ;;
    esac
  done < "$NCQ/expect/doctor.conf"
  # Checks doctor prints that the expectations do not list must pass too.
  unlisted=$(grep -E '^\[FAIL\]' "$out" | cut -c8-24 | sed 's/ *$//' | while read -r c; do
    grep -q "^ *$c *|" "$NCQ/expect/doctor.conf" || echo "[$c: failing, not in expect/doctor.conf]"; done | tr '\n' ' ')
  bad="$bad$unlisted"
  total=$(grep -cE '^\[(ok  |FAIL)\]' "$out")
  msg="$total checks, exit $rc"
  [ -n "$pending_fail" ] && msg="$msg; pending (allowed to fail):$pending_fail"
  [ -n "$pending_ok" ] && msg="$msg; now passing, mark pass in expect/doctor.conf:$pending_ok"
  if [ -n "$bad" ] || [ "$total" = 0 ]; then detail "failing:$bad; $msg"; return 1; fi
  # Exit 0 only when all pass; 5 = some check failed (allowed only for pending ones).
  if [ $rc != 0 ] && { [ $rc != 5 ] || [ -z "$pending_fail" ]; }; then detail "unexpected exit $rc; $msg"; return 1; fi
  detail "$msg"
}
