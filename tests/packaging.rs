//! The packaged configuration as the host binary reads it: the appliance config.toml that the
//! Yocto layer and the Buildroot tree install, and the environment the systemd unit sets.
//! (The packaging trees themselves are checked by `packaging/check.sh`.)

mod common;

use std::path::{Path, PathBuf};

use common::nanoclaw;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn appliance_configs() -> Vec<PathBuf> {
    vec![
        repo().join("meta-nanoclaw/recipes-nanoclaw/nanoclaw-conf/files/config.toml"),
        repo().join("buildroot-external/board/nanoclaw/rootfs-overlay/etc/nanoclaw/config.toml"),
    ]
}

fn show(config: &Path, env: &[(&str, &str)]) -> String {
    let cfg = config.to_str().expect("utf-8 path");
    let out = nanoclaw(&["--config", cfg, "config", "show"], env);
    assert!(
        out.status.success(),
        "{}: {}",
        config.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn packaged_appliance_configs_pass_config_check() {
    for config in appliance_configs() {
        let cfg = config.to_str().expect("utf-8 path");
        let out = nanoclaw(&["--config", cfg, "config", "check"], &[]);
        assert!(
            out.status.success(),
            "{}: {}",
            config.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn packaged_appliance_configs_keep_the_database_on_the_data_partition() {
    for config in appliance_configs() {
        let shown = show(&config, &[]);
        assert!(
            shown.contains("data_dir = \"/data/nanoclaw\""),
            "{}: {shown}",
            config.display()
        );
    }
}

/// Every `Environment=NANOCLAW_…` line of the unit must name a real configuration key, and the
/// credential override must point the host at systemd's credentials directory.
#[test]
fn unit_environment_overrides_are_config_keys() {
    let unit = std::fs::read_to_string(repo().join("packaging/systemd/nanoclaw.service"))
        .expect("read unit");
    let creds_dir = "/run/credentials/nanoclaw.service";
    let vars: Vec<(String, String)> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| k.starts_with("NANOCLAW_"))
        .map(|(k, v)| (k.to_string(), v.replace("%d", creds_dir)))
        .collect();
    assert!(
        vars.iter()
            .any(|(k, v)| k == "NANOCLAW_MODEL_CREDENTIALS_FILE"
                && v == &format!("{creds_dir}/model")),
        "unit must set NANOCLAW_MODEL_CREDENTIALS_FILE=%d/model, found {vars:?}"
    );
    let env: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let shown = show(&appliance_configs()[0], &env);
    assert!(
        shown.contains(&format!("credentials_file = \"{creds_dir}/model\"")),
        "{shown}"
    );
    // The override mechanism rejects unknown keys, so a typo in the unit would fail here.
    let cfg = appliance_configs()[0].display().to_string();
    let bad = nanoclaw(
        &["--config", &cfg, "config", "check"],
        &[("NANOCLAW_MODEL_CREDENTIAL_FILE", "/x")],
    );
    assert!(!bad.status.success());
}
