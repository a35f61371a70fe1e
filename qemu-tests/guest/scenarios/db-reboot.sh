# shellcheck shell=dash
# db-reboot: messages written through the store to the database on the data partition (the
# configured data_dir) survive a clean reboot, every acknowledged one, and nothing else appears.
DB=/data/nanoclaw/nanoclaw.db
COUNT=200

db_reboot_write() {
  "$NANOCLAW" db torture --db "$DB" --acks /dev/stdout --count $COUNT | ack_to_console
  rc=$?
  "$NANOCLAW" db check --db "$DB" > "$NCQ/out/check.txt" 2>&1 || { log_file "$NCQ/out/check.txt"; detail "db check failed after writing"; return 1; }
  n=$(awk '$1 == "messages" {print $2}' "$NCQ/out/check.txt")
  detail "$n messages written and acknowledged, db check ok"
  [ $rc = 0 ] && [ "$n" = $COUNT ]
}

db_reboot_verify() {
  acks=$(input db-reboot.acks)
  [ -s "$acks" ] || { detail "the host passed no acknowledged ids (write phase failed?)"; return 1; }
  "$NANOCLAW" db check --db "$DB" > "$NCQ/out/check.txt" 2>&1 || { log_file "$NCQ/out/check.txt"; detail "db check failed after reboot"; return 1; }
  v=$("$NANOCLAW" db torture --verify --db "$DB" --acks "$acks" 2>&1)
  rc=$?
  detail "after reboot: ${v#torture verify: }"
  # Nothing lost, nothing extra: every acknowledged id is there and there are no others.
  [ $rc = 0 ] && echo "$v" | grep -q "acked=$COUNT present=$COUNT missing=0 integrity=ok"
}
