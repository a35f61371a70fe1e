//! The `[egress]` configuration section: run subnet, proxy port, interface-name prefix, allowlists
//! (global and per group), pinned names.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::net::NetError;
use crate::net::policy::AllowEntry;

/// Private /24 the per-run /30s are cut from.
pub const DEFAULT_SUBNET: &str = "10.200.0.0/24";
/// Port of the egress proxy and API gateway on every run's host-side address.
pub const DEFAULT_PROXY_PORT: u16 = 3128;
/// Prefix of run interface and namespace names; startup cleanup removes everything starting with it.
pub const DEFAULT_NAME_PREFIX: &str = "nclw";
/// The model API, the only destination allowed by default.
pub const DEFAULT_ALLOW: &str = "api.anthropic.com";
/// Kernel log lines per second for dropped packets (the counters count every packet regardless).
pub const DEFAULT_DROP_LOG_RATE: u32 = 10;

/// `[egress]` in config.toml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EgressConfig {
    /// Private IPv4 /24 for run links; one /30 per run (so at most 64 concurrent runs).
    pub subnet: String,
    /// TCP port the proxy/gateway listens on, on each run's host-side address.
    pub proxy_port: u16,
    /// 2-5 lowercase letters or digits; run netns are `<prefix><hash>`, veths `<prefix><hash>h|r`.
    pub name_prefix: String,
    /// Global allowlist: `host`, `*.suffix`, IP or CIDR, each optionally `:port[,port]` (default 443).
    pub allow: Vec<String>,
    /// Per-group allowlists (by group folder), added to the global one.
    pub groups: BTreeMap<String, Vec<String>>,
    /// Names the proxy resolves to fixed addresses instead of asking the system resolver.
    pub hosts: BTreeMap<String, Vec<IpAddr>>,
    /// Kernel log lines per second for dropped packets.
    pub drop_log_rate: u32,
}

impl Default for EgressConfig {
    fn default() -> Self {
        Self {
            subnet: DEFAULT_SUBNET.to_string(),
            proxy_port: DEFAULT_PROXY_PORT,
            name_prefix: DEFAULT_NAME_PREFIX.to_string(),
            allow: vec![DEFAULT_ALLOW.to_string()],
            groups: BTreeMap::new(),
            hosts: BTreeMap::new(),
            drop_log_rate: DEFAULT_DROP_LOG_RATE,
        }
    }
}

impl EgressConfig {
    /// The parsed run subnet; must be a private IPv4 /24.
    pub fn subnet(&self) -> Result<Ipv4Net, NetError> {
        let invalid = |reason: &str| NetError::Config {
            key: "egress.subnet",
            value: self.subnet.clone(),
            reason: reason.to_string(),
        };
        let net: Ipv4Net = self
            .subnet
            .parse()
            .map_err(|_| invalid("not an IPv4 CIDR like 10.200.0.0/24"))?;
        if net.prefix_len() != 24 || net.network() != net.addr() {
            return Err(invalid("must be a /24 network address"));
        }
        if !net.network().is_private() {
            return Err(invalid("must be inside 10/8, 172.16/12 or 192.168/16"));
        }
        Ok(net)
    }

    /// Checks every value; the first problem names its key.
    pub fn validate(&self) -> Result<(), NetError> {
        self.subnet()?;
        let p = &self.name_prefix;
        if !(2..=5).contains(&p.len())
            || !p
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(NetError::Config {
                key: "egress.name_prefix",
                value: p.clone(),
                reason: "2-5 lowercase letters or digits".to_string(),
            });
        }
        if self.proxy_port == 0 {
            return Err(NetError::Config {
                key: "egress.proxy_port",
                value: "0".to_string(),
                reason: "must be 1-65535".to_string(),
            });
        }
        for e in &self.allow {
            parse_entry("egress.allow", e)?;
        }
        for entries in self.groups.values() {
            for e in entries {
                parse_entry("egress.groups", e)?;
            }
        }
        for name in self.hosts.keys() {
            crate::net::policy::normalize_host(name).map_err(|reason| NetError::Config {
                key: "egress.hosts",
                value: name.clone(),
                reason,
            })?;
        }
        Ok(())
    }

    /// The global allowlist, parsed.
    pub fn global_entries(&self) -> Result<Vec<AllowEntry>, NetError> {
        self.allow
            .iter()
            .map(|e| parse_entry("egress.allow", e))
            .collect()
    }

    /// Per-group allowlists, parsed.
    pub fn group_entries(&self) -> Result<BTreeMap<String, Vec<AllowEntry>>, NetError> {
        self.groups
            .iter()
            .map(|(g, es)| {
                let parsed = es
                    .iter()
                    .map(|e| parse_entry("egress.groups", e))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((g.clone(), parsed))
            })
            .collect()
    }
}

fn parse_entry(key: &'static str, text: &str) -> Result<AllowEntry, NetError> {
    text.parse::<AllowEntry>()
        .map_err(|reason| NetError::Config {
            key,
            value: text.to_string(),
            reason,
        })
}

/// Host and run addresses of the run link in slot `slot` of `subnet` (a /30: network, host, run,
/// broadcast).
pub fn slot_addresses(subnet: Ipv4Net, slot: u8) -> Option<(Ipv4Addr, Ipv4Addr)> {
    if slot >= 64 {
        return None;
    }
    let base = u32::from(subnet.network()) + u32::from(slot) * 4;
    Some((Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_allow_only_the_model_api() {
        let c = EgressConfig::default();
        c.validate().unwrap();
        let g = c.global_entries().unwrap();
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].to_string(), "api.anthropic.com:443");
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut c = EgressConfig {
            subnet: "8.8.8.0/24".into(),
            ..Default::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("egress.subnet")
        );
        c.subnet = "10.1.2.0/23".into();
        assert!(c.validate().is_err());
        c.subnet = DEFAULT_SUBNET.into();
        c.name_prefix = "NC".into();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("egress.name_prefix")
        );
        c.name_prefix = "nc".into();
        c.allow = vec!["exa mple.com".into()];
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("egress.allow")
        );
    }

    #[test]
    fn slots_are_disjoint_slash_30s() {
        let net: Ipv4Net = DEFAULT_SUBNET.parse().unwrap();
        assert_eq!(
            slot_addresses(net, 0),
            Some(("10.200.0.1".parse().unwrap(), "10.200.0.2".parse().unwrap()))
        );
        assert_eq!(
            slot_addresses(net, 63),
            Some((
                "10.200.0.253".parse().unwrap(),
                "10.200.0.254".parse().unwrap()
            ))
        );
        assert_eq!(slot_addresses(net, 64), None);
    }
}
