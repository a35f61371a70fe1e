# shellcheck shell=dash
# power-cut: the host pulls the power (qemu monitor `quit`, or `system_reset` with NCQ_CUT) while
# messages are being committed; on the next boot the database must open, pass integrity_check,
# and hold every message whose commit was acknowledged on the console before the cut.
DB=/data/torture.db

power_cut_write() {
  # Let the first commits happen before arming, so the cut lands in steady-state writing.
  say "NCQ-CUT-ARMED power-cut ${CUT_AFTER_ACKS:-150}"
  "$NANOCLAW" db torture --db "$DB" --acks /dev/stdout --count 100000 | ack_to_console
  detail "the torture load finished without a power cut: the host never cut (see its log)"
  return 1
}

power_cut_verify() {
  acks=$(input power-cut.acks)
  [ -s "$acks" ] || { detail "the host passed no acknowledged ids (write phase failed?)"; return 1; }
  # The operator's read-only check first, on the database exactly as the cut left it.
  if ! "$NANOCLAW" db check --db "$DB" > "$NCQ/out/check.txt" 2>&1; then
    log_file "$NCQ/out/check.txt"; detail "read-only db check failed on the cut database"; return 1
  fi
  v=$("$NANOCLAW" db torture --verify --db "$DB" --acks "$acks" 2>&1)
  rc=$?
  detail "after power cut: ${v#torture verify: }"
  [ $rc = 0 ]
}
