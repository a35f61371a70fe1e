//! The `inet nanoclaw` nftables table, through the `nftables` crate (JSON over the `nft` binary).
//!
//! Rendering is pure (tested without privileges); applying runs `nft -j -f -` in the calling thread's
//! network namespace, as one transaction.
//!
//! Layout (`<p>` is the interface-name prefix, `P` the proxy port):
//! ```text
//! table inet nanoclaw {
//!   chain prerouting { type filter hook prerouting priority raw; policy accept;
//!     iifname "<p>*" meta nfproto ipv4 meta l4proto tcp tcp dport P fib daddr . iif type local accept
//!     iifname "<p>*" jump run_drops              # per-run: limit+log, counter, drop
//!     iifname "<p>*" counter drop comment "unattributed"
//!   }
//!   chain run_drops { }                          # rules added and removed per run
//!   chain forward { type filter hook forward priority filter; policy accept;
//!     iifname "<p>*" counter drop;  oifname "<p>*" counter drop }
//! }
//! ```
//! Filtering in prerouting (not input) sees every packet from a run, whether it is addressed to the
//! host or meant to be routed on, and at raw priority a dropped packet never creates conntrack state.
//! `fib daddr . iif type local` accepts only the address of the interface the packet came in on: a
//! run cannot reach the proxy listener of another run's link. IPv6 (any nfproto other than ipv4),
//! UDP (so DNS), ICMP and every other port fall through to the counted drop.

use std::borrow::Cow;
use std::collections::HashSet;

use nftables::batch::Batch;
use nftables::expr::{
    Expression, Fib, FibFlag, FibResult, Meta, MetaKey, NamedExpression, Payload, PayloadField,
};
use nftables::helper;
use nftables::schema::{Chain, NfListObject, NfObject, Nftables, Rule, Table};
use nftables::stmt::{
    AnonymousCounter, Counter, JumpTarget, Limit, Log, Match, Operator, Statement,
};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use crate::net::NetError;

/// The table's name (family `inet`).
pub const TABLE: &str = "nanoclaw";
const PREROUTING: &str = "prerouting";
const FORWARD: &str = "forward";
const RUN_DROPS: &str = "run_drops";
const UNATTRIBUTED: &str = "unattributed";
/// Priority of the `raw` hook slot: before conntrack.
const PRIO_RAW: i32 = -300;

/// Inputs of the base ruleset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesetParams {
    /// Interface-name prefix of run links (host side).
    pub prefix: String,
    pub proxy_port: u16,
}

fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn eq(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right,
        op: Operator::EQ,
    })
}

fn string(s: impl Into<String>) -> Expression<'static> {
    Expression::String(Cow::Owned(s.into()))
}

fn counter() -> Statement<'static> {
    Statement::Counter(Counter::Anonymous(Some(AnonymousCounter::default())))
}

fn rule(
    chain: &str,
    expr: Vec<Statement<'static>>,
    comment: Option<String>,
) -> NfListObject<'static> {
    NfListObject::Rule(Rule {
        family: NfFamily::INet,
        table: TABLE.into(),
        chain: Cow::Owned(chain.to_string()),
        expr: expr.into(),
        handle: None,
        index: None,
        comment: comment.map(Cow::Owned),
    })
}

fn table() -> NfListObject<'static> {
    NfListObject::Table(Table {
        family: NfFamily::INet,
        name: TABLE.into(),
        handle: None,
    })
}

fn base_chain(name: &str, hook: NfHook, prio: i32) -> NfListObject<'static> {
    NfListObject::Chain(Chain {
        family: NfFamily::INet,
        table: TABLE.into(),
        name: Cow::Owned(name.to_string()),
        _type: Some(NfChainType::Filter),
        hook: Some(hook),
        prio: Some(prio),
        policy: Some(NfChainPolicy::Accept),
        ..Chain::default()
    })
}

/// The whole table, replacing any previous copy in the same transaction (`add` + `delete` + `add`,
/// so it works whether or not the table exists and never leaves the host without it half-way).
pub fn render_base(p: &RulesetParams) -> Nftables<'static> {
    let runs = format!("{}*", p.prefix);
    let mut b = Batch::new();
    b.add(table());
    b.delete(table());
    b.add(table());
    b.add(base_chain(PREROUTING, NfHook::Prerouting, PRIO_RAW));
    b.add(NfListObject::Chain(Chain {
        family: NfFamily::INet,
        table: TABLE.into(),
        name: RUN_DROPS.into(),
        ..Chain::default()
    }));
    b.add(base_chain(FORWARD, NfHook::Forward, 0));
    let fib = Expression::Named(NamedExpression::Fib(Fib {
        result: FibResult::Type,
        flags: HashSet::from([FibFlag::Daddr, FibFlag::Iif]),
    }));
    b.add(rule(
        PREROUTING,
        vec![
            eq(meta(MetaKey::Iifname), string(&runs)),
            eq(meta(MetaKey::Nfproto), string("ipv4")),
            eq(meta(MetaKey::L4proto), string("tcp")),
            eq(
                Expression::Named(NamedExpression::Payload(Payload::PayloadField(
                    PayloadField {
                        protocol: "tcp".into(),
                        field: "dport".into(),
                    },
                ))),
                Expression::Number(u32::from(p.proxy_port)),
            ),
            eq(fib, string("local")),
            counter(),
            Statement::Accept(None),
        ],
        Some("proxy".to_string()),
    ));
    b.add(rule(
        PREROUTING,
        vec![
            eq(meta(MetaKey::Iifname), string(&runs)),
            Statement::Jump(JumpTarget {
                target: RUN_DROPS.into(),
            }),
        ],
        None,
    ));
    b.add(rule(
        PREROUTING,
        vec![
            eq(meta(MetaKey::Iifname), string(&runs)),
            counter(),
            Statement::Drop(None),
        ],
        Some(UNATTRIBUTED.to_string()),
    ));
    for key in [MetaKey::Iifname, MetaKey::Oifname] {
        b.add(rule(
            FORWARD,
            vec![
                eq(meta(key), string(&runs)),
                counter(),
                Statement::Drop(None),
            ],
            Some("no forwarding".to_string()),
        ));
    }
    b.to_nftables()
}

/// Removes the table.
pub fn render_delete() -> Nftables<'static> {
    let mut b = Batch::new();
    b.add(table());
    b.delete(table());
    b.to_nftables()
}

fn run_comment(ifname: &str) -> String {
    format!("run {ifname}")
}

/// Per-run rules: a rate-limited kernel log line with a prefix naming the run interface, then a counted
/// drop. Both carry the comment `run <ifname>` so they can be found and removed.
pub fn render_run_add(ifname: &str, log_rate: u32) -> Nftables<'static> {
    let mut b = Batch::new();
    let m = || eq(meta(MetaKey::Iifname), string(ifname));
    if log_rate > 0 {
        b.add(rule(
            RUN_DROPS,
            vec![
                m(),
                Statement::Limit(Limit {
                    rate: log_rate,
                    rate_unit: None,
                    per: Some("second".into()),
                    burst: None,
                    burst_unit: None,
                    inv: None,
                }),
                Statement::Log(Some(Log {
                    prefix: Some(Cow::Owned(format!("nanoclaw drop {ifname}: "))),
                    ..Log::new(None)
                })),
            ],
            Some(run_comment(ifname)),
        ));
    }
    b.add(rule(
        RUN_DROPS,
        vec![m(), counter(), Statement::Drop(None)],
        Some(run_comment(ifname)),
    ));
    b.to_nftables()
}

/// Deletes rules of `chain` by handle.
pub fn render_rule_delete(chain: &str, handles: &[u32]) -> Nftables<'static> {
    let mut b = Batch::new();
    for h in handles {
        b.delete(NfListObject::Rule(Rule {
            family: NfFamily::INet,
            table: TABLE.into(),
            chain: Cow::Owned(chain.to_string()),
            expr: Vec::new().into(),
            handle: Some(*h),
            index: None,
            comment: None,
        }));
    }
    b.to_nftables()
}

/// Applies a batch in the calling thread's network namespace.
pub fn apply(n: &Nftables<'_>) -> Result<(), NetError> {
    helper::apply_ruleset(n).map_err(|e| NetError::Nft(e.to_string()))
}

/// The table as the kernel has it, or `None` when it does not exist.
pub fn list_table() -> Result<Option<Nftables<'static>>, NetError> {
    // Run directly rather than through the crate's helper: its error drops nft's stderr, which is the
    // only way to tell "no such table" from a real failure.
    let out = std::process::Command::new("nft")
        .args(["-j", "list", "table", "inet", TABLE])
        .output()
        .map_err(|e| NetError::Nft(format!("cannot run nft: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("No such file or directory") {
            return Ok(None);
        }
        return Err(NetError::Nft(err.trim().to_string()));
    }
    serde_json::from_slice(&out.stdout)
        .map(Some)
        .map_err(|e| NetError::Nft(format!("unreadable nft listing: {e}")))
}

fn rules<'a, 'b>(n: &'a Nftables<'b>) -> impl Iterator<Item = &'a Rule<'b>> {
    n.objects.iter().filter_map(|o| match o {
        NfObject::ListObject(NfListObject::Rule(r)) => Some(r),
        _ => None,
    })
}

fn rule_packets(r: &Rule<'_>) -> u64 {
    r.expr
        .iter()
        .map(|s| match s {
            Statement::Counter(Counter::Anonymous(Some(c))) => c.packets.unwrap_or(0) as u64,
            _ => 0,
        })
        .sum()
}

/// Packets dropped for run interface `ifname`, and the handles of its rules.
pub fn run_rules(n: &Nftables<'_>, ifname: &str) -> (u64, Vec<u32>) {
    let comment = run_comment(ifname);
    let mut packets = 0;
    let mut handles = Vec::new();
    for r in rules(n).filter(|r| r.chain == RUN_DROPS && r.comment.as_deref() == Some(&comment)) {
        packets += rule_packets(r);
        handles.extend(r.handle);
    }
    (packets, handles)
}

/// Every run interface that has rules in `run_drops`, with its handles (for cleanup of leftovers).
pub fn all_run_rules(n: &Nftables<'_>) -> Vec<(String, u32)> {
    rules(n)
        .filter(|r| r.chain == RUN_DROPS)
        .filter_map(|r| {
            let ifname = r.comment.as_deref()?.strip_prefix("run ")?;
            Some((ifname.to_string(), r.handle?))
        })
        .collect()
}

/// Packets dropped from run interfaces that had no per-run rule, and packets refused forwarding.
pub fn unattributed_packets(n: &Nftables<'_>) -> u64 {
    rules(n)
        .filter(|r| {
            matches!(
                r.comment.as_deref(),
                Some(UNATTRIBUTED) | Some("no forwarding")
            )
        })
        .map(rule_packets)
        .sum()
}

/// Names of the chains [`render_run_add`] and friends use, for callers that delete by handle.
pub const RUN_DROPS_CHAIN: &str = RUN_DROPS;

#[cfg(test)]
mod tests {
    use super::*;

    fn json(n: &Nftables<'_>) -> serde_json::Value {
        serde_json::to_value(n).unwrap()
    }

    #[test]
    fn base_ruleset_replaces_the_table_atomically_and_allows_only_the_proxy() {
        let n = render_base(&RulesetParams {
            prefix: "nclw".into(),
            proxy_port: 3128,
        });
        let v = json(&n);
        let cmds = v["nftables"].as_array().unwrap();
        // add table, delete table, add table: one transaction that replaces any old copy.
        assert!(cmds[0]["add"]["table"]["name"] == "nanoclaw");
        assert!(cmds[1]["delete"]["table"]["name"] == "nanoclaw");
        assert!(cmds[2]["add"]["table"]["family"] == "inet");
        let rules: Vec<&serde_json::Value> =
            cmds.iter().filter_map(|c| c["add"].get("rule")).collect();
        let accepts: Vec<_> = rules
            .iter()
            .filter(|r| {
                r["expr"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s.get("accept").is_some())
            })
            .collect();
        assert_eq!(accepts.len(), 1, "exactly one accept rule");
        let accept = accepts[0].to_string();
        for needle in [
            r#""right":"nclw*""#,
            r#""right":3128"#,
            r#""right":"ipv4""#,
            r#""result":"type""#,
        ] {
            assert!(accept.contains(needle), "{needle} in {accept}");
        }
        let chains: Vec<_> = cmds.iter().filter_map(|c| c["add"].get("chain")).collect();
        let pre = chains.iter().find(|c| c["name"] == "prerouting").unwrap();
        assert_eq!(pre["hook"], "prerouting");
        assert_eq!(pre["prio"], -300);
        let fwd = chains.iter().find(|c| c["name"] == "forward").unwrap();
        assert_eq!(fwd["hook"], "forward");
        // Every rule that is not the accept ends in a drop or a jump to the per-run drops.
        for r in &rules {
            let last = r["expr"].as_array().unwrap().last().unwrap();
            assert!(
                last.get("drop").is_some()
                    || last.get("accept").is_some()
                    || last.get("jump").is_some(),
                "{r}"
            );
        }
    }

    #[test]
    fn run_rules_log_and_count_under_the_interface_comment() {
        let v = json(&render_run_add("nclw0123abcdh", 10));
        let text = v.to_string();
        assert!(text.contains(r#""comment":"run nclw0123abcdh""#));
        assert!(text.contains(r#""prefix":"nanoclaw drop nclw0123abcdh: ""#));
        assert!(text.contains(r#""rate":10"#));
        assert!(text.contains(r#""drop":null"#));
        let none = json(&render_run_add("x", 0)).to_string();
        assert!(!none.contains("log"));
    }

    #[test]
    fn counters_are_read_back_from_a_listing() {
        let listing: Nftables<'static> = serde_json::from_str(
            r#"{"nftables":[{"metainfo":{"json_schema_version":1}},
            {"rule":{"family":"inet","table":"nanoclaw","chain":"run_drops","handle":7,"comment":"run a1h",
              "expr":[{"match":{"op":"==","left":{"meta":{"key":"iifname"}},"right":"a1h"}},{"counter":{"packets":3,"bytes":180}},{"drop":null}]}},
            {"rule":{"family":"inet","table":"nanoclaw","chain":"run_drops","handle":6,"comment":"run a1h",
              "expr":[{"match":{"op":"==","left":{"meta":{"key":"iifname"}},"right":"a1h"}},{"log":{"prefix":"x"}}]}},
            {"rule":{"family":"inet","table":"nanoclaw","chain":"prerouting","handle":4,"comment":"unattributed",
              "expr":[{"counter":{"packets":2,"bytes":1}},{"drop":null}]}}]}"#,
        )
        .unwrap();
        assert_eq!(run_rules(&listing, "a1h"), (3, vec![7, 6]));
        assert_eq!(run_rules(&listing, "b2h"), (0, vec![]));
        assert_eq!(
            all_run_rules(&listing),
            vec![("a1h".to_string(), 7), ("a1h".to_string(), 6)]
        );
        assert_eq!(unattributed_packets(&listing), 2);
    }
}
