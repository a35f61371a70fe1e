//! Mount security for additional mounts (contract §9), as a pure evaluator.
//!
//! The allowlist file lives outside the data directory and is never mounted into a run. Every path
//! check is done on the **real** path: the caller resolves symlinks (through a [`PathResolver`])
//! before any pattern or root test, so a symlink cannot smuggle a blocked or foreign directory past
//! the checks. Deviations from the original, all stricter:
//! - a relative host path (other than `~`/`~/…`) is rejected instead of being resolved against the
//!   host's working directory;
//! - a container path is also rejected if it contains control characters or a `.` component;
//! - non-main groups always get read-only additional mounts, whatever `nonMainReadOnly` says.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::core::wire::AdditionalMount;

/// Where every additional mount lands inside the run (contract §9.7).
pub const EXTRA_MOUNT_ROOT: &str = "/workspace/extra";

/// Blocked path fragments that always apply, before the user's own (contract §9.3).
pub const DEFAULT_BLOCKED_PATTERNS: [&str; 17] = [
    ".ssh",
    ".gnupg",
    ".gpg",
    ".aws",
    ".azure",
    ".gcloud",
    ".kube",
    ".docker",
    "credentials",
    ".env",
    ".netrc",
    ".npmrc",
    ".pypirc",
    "id_rsa",
    "id_ed25519",
    "private_key",
    ".secret",
];

/// Why an allowlist file was refused; the caller then runs with "no allowlist" (contract §9.2).
#[derive(Debug, thiserror::Error)]
pub enum MountPolicyError {
    /// The file is not JSON of the expected shape.
    #[error("mount allowlist is malformed: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// One allowed root in the allowlist file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllowedRoot {
    /// Host directory; `~` is expanded, then resolved to its real path.
    pub path: String,
    /// Whether mounts under this root may be writable at all.
    #[serde(default)]
    pub allow_read_write: bool,
    /// Free text for the operator.
    #[serde(default)]
    pub description: Option<String>,
}

/// The mount allowlist file (contract §9.2).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MountAllowlist {
    /// Roots under which additional mounts may live; the first match decides.
    pub allowed_roots: Vec<AllowedRoot>,
    /// Extra substrings that block a path (added to [`DEFAULT_BLOCKED_PATTERNS`]).
    pub blocked_patterns: Vec<String>,
    /// Kept for file compatibility; nanoclaw forces non-main mounts read-only regardless.
    pub non_main_read_only: bool,
}

impl MountAllowlist {
    /// Parses the allowlist file's text. All three keys are required with the right JSON types.
    pub fn parse(text: &str) -> Result<Self, MountPolicyError> {
        Ok(serde_json::from_str(text)?)
    }
}

/// Resolves host paths for the policy: the home directory for `~`, and the real path of an absolute
/// path (symlinks resolved; `None` if it does not exist). The sandbox supplies the filesystem version.
pub trait PathResolver {
    /// `$HOME` of the host process, for `~` expansion.
    fn home(&self) -> Option<PathBuf>;
    /// The real path of an absolute path, or `None` if it does not exist.
    fn realpath(&self, absolute: &Path) -> Option<PathBuf>;
}

/// An additional mount that passed every check (contract §9.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedMount {
    /// The real host path; this, not the requested path, is what gets mounted.
    pub host_path: PathBuf,
    /// Absolute path inside the run, under [`EXTRA_MOUNT_ROOT`].
    pub container_path: String,
    /// Whether the mount is read-only.
    pub readonly: bool,
}

/// Why an additional mount was rejected (contract §9.8, first failure wins).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountRejection {
    /// No valid allowlist is configured, so every additional mount is rejected.
    #[error("no mount allowlist is configured")]
    NoAllowlist,
    /// The container path is empty, absolute, contains `..` or control characters.
    #[error("invalid container path {0:?}")]
    InvalidContainerPath(String),
    /// The host path is relative (only absolute paths and `~` are accepted).
    #[error("host path {0:?} is not absolute")]
    RelativeHostPath(String),
    /// The host path (after `~` expansion) does not exist.
    #[error("host path {0:?} does not exist")]
    HostPathMissing(String),
    /// The real path matches a blocked pattern.
    #[error("host path {path:?} matches blocked pattern {pattern:?}")]
    Blocked {
        /// The resolved path.
        path: PathBuf,
        /// The pattern that matched.
        pattern: String,
    },
    /// The real path is under no allowed root.
    #[error("host path {0:?} is not under an allowed root")]
    NotUnderAllowedRoot(PathBuf),
}

#[derive(Debug, Clone)]
struct ResolvedRoot {
    real: PathBuf,
    allow_read_write: bool,
}

/// The allowlist with its roots resolved, ready to evaluate mounts. Build once per process (contract
/// §9.1 caches it for the process lifetime).
#[derive(Debug, Clone)]
pub struct MountPolicy {
    roots: Vec<ResolvedRoot>,
    blocked: Vec<String>,
}

impl MountPolicy {
    /// Resolves the allowlist's roots; a root that does not exist or is relative is skipped (§9.6).
    pub fn new(allowlist: &MountAllowlist, resolver: &dyn PathResolver) -> Self {
        let roots = allowlist
            .allowed_roots
            .iter()
            .filter_map(|root| {
                let abs = expand_host_path(&root.path, resolver).ok()?;
                let real = resolver.realpath(&abs)?;
                Some(ResolvedRoot {
                    real,
                    allow_read_write: root.allow_read_write,
                })
            })
            .collect();
        let mut blocked: Vec<String> = DEFAULT_BLOCKED_PATTERNS
            .iter()
            .map(|p| p.to_string())
            .collect();
        for pattern in &allowlist.blocked_patterns {
            if !pattern.is_empty() && !blocked.contains(pattern) {
                blocked.push(pattern.clone());
            }
        }
        Self { roots, blocked }
    }

    /// The effective blocked patterns: defaults first, then the user's, de-duplicated.
    pub fn blocked_patterns(&self) -> &[String] {
        &self.blocked
    }
}

/// Evaluates one requested mount in the order of contract §9.8. `policy` is `None` when no valid
/// allowlist is configured.
pub fn evaluate(
    policy: Option<&MountPolicy>,
    mount: &AdditionalMount,
    is_main: bool,
    resolver: &dyn PathResolver,
) -> Result<ValidatedMount, MountRejection> {
    let policy = policy.ok_or(MountRejection::NoAllowlist)?;

    let relative = match &mount.container_path {
        Some(p) => p.clone(),
        None => last_component(&mount.host_path),
    };
    validate_container_path(&relative)?;

    let absolute = expand_host_path(&mount.host_path, resolver)?;
    let real = resolver
        .realpath(&absolute)
        .ok_or_else(|| MountRejection::HostPathMissing(mount.host_path.clone()))?;

    if let Some(pattern) = blocked_pattern(&real, &policy.blocked) {
        return Err(MountRejection::Blocked {
            path: real,
            pattern: pattern.to_string(),
        });
    }

    let root = policy
        .roots
        .iter()
        .find(|root| real.starts_with(&root.real))
        .ok_or_else(|| MountRejection::NotUnderAllowedRoot(real.clone()))?;

    let wants_rw = mount.readonly == Some(false);
    let readonly = !(wants_rw && is_main && root.allow_read_write);
    Ok(ValidatedMount {
        host_path: real,
        container_path: format!("{EXTRA_MOUNT_ROOT}/{relative}"),
        readonly,
    })
}

/// `~` → home, `~/x` → home/x; other paths must be absolute.
fn expand_host_path(path: &str, resolver: &dyn PathResolver) -> Result<PathBuf, MountRejection> {
    let expanded = if path == "~" {
        resolver.home()
    } else if let Some(rest) = path.strip_prefix("~/") {
        resolver.home().map(|h| h.join(rest))
    } else if path.starts_with('/') {
        Some(PathBuf::from(path))
    } else {
        None
    };
    match expanded {
        Some(p) if p.is_absolute() => Ok(p),
        _ => Err(MountRejection::RelativeHostPath(path.to_string())),
    }
}

fn last_component(host_path: &str) -> String {
    host_path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string()
}

fn validate_container_path(relative: &str) -> Result<(), MountRejection> {
    let bad = || MountRejection::InvalidContainerPath(relative.to_string());
    if relative.trim().is_empty()
        || relative.starts_with('/')
        || relative.contains("..")
        || relative.chars().any(char::is_control)
    {
        return Err(bad());
    }
    // Only plain names: `./x`, `a/./b` or `a//b` would make the target differ from what the operator reads.
    if relative
        .split('/')
        .any(|part| part.is_empty() || part == ".")
    {
        return Err(bad());
    }
    Ok(())
}

/// A plain substring test against every component and against the whole path (contract §9.4).
fn blocked_pattern<'a>(real: &Path, patterns: &'a [String]) -> Option<&'a str> {
    let whole = real.to_string_lossy();
    patterns
        .iter()
        .find(|pattern| {
            whole.contains(pattern.as_str())
                || real
                    .components()
                    .any(|c| c.as_os_str().to_string_lossy().contains(pattern.as_str()))
        })
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A fake filesystem: a map from absolute path to real path.
    struct Fake {
        home: PathBuf,
        links: BTreeMap<PathBuf, PathBuf>,
    }

    impl PathResolver for Fake {
        fn home(&self) -> Option<PathBuf> {
            Some(self.home.clone())
        }
        fn realpath(&self, absolute: &Path) -> Option<PathBuf> {
            self.links.get(absolute).cloned()
        }
    }

    fn fake() -> Fake {
        let mut links = BTreeMap::new();
        for p in [
            "/home/u",
            "/home/u/projects",
            "/home/u/projects/app",
            "/home/u/projects/.envoy",
            "/home/u/projects/my.environment",
            "/home/u/projects/mytoken",
            "/home/u/docs",
            "/home/u/other",
            "/srv/data",
        ] {
            links.insert(PathBuf::from(p), PathBuf::from(p));
        }
        // A symlink inside an allowed root that points at a blocked directory.
        links.insert(
            PathBuf::from("/home/u/projects/keys"),
            PathBuf::from("/home/u/.ssh"),
        );
        // A symlink inside an allowed root that points outside every root.
        links.insert(PathBuf::from("/home/u/projects/etc"), PathBuf::from("/etc"));
        Fake {
            home: PathBuf::from("/home/u"),
            links,
        }
    }

    fn allowlist() -> MountAllowlist {
        MountAllowlist::parse(
            r#"{"allowedRoots":[{"path":"~/projects","allowReadWrite":true,"description":"code"},
                                {"path":"/srv/data","allowReadWrite":false},
                                {"path":"/does/not/exist","allowReadWrite":true}],
                "blockedPatterns":["token","token"],
                "nonMainReadOnly":false}"#,
        )
        .unwrap()
    }

    fn mount(host: &str, container: Option<&str>, readonly: Option<bool>) -> AdditionalMount {
        AdditionalMount {
            host_path: host.into(),
            container_path: container.map(Into::into),
            readonly,
            extra: BTreeMap::new(),
        }
    }

    /// One helper for every case: evaluate as main or non-main and compare the whole result.
    fn check(
        m: AdditionalMount,
        is_main: bool,
        expect: Result<(&str, &str, bool), MountRejection>,
    ) {
        let r = fake();
        let policy = MountPolicy::new(&allowlist(), &r);
        let got = evaluate(Some(&policy), &m, is_main, &r);
        let expect = expect.map(|(h, c, ro)| ValidatedMount {
            host_path: PathBuf::from(h),
            container_path: c.to_string(),
            readonly: ro,
        });
        assert_eq!(got, expect, "mount {m:?} main={is_main}");
    }

    #[test]
    fn no_allowlist_rejects_everything() {
        let r = fake();
        let got = evaluate(None, &mount("~/projects/app", None, None), true, &r);
        assert_eq!(got, Err(MountRejection::NoAllowlist));
    }

    #[test]
    fn malformed_allowlists_are_refused() {
        for text in [
            "",
            "[]",
            r#"{"allowedRoots":{},"blockedPatterns":[],"nonMainReadOnly":true}"#,
            r#"{"allowedRoots":[],"blockedPatterns":"x","nonMainReadOnly":true}"#,
            r#"{"allowedRoots":[],"blockedPatterns":[],"nonMainReadOnly":"yes"}"#,
            r#"{"allowedRoots":[],"blockedPatterns":[]}"#,
        ] {
            assert!(MountAllowlist::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn blocked_patterns_are_defaults_then_user_deduplicated() {
        let policy = MountPolicy::new(&allowlist(), &fake());
        assert_eq!(policy.blocked_patterns().len(), 18);
        assert_eq!(policy.blocked_patterns()[0], ".ssh");
        assert_eq!(policy.blocked_patterns()[17], "token");
    }

    #[test]
    fn main_gets_read_write_only_when_asked_and_root_allows() {
        check(
            mount("~/projects/app", None, Some(false)),
            true,
            Ok(("/home/u/projects/app", "/workspace/extra/app", false)),
        );
        // Default is read-only.
        check(
            mount("~/projects/app", Some("code"), None),
            true,
            Ok(("/home/u/projects/app", "/workspace/extra/code", true)),
        );
        // Root without allowReadWrite.
        check(
            mount("/srv/data", None, Some(false)),
            true,
            Ok(("/srv/data", "/workspace/extra/data", true)),
        );
    }

    #[test]
    fn non_main_is_forced_read_only_even_if_the_file_allows() {
        check(
            mount("~/projects/app", None, Some(false)),
            false,
            Ok(("/home/u/projects/app", "/workspace/extra/app", true)),
        );
    }

    #[test]
    fn container_path_rules() {
        for bad in [
            "", "  ", "/abs", "../x", "a/../b", "a/..", "x\n", "./x", "a/./b", "a//b", "a/",
        ] {
            check(
                mount("~/projects/app", Some(bad), None),
                true,
                Err(MountRejection::InvalidContainerPath(bad.to_string())),
            );
        }
        check(
            mount("~/projects/app", Some("nested/dir"), None),
            true,
            Ok(("/home/u/projects/app", "/workspace/extra/nested/dir", true)),
        );
        // Default container path is the last component as written, even through a symlink.
        check(
            mount("/home/u/projects/app/", None, None),
            true,
            Ok(("/home/u/projects/app", "/workspace/extra/app", true)),
        );
    }

    #[test]
    fn relative_and_missing_host_paths_are_rejected() {
        check(
            mount("projects/app", Some("x"), None),
            true,
            Err(MountRejection::RelativeHostPath("projects/app".into())),
        );
        check(
            mount("~/nope", None, None),
            true,
            Err(MountRejection::HostPathMissing("~/nope".into())),
        );
    }

    #[test]
    fn patterns_match_substrings_of_the_real_path() {
        for (path, pattern) in [
            ("~/projects/.envoy", ".env"),
            ("~/projects/my.environment", ".env"),
            ("~/projects/mytoken", "token"),
        ] {
            let real = path.replace('~', "/home/u");
            check(
                mount(path, Some("x"), None),
                true,
                Err(MountRejection::Blocked {
                    path: real.into(),
                    pattern: pattern.into(),
                }),
            );
        }
    }

    #[test]
    fn symlinks_are_resolved_before_checks() {
        // The link's own name is harmless; its target is blocked.
        check(
            mount("~/projects/keys", None, None),
            true,
            Err(MountRejection::Blocked {
                path: "/home/u/.ssh".into(),
                pattern: ".ssh".into(),
            }),
        );
        // The link lives under an allowed root; its target does not.
        check(
            mount("~/projects/etc", None, None),
            true,
            Err(MountRejection::NotUnderAllowedRoot("/etc".into())),
        );
    }

    #[test]
    fn root_match_is_by_component_not_prefix() {
        let mut r = fake();
        r.links.insert(
            PathBuf::from("/home/u/projects-old"),
            PathBuf::from("/home/u/projects-old"),
        );
        let policy = MountPolicy::new(&allowlist(), &r);
        let got = evaluate(
            Some(&policy),
            &mount("/home/u/projects-old", None, None),
            true,
            &r,
        );
        assert_eq!(
            got,
            Err(MountRejection::NotUnderAllowedRoot(
                "/home/u/projects-old".into()
            ))
        );
    }

    #[test]
    fn order_container_path_checked_before_existence() {
        check(
            mount("~/nope", Some("../x"), None),
            true,
            Err(MountRejection::InvalidContainerPath("../x".into())),
        );
    }
}
