//! Test helper (also handy by hand): starts the egress layer with name prefix `$1`, opens `$2` run
//! networks, prints `ready`, and waits to be killed. `tests/net_root.rs` SIGKILLs it to prove that
//! the next start cleans up what a killed host leaves behind.

use std::collections::BTreeMap;

use nanoclaw::net::EgressConfig;
use nanoclaw::net::audit::AuditSink;
use nanoclaw::net::proxy::{Resolver, Upstream};
use nanoclaw::net::secret::Credential;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let prefix = args.next().unwrap_or_else(|| "nchold".into());
    let count: usize = args.next().unwrap_or_else(|| "3".into()).parse()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let cfg = EgressConfig {
            name_prefix: prefix,
            ..EgressConfig::default()
        };
        let upstream = Upstream::new("https://api.test", rustls::RootCertStore::empty())?;
        let credential = Credential::parse("ANTHROPIC_API_KEY=sk-ant-holder-0000000000")
            .ok_or_else(|| anyhow::anyhow!("credential"))?;
        let (audit, _rx) = AuditSink::new(16);
        let egress = nanoclaw::net::Egress::start(
            &cfg,
            upstream,
            credential,
            Resolver::new(BTreeMap::new(), false),
            audit,
        )
        .await?;
        for i in 0..count {
            egress.begin_run(&format!("holder-run-{i}"), "g").await?;
        }
        println!("ready");
        std::future::pending::<()>().await;
        Ok(())
    })
}
