//! Per-run network: a named network namespace (`/run/netns/<name>`, which the sandbox joins by path)
//! and a veth pair, host side in the caller's namespace, run side in the run's, one /30 per run.
//!
//! Uses iproute2's `ip` (like `nft`, a runtime dependency checked by `doctor`). Every function acts on
//! the network namespace of the calling *thread*, so tests can run the whole host side inside a
//! namespace of their own.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use ipnet::Ipv4Net;

use crate::net::NetError;
use crate::net::config::slot_addresses;

/// Where `ip netns` keeps named namespaces.
pub const NETNS_DIR: &str = "/run/netns";
/// Number of /30 slots in a /24.
pub const SLOTS: usize = 64;

/// Names derived from a run id: `<prefix><8 hex of FNV-1a(run id)>`, plus `h`/`r` for the veth ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkNames {
    pub netns: String,
    pub host_if: String,
    pub run_if: String,
}

/// FNV-1a, 32 bit: stable across releases and platforms (unlike std's hasher), so names survive a
/// restart and match what the previous process created.
fn fnv1a(text: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in text.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

impl LinkNames {
    pub fn for_run(prefix: &str, run_id: &str) -> Self {
        let base = format!("{prefix}{:08x}", fnv1a(run_id));
        Self {
            host_if: format!("{base}h"),
            run_if: format!("{base}r"),
            netns: base,
        }
    }
}

/// A run's network, as created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLink {
    pub run_id: String,
    pub names: LinkNames,
    pub slot: u8,
    /// Host side: where the proxy listens for this run.
    pub host_ip: Ipv4Addr,
    /// Run side: the only source address the proxy accepts on this link.
    pub run_ip: Ipv4Addr,
}

impl RunLink {
    /// The path the sandbox joins (`NetworkMode::Join`).
    pub fn netns_path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.names.netns)
    }
}

/// Hands out /30 slots of the run subnet.
#[derive(Debug)]
pub struct SlotAllocator {
    used: Mutex<[bool; SLOTS]>,
}

impl Default for SlotAllocator {
    fn default() -> Self {
        Self {
            used: Mutex::new([false; SLOTS]),
        }
    }
}

impl SlotAllocator {
    pub fn take(&self) -> Option<u8> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let i = used.iter().position(|u| !u)?;
        used[i] = true;
        u8::try_from(i).ok()
    }

    pub fn release(&self, slot: u8) {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(u) = used.get_mut(usize::from(slot)) {
            *u = false;
        }
    }

    pub fn in_use(&self) -> usize {
        let used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        used.iter().filter(|u| **u).count()
    }
}

/// Runs `ip <args>`; the error carries its stderr.
fn ip(args: &[&str]) -> Result<(), NetError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| NetError::Command {
            command: format!("ip {}", args.join(" ")),
            message: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetError::Command {
            command: format!("ip {}", args.join(" ")),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Writes a sysctl under `/proc/sys/net` as seen from the calling thread's namespace. A missing
/// file (IPv6 compiled out) is fine: the knob protects against something that cannot happen.
fn sysctl(path: &str, value: &str) -> Result<(), NetError> {
    match std::fs::write(path, value) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetError::Command {
            command: format!("write {path}"),
            message: e.to_string(),
        }),
    }
}

/// Runs `f` on a short-lived thread that has joined the network namespace at `path`.
pub fn in_netns<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetError> {
    let file = File::open(path).map_err(|e| NetError::Command {
        command: format!("open {}", path.display()),
        message: e.to_string(),
    })?;
    let handle = std::thread::spawn(move || {
        // SAFETY: setns on a namespace fd we own; it only changes this new thread's namespace.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(f())
    });
    match handle.join() {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(NetError::Command {
            command: format!("setns {}", path.display()),
            message: e.to_string(),
        }),
        Err(_) => Err(NetError::Command {
            command: format!("thread in {}", path.display()),
            message: "panicked".to_string(),
        }),
    }
}

/// Creates the namespace and the link for `run_id` in `slot`. On failure everything created so far is
/// removed again.
pub fn create(prefix: &str, subnet: Ipv4Net, run_id: &str, slot: u8) -> Result<RunLink, NetError> {
    let names = LinkNames::for_run(prefix, run_id);
    let (host_ip, run_ip) = slot_addresses(subnet, slot).ok_or(NetError::NoFreeSlot)?;
    let link = RunLink {
        run_id: run_id.to_string(),
        names,
        slot,
        host_ip,
        run_ip,
    };
    if link.netns_path().exists() {
        return Err(NetError::NameInUse(link.names.netns.clone()));
    }
    ip(&["netns", "add", &link.names.netns])?;
    if let Err(e) = configure(&link) {
        destroy(&link);
        return Err(e);
    }
    Ok(link)
}

fn configure(link: &RunLink) -> Result<(), NetError> {
    let n = &link.names;
    ip(&[
        "link", "add", &n.host_if, "type", "veth", "peer", "name", &n.run_if, "netns", &n.netns,
    ])?;
    // Host side: no IPv6, never forward what arrives here, strict reverse-path (no spoofed sources).
    sysctl(
        &format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", n.host_if),
        "1",
    )?;
    sysctl(
        &format!("/proc/sys/net/ipv4/conf/{}/forwarding", n.host_if),
        "0",
    )?;
    sysctl(
        &format!("/proc/sys/net/ipv4/conf/{}/rp_filter", n.host_if),
        "1",
    )?;
    let host_cidr = format!("{}/30", link.host_ip);
    ip(&["addr", "add", &host_cidr, "dev", &n.host_if])?;
    ip(&["link", "set", &n.host_if, "up"])?;
    // Run side: IPv6 off before the link comes up (no link-local address, no route), one IPv4
    // address, a default route to the host side and nothing else. No resolver exists in the run.
    let run_if = n.run_if.clone();
    in_netns(&link.netns_path(), move || -> Result<(), NetError> {
        sysctl("/proc/sys/net/ipv6/conf/all/disable_ipv6", "1")?;
        sysctl("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1")?;
        sysctl(
            &format!("/proc/sys/net/ipv6/conf/{run_if}/disable_ipv6"),
            "1",
        )
    })??;
    let run_cidr = format!("{}/30", link.run_ip);
    let host_ip = link.host_ip.to_string();
    ip(&["-n", &n.netns, "addr", "add", &run_cidr, "dev", &n.run_if])?;
    ip(&["-n", &n.netns, "link", "set", "lo", "up"])?;
    ip(&["-n", &n.netns, "link", "set", &n.run_if, "up"])?;
    ip(&["-n", &n.netns, "route", "add", "default", "via", &host_ip])?;
    Ok(())
}

/// Removes the link and the namespace. Idempotent: missing pieces are not errors. Deleting the host
/// end removes the pair; deleting the namespace removes the run end if the pair survived somehow.
pub fn destroy(link: &RunLink) {
    let _ = ip(&["link", "del", &link.names.host_if]);
    let _ = ip(&["netns", "del", &link.names.netns]);
}

/// Names of interfaces in the calling thread's namespace.
pub fn host_interfaces() -> Result<Vec<String>, NetError> {
    let out = Command::new("ip")
        .args(["-j", "link", "show"])
        .output()
        .map_err(|e| NetError::Command {
            command: "ip -j link show".into(),
            message: e.to_string(),
        })?;
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| NetError::Command {
            command: "ip -j link show".into(),
            message: e.to_string(),
        })?;
    Ok(v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| l["ifname"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

/// Named namespaces whose name starts with `prefix`.
pub fn netns_with_prefix(prefix: &str) -> Vec<String> {
    std::fs::read_dir(NETNS_DIR)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Removes every run namespace and host-side interface whose name starts with `prefix`: what a host
/// killed with SIGKILL left behind. Returns what it removed.
pub fn cleanup_prefix(prefix: &str) -> Result<Vec<String>, NetError> {
    let mut removed = Vec::new();
    for name in host_interfaces()?
        .into_iter()
        .filter(|n| n.starts_with(prefix))
    {
        ip(&["link", "del", &name])?;
        removed.push(name);
    }
    for ns in netns_with_prefix(prefix) {
        ip(&["netns", "del", &ns])?;
        removed.push(ns);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_short_and_prefixed() {
        let n = LinkNames::for_run("nclw", "nanoclaw-family-1700000000000");
        assert_eq!(
            n,
            LinkNames::for_run("nclw", "nanoclaw-family-1700000000000")
        );
        assert_ne!(
            n.netns,
            LinkNames::for_run("nclw", "nanoclaw-family-1700000000001").netns
        );
        assert!(n.host_if.len() <= 15 && n.run_if.len() <= 15, "IFNAMSIZ");
        assert!(n.host_if.starts_with("nclw") && n.host_if.ends_with('h'));
        assert_eq!(LinkNames::for_run("abcde", "x").host_if.len(), 14);
        // Known FNV-1a vector: the names of a previous process are recomputed identically.
        assert_eq!(fnv1a("a"), 0xe40c292c);
    }

    #[test]
    fn slots_are_reused_and_bounded() {
        let a = SlotAllocator::default();
        let taken: Vec<u8> = (0..SLOTS).map(|_| a.take().unwrap()).collect();
        assert_eq!(taken, (0..64).collect::<Vec<u8>>());
        assert_eq!(a.take(), None);
        a.release(17);
        assert_eq!(a.take(), Some(17));
        assert_eq!(a.in_use(), SLOTS);
    }
}
