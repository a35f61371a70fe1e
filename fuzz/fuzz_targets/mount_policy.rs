//! Drives the mount-policy evaluator (contract §9) with arbitrary allowlists, fake filesystems
//! (symlinks included) and requested mounts, and checks that whatever it accepts is safe: the mounted
//! path is the resolved real path, lies under a resolved allowed root and matches no blocked pattern;
//! the container path stays under `/workspace/extra` with plain components; non-main mounts are
//! read-only and read-write needs main, an explicit `readonly: false` and a read-write root.
#![no_main]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use nanoclaw::core::mount_policy::{
    EXTRA_MOUNT_ROOT, MountAllowlist, MountPolicy, MountRejection, PathResolver, evaluate,
};
use nanoclaw::core::wire::AdditionalMount;

/// Small component alphabet so that paths, roots and symlink targets collide often.
const PARTS: [&str; 12] = [
    "home",
    "u",
    "projects",
    ".ssh",
    "data",
    "x",
    ".env",
    "..",
    ".",
    "",
    "my.environment",
    "token",
];

#[derive(Arbitrary, Debug)]
struct Input {
    /// Either a structured allowlist or raw text for the JSON parser.
    allowlist: AllowlistIn,
    /// The fake filesystem: absolute path → real path.
    links: Vec<(PathIn, PathIn)>,
    home: Option<PathIn>,
    host: HostIn,
    container: Option<ContainerIn>,
    readonly: Option<bool>,
    is_main: bool,
}

#[derive(Arbitrary, Debug)]
enum AllowlistIn {
    None,
    Raw(String),
    Built {
        roots: Vec<(RootIn, bool)>,
        blocked: Vec<String>,
        non_main_read_only: bool,
    },
}

#[derive(Arbitrary, Debug)]
enum RootIn {
    Path(PathIn),
    Tilde(Vec<u8>),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
struct PathIn(Vec<u8>);

impl PathIn {
    fn absolute(&self) -> String {
        let parts: Vec<&str> = self
            .0
            .iter()
            .take(6)
            .map(|b| PARTS[usize::from(*b) % PARTS.len()])
            .collect();
        format!("/{}", parts.join("/"))
    }
}

#[derive(Arbitrary, Debug)]
enum HostIn {
    Path(PathIn),
    Tilde(Vec<u8>),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum ContainerIn {
    Parts(Vec<u8>),
    Raw(String),
}

struct Fake {
    home: Option<PathBuf>,
    links: BTreeMap<PathBuf, PathBuf>,
}

impl PathResolver for Fake {
    fn home(&self) -> Option<PathBuf> {
        self.home.clone()
    }
    fn realpath(&self, absolute: &Path) -> Option<PathBuf> {
        self.links.get(absolute).cloned()
    }
}

fn tilde(parts: &[u8]) -> String {
    let rest: Vec<&str> = parts
        .iter()
        .take(4)
        .map(|b| PARTS[usize::from(*b) % PARTS.len()])
        .collect();
    if rest.is_empty() {
        "~".to_string()
    } else {
        format!("~/{}", rest.join("/"))
    }
}

fuzz_target!(|input: Input| {
    let resolver = Fake {
        home: input.home.as_ref().map(|h| PathBuf::from(h.absolute())),
        links: input
            .links
            .iter()
            .take(16)
            .map(|(from, to)| (PathBuf::from(from.absolute()), PathBuf::from(to.absolute())))
            .collect(),
    };
    let allowlist = match &input.allowlist {
        AllowlistIn::None => None,
        AllowlistIn::Raw(text) => MountAllowlist::parse(text).ok(),
        AllowlistIn::Built {
            roots,
            blocked,
            non_main_read_only,
        } => {
            let roots: Vec<serde_json::Value> = roots
                .iter()
                .take(6)
                .map(|(root, rw)| {
                    let path = match root {
                        RootIn::Path(p) => p.absolute(),
                        RootIn::Tilde(t) => tilde(t),
                        RootIn::Raw(s) => s.clone(),
                    };
                    serde_json::json!({"path": path, "allowReadWrite": rw})
                })
                .collect();
            let text = serde_json::json!({
                "allowedRoots": roots,
                "blockedPatterns": blocked.iter().take(6).collect::<Vec<_>>(),
                "nonMainReadOnly": non_main_read_only,
            })
            .to_string();
            Some(MountAllowlist::parse(&text).expect("well-formed allowlist parses"))
        }
    };
    let policy = allowlist.as_ref().map(|a| MountPolicy::new(a, &resolver));
    let mount = AdditionalMount {
        host_path: match &input.host {
            HostIn::Path(p) => p.absolute(),
            HostIn::Tilde(t) => tilde(t),
            HostIn::Raw(s) => s.clone(),
        },
        container_path: input.container.as_ref().map(|c| match c {
            ContainerIn::Parts(parts) => parts
                .iter()
                .take(4)
                .map(|b| PARTS[usize::from(*b) % PARTS.len()])
                .collect::<Vec<_>>()
                .join("/"),
            ContainerIn::Raw(s) => s.clone(),
        }),
        readonly: input.readonly,
        extra: BTreeMap::new(),
    };
    let result = evaluate(policy.as_ref(), &mount, input.is_main, &resolver);
    assert_eq!(
        result,
        evaluate(policy.as_ref(), &mount, input.is_main, &resolver),
        "deterministic"
    );
    let Some(policy) = policy else {
        assert_eq!(result, Err(MountRejection::NoAllowlist));
        return;
    };
    let Ok(accepted) = result else {
        return;
    };

    // The container path: under the extra root, plain components only.
    let relative = accepted
        .container_path
        .strip_prefix(&format!("{EXTRA_MOUNT_ROOT}/"))
        .expect("container path under /workspace/extra");
    assert!(!relative.is_empty());
    assert!(!relative.contains(".."), "{relative:?}");
    assert!(!relative.chars().any(char::is_control), "{relative:?}");
    assert!(
        relative.split('/').all(|p| !p.is_empty() && p != "."),
        "{relative:?}"
    );

    // The host path: the real path of what was asked for, never the requested one.
    let expanded = if mount.host_path == "~" {
        resolver.home.clone()
    } else if let Some(rest) = mount.host_path.strip_prefix("~/") {
        resolver.home.as_ref().map(|h| h.join(rest))
    } else {
        Some(PathBuf::from(&mount.host_path))
    }
    .expect("accepted host path expands");
    assert_eq!(
        resolver.realpath(&expanded).as_ref(),
        Some(&accepted.host_path)
    );
    let real = accepted.host_path.to_string_lossy().into_owned();
    for pattern in policy.blocked_patterns() {
        assert!(
            !real.contains(pattern.as_str()),
            "{real:?} contains blocked {pattern:?}"
        );
    }

    // Under a root that exists in the fake filesystem, and read-write only when everything allows it.
    let allowlist = allowlist.expect("policy came from an allowlist");
    let matching_rw: Vec<bool> = allowlist
        .allowed_roots
        .iter()
        .filter_map(|root| {
            let abs = if root.path == "~" {
                resolver.home.clone()
            } else if let Some(rest) = root.path.strip_prefix("~/") {
                resolver.home.as_ref().map(|h| h.join(rest))
            } else if root.path.starts_with('/') {
                Some(PathBuf::from(&root.path))
            } else {
                None
            }?;
            let real_root = resolver.realpath(&abs)?;
            accepted
                .host_path
                .starts_with(&real_root)
                .then_some(root.allow_read_write)
        })
        .collect();
    assert!(!matching_rw.is_empty(), "accepted outside every root");
    if !accepted.readonly {
        assert!(input.is_main, "non-main got a writable mount");
        assert_eq!(mount.readonly, Some(false), "writable without asking");
        assert!(matching_rw[0], "writable under a read-only root");
    }
});
