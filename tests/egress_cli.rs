//! `nanoclaw egress allow`: the thin CLI over `net::overrides::persist_override`.

use std::process::Command;

use nanoclaw::store::Store;

#[test]
fn egress_allow_stores_a_time_bounded_override() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("n.db");
    let out = Command::new(env!("CARGO_BIN_EXE_nanoclaw"))
        .args([
            "egress", "allow", "--group", "dev", "--host", "pypi.org", "--for", "10m",
        ])
        .arg("--db")
        .arg(&db)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("override #1: pypi.org:443 for group dev until "),
        "{stdout}"
    );
    let store = Store::open(&db).unwrap();
    let rows = store
        .active_overrides(&nanoclaw::core::time::now_iso())
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        store.audit_events(None).unwrap()[0].kind,
        "egress.override_granted"
    );
    let bad = Command::new(env!("CARGO_BIN_EXE_nanoclaw"))
        .args([
            "egress", "allow", "--group", "dev", "--host", "pypi.org", "--for", "forever",
        ])
        .arg("--db")
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a duration"));
}
