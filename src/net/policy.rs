//! Egress policy, pure: allowlist entries, the per-group decision, time-bounded overrides, and the
//! address ranges a name may never resolve to.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};
use tokio::time::Instant;

/// Port an entry allows when it names none.
pub const DEFAULT_PORT: u16 = 443;
/// Longest override the CLI grants.
pub const MAX_OVERRIDE: Duration = Duration::from_secs(24 * 3600);
/// Overrides held at once (bounded like everything else).
pub const MAX_OVERRIDES: usize = 256;

/// What an entry matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// One name, compared case-insensitively without a trailing dot.
    Exact(String),
    /// `*.suffix`: any name ending in `.suffix` (not `suffix` itself).
    Suffix(String),
    /// One address.
    Ip(IpAddr),
    /// An address range.
    Net(IpNet),
}

/// One allowlist entry: a pattern and the ports it opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowEntry {
    pub pattern: HostPattern,
    pub ports: Vec<u16>,
}

/// Lower-cases a DNS name, strips one trailing dot, and checks its syntax.
pub fn normalize_host(name: &str) -> Result<String, String> {
    let n = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if n.is_empty() || n.len() > 253 {
        return Err("a host name has 1-253 characters".to_string());
    }
    for label in n.split('.') {
        if label.is_empty()
            || label.len() > 63
            || label.starts_with('-')
            || label.ends_with('-')
            || !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!("{name:?} is not a valid host name"));
        }
    }
    Ok(n)
}

fn parse_ports(text: &str) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for p in text.split(',') {
        match p.trim().parse::<u16>() {
            Ok(port) if port != 0 => ports.push(port),
            _ => return Err(format!("{p:?} is not a port (1-65535)")),
        }
    }
    Ok(ports)
}

impl FromStr for AllowEntry {
    type Err = String;

    /// `host`, `*.suffix`, `1.2.3.4`, `10.0.0.0/8`, `[2001:db8::1]`, each with an optional `:port[,port]`.
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (host, ports) = if let Some(rest) = text.strip_prefix('[') {
            let (inside, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("{text:?}: unclosed '['"))?;
            let ports = match after.strip_prefix(':') {
                Some(p) => parse_ports(p)?,
                None if after.is_empty() => vec![DEFAULT_PORT],
                None => return Err(format!("{text:?}: expected ':port' after ']'")),
            };
            (inside, ports)
        } else if text.matches(':').count() > 1 {
            // A bare IPv6 address or range without brackets: no port part.
            (text, vec![DEFAULT_PORT])
        } else {
            match text.rsplit_once(':') {
                Some((h, p)) => (h, parse_ports(p)?),
                None => (text, vec![DEFAULT_PORT]),
            }
        };
        let pattern = if let Ok(ip) = host.parse::<IpAddr>() {
            HostPattern::Ip(ip)
        } else if let Ok(net) = host.parse::<IpNet>() {
            HostPattern::Net(net.trunc())
        } else if let Some(suffix) = host.strip_prefix("*.") {
            HostPattern::Suffix(normalize_host(suffix)?)
        } else {
            HostPattern::Exact(normalize_host(host)?)
        };
        Ok(Self { pattern, ports })
    }
}

impl fmt::Display for AllowEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pattern {
            HostPattern::Exact(h) => write!(f, "{h}")?,
            HostPattern::Suffix(s) => write!(f, "*.{s}")?,
            HostPattern::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]")?,
            HostPattern::Ip(ip) => write!(f, "{ip}")?,
            HostPattern::Net(n) => write!(f, "{n}")?,
        }
        let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
        write!(f, ":{}", ports.join(","))
    }
}

/// A destination as the run named it: a host name or a literal address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Name(String),
    Ip(IpAddr),
}

impl Host {
    /// Parses a request's host part (brackets around IPv6 allowed); names are normalized.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .unwrap_or(text);
        match t.parse::<IpAddr>() {
            Ok(ip) => Ok(Self::Ip(ip)),
            Err(_) => normalize_host(t).map(Self::Name),
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(n) => f.write_str(n),
            Self::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Self::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl AllowEntry {
    /// Whether this entry names `host` (ignoring ports).
    pub fn matches_host(&self, host: &Host) -> bool {
        match (&self.pattern, host) {
            (HostPattern::Exact(e), Host::Name(n)) => e == n,
            (HostPattern::Suffix(s), Host::Name(n)) => {
                n.len() > s.len() + 1
                    && n.ends_with(s.as_str())
                    && n[..n.len() - s.len()].ends_with('.')
            }
            (HostPattern::Ip(a), Host::Ip(b)) => canonical(*a) == canonical(*b),
            (HostPattern::Net(net), Host::Ip(ip)) => net.contains(&canonical(*ip)),
            _ => false,
        }
    }

    /// Whether this entry allows `host:port`.
    pub fn allows(&self, host: &Host, port: u16) -> bool {
        self.ports.contains(&port) && self.matches_host(host)
    }

    /// Whether the operator named addresses explicitly (IP/CIDR) rather than a name.
    pub fn is_address(&self) -> bool {
        matches!(self.pattern, HostPattern::Ip(_) | HostPattern::Net(_))
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it carries.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Why a resolved address may not be a proxy destination, or `None` when it may.
///
/// `explicit` is true when the operator allowlisted the address itself (IP/CIDR entry): private LAN
/// ranges are then fine, but loopback, link-local (which holds cloud metadata, 169.254.169.254),
/// unspecified, multicast and the run subnet never are. A *name* may resolve only to public space:
/// otherwise a DNS answer could turn an allowlisted name into a path to the host or the LAN.
pub fn forbidden_reason(ip: IpAddr, explicit: bool, run_subnet: Ipv4Net) -> Option<&'static str> {
    let ip = canonical(ip);
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_loopback() {
                Some("loopback address")
            } else if v4 == Ipv4Addr::new(169, 254, 169, 254) {
                Some("cloud metadata address")
            } else if v4.is_link_local() {
                Some("link-local address")
            } else if v4.is_unspecified() || o[0] == 0 {
                Some("unspecified address")
            } else if v4.is_multicast() || v4.is_broadcast() || o[0] >= 240 {
                Some("multicast/reserved address")
            } else if run_subnet.contains(&v4) {
                Some("run network address")
            } else if explicit {
                None
            } else if v4.is_private() {
                Some("private address")
            } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
                Some("shared (CGNAT) address")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let seg0 = v6.segments()[0];
            if v6.is_loopback() {
                Some("loopback address")
            } else if v6.is_unspecified() {
                Some("unspecified address")
            } else if (seg0 & 0xffc0) == 0xfe80 {
                Some("link-local address")
            } else if v6.is_multicast() {
                Some("multicast/reserved address")
            } else if explicit {
                None
            } else if (seg0 & 0xfe00) == 0xfc00 {
                Some("private (unique local) address")
            } else if v6 == Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0xa9fe, 0xa9fe, 0) {
                Some("cloud metadata address")
            } else {
                None
            }
        }
    }
}

/// Which list allowed a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowedBy {
    Global,
    Group,
    /// An override; its id for the audit trail.
    Override(u64),
}

/// The policy decision for one destination, before name resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed; `explicit_address` when an IP/CIDR entry matched (see [`forbidden_reason`]).
    Allow {
        by: AllowedBy,
        explicit_address: bool,
    },
    Deny(String),
}

/// A time-bounded grant for one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub id: u64,
    pub group: String,
    pub entry: AllowEntry,
    pub expires: Instant,
}

/// Global and per-group allowlists plus live overrides.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    global: Vec<AllowEntry>,
    groups: BTreeMap<String, Vec<AllowEntry>>,
    overrides: Vec<Override>,
    next_id: u64,
}

impl Policy {
    pub fn new(global: Vec<AllowEntry>, groups: BTreeMap<String, Vec<AllowEntry>>) -> Self {
        Self {
            global,
            groups,
            overrides: Vec::new(),
            next_id: 1,
        }
    }

    /// Decides `host:port` for `group` at `now`. Expired overrides never match, even before
    /// [`Policy::expire`] has removed them.
    pub fn check(&self, group: &str, host: &Host, port: u16, now: Instant) -> Verdict {
        if let Some(e) = self.global.iter().find(|e| e.allows(host, port)) {
            return Verdict::Allow {
                by: AllowedBy::Global,
                explicit_address: e.is_address(),
            };
        }
        if let Some(e) = self
            .groups
            .get(group)
            .and_then(|es| es.iter().find(|e| e.allows(host, port)))
        {
            return Verdict::Allow {
                by: AllowedBy::Group,
                explicit_address: e.is_address(),
            };
        }
        if let Some(o) = self
            .overrides
            .iter()
            .find(|o| o.group == group && o.expires > now && o.entry.allows(host, port))
        {
            return Verdict::Allow {
                by: AllowedBy::Override(o.id),
                explicit_address: o.entry.is_address(),
            };
        }
        let named = self
            .global
            .iter()
            .chain(self.groups.get(group).into_iter().flatten())
            .any(|e| e.matches_host(host));
        if named {
            Verdict::Deny(format!("port {port} is not allowed for {host}"))
        } else {
            Verdict::Deny(format!("{host} is not in the allowlist"))
        }
    }

    /// Grants `entry` to `group` until `now + duration` (capped at [`MAX_OVERRIDE`]); returns the override.
    pub fn grant(
        &mut self,
        group: &str,
        entry: AllowEntry,
        duration: Duration,
        now: Instant,
    ) -> Result<Override, String> {
        if duration.is_zero() || duration > MAX_OVERRIDE {
            return Err(format!(
                "override duration must be between 1s and {}h",
                MAX_OVERRIDE.as_secs() / 3600
            ));
        }
        if self.overrides.len() >= MAX_OVERRIDES {
            return Err(format!("too many live overrides (max {MAX_OVERRIDES})"));
        }
        let o = Override {
            id: self.next_id,
            group: group.to_string(),
            entry,
            expires: now + duration,
        };
        self.next_id += 1;
        self.overrides.push(o.clone());
        Ok(o)
    }

    /// Removes and returns the overrides that ended at or before `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<Override> {
        let (gone, live) = self.overrides.drain(..).partition(|o| o.expires <= now);
        self.overrides = live;
        gone
    }

    /// When the next override ends.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.overrides.iter().map(|o| o.expires).min()
    }

    /// Live overrides.
    pub fn overrides(&self) -> &[Override] {
        &self.overrides
    }
}

/// Parses `10m`, `90s`, `2h`, `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let mut total = 0u64;
    let mut num = String::new();
    let bad = || format!("{text:?} is not a duration like 90s, 10m or 1h30m");
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().map_err(|_| bad())?;
        num.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return Err(bad()),
        };
        total = total
            .checked_add(n.checked_mul(unit).ok_or_else(bad)?)
            .ok_or_else(bad)?;
    }
    if !num.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(s: &str) -> AllowEntry {
        s.parse().unwrap()
    }
    fn name(s: &str) -> Host {
        Host::parse(s).unwrap()
    }
    fn subnet() -> Ipv4Net {
        "10.200.0.0/24".parse().unwrap()
    }

    #[test]
    fn entries_parse_with_default_and_explicit_ports() {
        assert_eq!(e("API.Example.com.").to_string(), "api.example.com:443");
        assert_eq!(e("*.github.com:443,22").to_string(), "*.github.com:443,22");
        assert_eq!(e("192.0.2.7:8080").to_string(), "192.0.2.7:8080");
        assert_eq!(e("10.1.0.0/16").to_string(), "10.1.0.0/16:443");
        assert_eq!(e("[2001:db8::1]:80").to_string(), "[2001:db8::1]:80");
        assert_eq!(e("2001:db8::/32").to_string(), "2001:db8::/32:443");
        for bad in ["", "a b", "x:0", "x:99999", "-a.com", "[::1", "*.", "a..b"] {
            assert!(bad.parse::<AllowEntry>().is_err(), "{bad}");
        }
    }

    #[test]
    fn suffix_matches_subdomains_only() {
        let s = e("*.example.com");
        assert!(s.allows(&name("a.example.com"), 443));
        assert!(s.allows(&name("A.B.Example.COM"), 443));
        assert!(!s.allows(&name("example.com"), 443));
        assert!(!s.allows(&name("badexample.com"), 443));
        assert!(!s.allows(&name("a.example.com"), 80));
    }

    #[test]
    fn ip_and_cidr_entries_match_addresses_not_names() {
        let c = e("198.18.0.0/15:80");
        assert!(c.allows(&name("198.19.1.2"), 80));
        assert!(c.allows(&name("[::ffff:198.18.0.1]"), 80));
        assert!(!c.allows(&name("198.20.0.1"), 80));
        assert!(!e("1.2.3.4").allows(&name("one.example"), 443));
    }

    #[test]
    fn group_lists_add_to_the_global_one_and_ports_are_per_entry() {
        let p = Policy::new(
            vec![e("api.anthropic.com")],
            BTreeMap::from([("dev".to_string(), vec![e("*.github.com"), e("pypi.org:80")])]),
        );
        let now = Instant::now();
        assert!(matches!(
            p.check("dev", &name("api.anthropic.com"), 443, now),
            Verdict::Allow {
                by: AllowedBy::Global,
                ..
            }
        ));
        assert!(matches!(
            p.check("dev", &name("raw.github.com"), 443, now),
            Verdict::Allow {
                by: AllowedBy::Group,
                ..
            }
        ));
        assert_eq!(
            p.check("other", &name("raw.github.com"), 443, now),
            Verdict::Deny("raw.github.com is not in the allowlist".into())
        );
        assert_eq!(
            p.check("dev", &name("api.anthropic.com"), 22, now),
            Verdict::Deny("port 22 is not allowed for api.anthropic.com".into())
        );
        assert!(matches!(
            p.check("dev", &name("pypi.org"), 443, now),
            Verdict::Deny(_)
        ));
    }

    #[test]
    fn names_may_resolve_only_to_public_space() {
        let f = |s: &str, explicit| forbidden_reason(s.parse().unwrap(), explicit, subnet());
        assert_eq!(f("127.0.0.1", false), Some("loopback address"));
        assert_eq!(f("169.254.169.254", true), Some("cloud metadata address"));
        assert_eq!(f("169.254.1.1", false), Some("link-local address"));
        assert_eq!(f("10.0.0.5", false), Some("private address"));
        assert_eq!(f("192.168.1.1", false), Some("private address"));
        assert_eq!(f("100.64.0.1", false), Some("shared (CGNAT) address"));
        assert_eq!(f("10.200.0.1", true), Some("run network address"));
        assert_eq!(f("0.0.0.0", false), Some("unspecified address"));
        assert_eq!(f("::1", true), Some("loopback address"));
        assert_eq!(f("::ffff:127.0.0.1", false), Some("loopback address"));
        assert_eq!(f("fe80::1", false), Some("link-local address"));
        assert_eq!(f("fd00::1", false), Some("private (unique local) address"));
        assert_eq!(f("10.0.0.5", true), None);
        assert_eq!(f("198.18.0.10", false), None);
        assert_eq!(f("2606:4700::1", false), None);
    }

    #[tokio::test(start_paused = true)]
    async fn overrides_expire_on_time() {
        let mut p = Policy::new(vec![], BTreeMap::new());
        let start = Instant::now();
        let o = p
            .grant("g", e("pypi.org"), Duration::from_secs(600), start)
            .unwrap();
        assert!(matches!(
            p.check("g", &name("pypi.org"), 443, Instant::now()),
            Verdict::Allow { by: AllowedBy::Override(id), .. } if id == o.id
        ));
        assert!(matches!(
            p.check("other", &name("pypi.org"), 443, Instant::now()),
            Verdict::Deny(_)
        ));
        tokio::time::advance(Duration::from_secs(599)).await;
        assert!(p.expire(Instant::now()).is_empty());
        assert!(matches!(
            p.check("g", &name("pypi.org"), 443, Instant::now()),
            Verdict::Allow { .. }
        ));
        tokio::time::advance(Duration::from_secs(1)).await;
        // Denied at the deadline even before the sweep runs.
        assert!(matches!(
            p.check("g", &name("pypi.org"), 443, Instant::now()),
            Verdict::Deny(_)
        ));
        let gone = p.expire(Instant::now());
        assert_eq!(gone.len(), 1);
        assert!(p.overrides().is_empty());
        assert!(
            p.grant("g", e("x.org"), Duration::ZERO, Instant::now())
                .is_err()
        );
        assert!(
            p.grant(
                "g",
                e("x.org"),
                MAX_OVERRIDE + Duration::from_secs(1),
                Instant::now()
            )
            .is_err()
        );
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("45s"), Ok(Duration::from_secs(45)));
        for bad in ["", "10", "m", "0s", "10x", "-1m"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
