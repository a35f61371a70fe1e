#!/usr/bin/env python3
"""Build-machine half of the scenarios that use the fake model API (run.sh calls it after a boot).

    host-check.py SCENARIO DISK DATA_OFFSET FAKE_API_LOG

Reads the scenario's database from the data partition with debugfs (no mount, no root) and the fake
API's event log (examples/fake_api.rs), and prints one line: "PASS <detail>" or "FAIL <detail>".
Exit status 0 either way; 2 when the check itself could not run.
"""
import json
import os
import sqlite3
import subprocess
import sys
import tempfile

# Data dir of each scenario on the data partition (qemu-tests/guest/lib.sh host_start).
DATA_DIRS = {"round-trip": "/nanoclaw-rt", "oom": "/nanoclaw-oom", "egress": "/nanoclaw-egress"}


def dump_db(disk, offset, data_dir, into):
    """Copies nanoclaw.db (and its WAL, if the host left one) out of the ext4 image."""
    img = f"{disk}?offset={offset}"
    db = os.path.join(into, "nanoclaw.db")
    for name in ("nanoclaw.db", "nanoclaw.db-wal"):
        out = os.path.join(into, name)
        subprocess.run(["debugfs", "-R", f"dump {data_dir}/{name} {out}", img],
                       capture_output=True, check=False)
        if name.endswith("-wal") and os.path.exists(out) and os.path.getsize(out) == 0:
            os.remove(out)
    if not os.path.exists(db) or os.path.getsize(db) == 0:
        return None
    return sqlite3.connect(db)


def fake_events(log, scenario):
    """The fake API's lines about this scenario (and canary hits)."""
    try:
        lines = open(log, encoding="utf-8", errors="replace").read().splitlines()
    except OSError:
        return [], []
    mine = [l for l in lines if len(l.split(" ", 2)) > 1 and l.split(" ", 2)[1] == scenario]
    canary = [l[len("canary-hit "):] for l in lines if l.startswith("canary-hit ")]
    return mine, canary


def key_check(events):
    reqs = [e for e in events if e.startswith("request ")]
    wrong = [e for e in reqs if " key=wrong " in e]
    return len(reqs), len(wrong)


def round_trip(db, events, _canary):
    n, wrong = key_check(events)
    if n == 0:
        return False, "the fake API got no request"
    if wrong:
        return False, f"{wrong} of {n} model requests had a wrong x-api-key (the gateway did not swap the token)"
    rows = db.execute("SELECT content, timestamp FROM messages WHERE chat_jid = 'local:main' "
                      "AND content = 'ncq round trip ping'").fetchall()
    if len(rows) != 1:
        return False, f"{len(rows)} rows for the sent message in messages"
    cur = db.execute("SELECT value FROM router_state WHERE key = 'last_agent_timestamp'").fetchone()
    cursor = json.loads(cur[0]).get("local:main") if cur else None
    if cursor != rows[0][1]:
        return False, f"agent cursor {cursor!r} is not the message's timestamp {rows[0][1]!r}"
    return True, f"fake API: {n} request(s), real key; db: message row, agent cursor = its timestamp"


def oom(db, events, _canary):
    n, wrong = key_check(events)
    if wrong:
        return False, f"{wrong} of {n} model requests had a wrong x-api-key"
    results = [e for e in events if e.startswith("tool_result ")]
    # Request 2 carries tool 1's result: the hog died, the runner lived on; there is no request 3.
    if n != 2 or not results or "dd_rc=137" not in results[0]:
        return False, f"expected 2 model requests, the 2nd with dd_rc=137; got {n}: {results[:1]}"
    rows = db.execute("SELECT count(*) FROM messages WHERE content = 'ncq oom'").fetchone()[0]
    if rows != 1:
        return False, f"{rows} rows for the sent message"
    return True, "fake API: 2 requests (real key), tool 1's hog reported killed to the model"


def egress(db, events, canary):
    n, wrong = key_check(events)
    if n == 0 or wrong:
        return False, f"fake API: {n} requests, {wrong} with a wrong key"
    from_run = [c for c in canary if "ncq-from-run" in c or "ncq-via-proxy" in c]
    if from_run:
        return False, f"the canary on the build machine heard from the run: {from_run}"
    if not any("ncq-control" in c for c in canary):
        return False, "the canary never saw the guest's positive control"
    rows = db.execute("SELECT kind, destination, decision, run_id FROM audit_events").fetchall()
    drops = [r for r in rows if r[0] == "egress.packets_dropped" and r[2] == "deny" and r[3]]
    proxy = [r for r in rows if r[0] == "egress.http_proxy" and r[2] == "deny"
             and (r[1] or "").startswith("10.0.2.2:")]
    if not drops or not proxy:
        return False, f"audit_events lacks a deny row for the drop or the proxy: {rows}"
    return True, (f"audit_events: {drops[0][0]} ({drops[0][1]}), {proxy[0][0]} {proxy[0][1]} deny; "
                  "canary heard only the guest's control")


CHECKS = {"round-trip": round_trip, "oom": oom, "egress": egress}


def main():
    if len(sys.argv) != 5 or sys.argv[1] not in CHECKS:
        print(f"usage: {sys.argv[0]} {'|'.join(CHECKS)} DISK DATA_OFFSET FAKE_API_LOG")
        return 2
    scenario, disk, offset, log = sys.argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        db = dump_db(disk, offset, DATA_DIRS[scenario], tmp)
        if db is None:
            print(f"FAIL no database at {DATA_DIRS[scenario]}/nanoclaw.db on the data partition")
            return 0
        events, canary = fake_events(log, scenario)
        try:
            ok, why = CHECKS[scenario](db, events, canary)
        except sqlite3.Error as e:
            ok, why = False, f"database: {e}"
        finally:
            db.close()
    print(("PASS " if ok else "FAIL ") + why)
    return 0


if __name__ == "__main__":
    sys.exit(main())
