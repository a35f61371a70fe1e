//! File tools: `read_file`, `write_file`, `edit_file`, `list_files` (glob) and `grep` (regex), all
//! confined to the configured roots (`/workspace` and `/tmp` in a run).
//!
//! Confinement resolves symlinks before the check, and the tool then works on the resolved path, so
//! a link planted in the group folder that points at `/etc` is refused. It is a guard rail for the
//! model, not the security boundary: the container's mounts are (and `bash` is not confined by it).

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

/// Largest file `read_file`/`edit_file` load.
pub const MAX_READ_BYTES: u64 = 8 * 1024 * 1024;
/// Largest content `write_file` writes.
pub const MAX_WRITE_BYTES: usize = 8 * 1024 * 1024;
/// Directory entries a `list_files`/`grep` walk visits before it stops.
pub const MAX_WALK_ENTRIES: usize = 20_000;
/// Paths `list_files` returns.
pub const MAX_LIST_RESULTS: usize = 1000;
/// Matching lines `grep` returns by default and at most.
pub const DEFAULT_GREP_RESULTS: usize = 200;
pub const MAX_GREP_RESULTS: usize = 2000;
/// Files larger than this are skipped by `grep`.
const MAX_GREP_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// A matching line is shown up to this many bytes.
const MAX_GREP_LINE_BYTES: usize = 300;

/// Where file tools may go, and what relative paths are relative to.
#[derive(Debug, Clone)]
pub struct Confinement {
    roots: Vec<PathBuf>,
    cwd: PathBuf,
}

impl Confinement {
    pub fn new(roots: &[PathBuf], cwd: &Path) -> Self {
        let roots = roots
            .iter()
            .map(|r| std::fs::canonicalize(r).unwrap_or_else(|_| normalize(r)))
            .collect();
        Self {
            roots,
            cwd: cwd.to_path_buf(),
        }
    }

    /// The working directory relative paths are resolved against.
    pub fn cwd(&self) -> &Path {
        &self.cwd
    }

    /// Resolves `raw` (absolute, or relative to the cwd) to a real path under a root.
    pub fn resolve(&self, raw: &str) -> Result<PathBuf, String> {
        if raw.trim().is_empty() {
            return Err("path is empty".into());
        }
        if raw.contains('\0') {
            return Err("path contains a NUL byte".into());
        }
        let p = Path::new(raw);
        let joined = if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.cwd.join(p)
        };
        let real = resolve_existing_prefix(&normalize(&joined));
        if self.roots.iter().any(|r| real.starts_with(r)) {
            Ok(real)
        } else {
            let allowed: Vec<String> = self.roots.iter().map(|r| r.display().to_string()).collect();
            Err(format!(
                "{raw} is outside the allowed directories ({})",
                allowed.join(", ")
            ))
        }
    }
}

/// Lexical normalization: drops `.`, applies `..` (never above `/`).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Canonicalizes the longest existing prefix (resolving symlinks) and appends the rest.
fn resolve_existing_prefix(path: &Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(&existing) {
            let mut out = real;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return out;
        }
        match (
            existing.file_name().map(|n| n.to_os_string()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
}

fn read_text(path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.is_dir() {
        return Err(format!("{} is a directory", path.display()));
    }
    if meta.len() > MAX_READ_BYTES {
        return Err(format!(
            "{} is {} bytes; the limit is {MAX_READ_BYTES} (use bash with head/tail/sed for parts)",
            path.display(),
            meta.len()
        ));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_READ_BYTES).read_to_end(&mut bytes))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))
}

#[derive(Deserialize)]
pub struct ReadParams {
    pub path: String,
    /// First line to return, 1-based.
    #[serde(default)]
    pub offset: Option<usize>,
    /// Number of lines to return.
    #[serde(default)]
    pub limit: Option<usize>,
}

pub fn read_file(c: &Confinement, p: ReadParams) -> Result<String, String> {
    let path = c.resolve(&p.path)?;
    let text = read_text(&path)?;
    if p.offset.is_none() && p.limit.is_none() {
        return Ok(text);
    }
    let start = p.offset.unwrap_or(1).max(1) - 1;
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let total = lines.len();
    let end = p
        .limit
        .map_or(total, |l| start.saturating_add(l).min(total));
    if start >= total {
        return Ok(format!("[{} has {total} lines]", path.display()));
    }
    Ok(lines[start..end].concat())
}

#[derive(Deserialize)]
pub struct WriteParams {
    pub path: String,
    pub content: String,
}

pub fn write_file(c: &Confinement, p: WriteParams) -> Result<String, String> {
    if p.content.len() > MAX_WRITE_BYTES {
        return Err(format!("content is larger than {MAX_WRITE_BYTES} bytes"));
    }
    let path = c.resolve(&p.path)?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    std::fs::write(&path, p.content.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(format!(
        "Wrote {} bytes to {}",
        p.content.len(),
        path.display()
    ))
}

#[derive(Deserialize)]
pub struct EditParams {
    pub path: String,
    pub old_string: String,
    pub new_string: String,
    #[serde(default)]
    pub replace_all: bool,
}

pub fn edit_file(c: &Confinement, p: EditParams) -> Result<String, String> {
    if p.old_string.is_empty() {
        return Err("old_string is empty; use write_file to create a file".into());
    }
    if p.old_string == p.new_string {
        return Err("old_string and new_string are the same".into());
    }
    let path = c.resolve(&p.path)?;
    let text = read_text(&path)?;
    let count = text.matches(p.old_string.as_str()).count();
    let updated = match count {
        0 => return Err(format!("old_string was not found in {}", path.display())),
        1 => text.replacen(&p.old_string, &p.new_string, 1),
        _ if p.replace_all => text.replace(&p.old_string, &p.new_string),
        n => {
            return Err(format!(
                "old_string occurs {n} times in {}; add context to make it unique or set replace_all",
                path.display()
            ));
        }
    };
    if updated.len() > MAX_WRITE_BYTES {
        return Err(format!(
            "the edited file would be larger than {MAX_WRITE_BYTES} bytes"
        ));
    }
    std::fs::write(&path, updated.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(format!(
        "Replaced {count} occurrence(s) in {}",
        path.display()
    ))
}

/// Splits a glob into the literal directory it starts in and the pattern below it.
fn split_glob(pattern: &str) -> (String, String) {
    let is_meta = |s: &str| s.contains(['*', '?', '[', '{']);
    let parts: Vec<&str> = pattern.split('/').collect();
    let literal = parts
        .iter()
        .take(parts.len().saturating_sub(1))
        .take_while(|s| !is_meta(s))
        .count();
    let base = parts[..literal].join("/");
    let base = if pattern.starts_with('/') && base.is_empty() {
        "/".to_string()
    } else {
        base
    };
    (base, parts[literal..].join("/"))
}

/// Walks `dir` without following symlinks, calling `visit` for each file (path relative to `dir`).
/// Returns false when the walk was cut short by the entry bound or by `visit`.
fn walk(dir: &Path, visit: &mut dyn FnMut(&Path, &Path) -> bool) -> bool {
    let mut stack = vec![dir.to_path_buf()];
    let mut seen = 0usize;
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut entries: Vec<_> = entries.filter_map(|e| e.ok()).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries.into_iter().rev() {
            seen += 1;
            if seen > MAX_WALK_ENTRIES {
                return false;
            }
            let Ok(ft) = e.file_type() else { continue };
            let path = e.path();
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_file() {
                let rel = path.strip_prefix(dir).unwrap_or(&path).to_path_buf();
                if !visit(&path, &rel) {
                    return false;
                }
            }
        }
    }
    true
}

#[derive(Deserialize)]
pub struct ListParams {
    pub pattern: String,
    #[serde(default)]
    pub path: Option<String>,
}

pub fn list_files(c: &Confinement, p: ListParams) -> Result<String, String> {
    let (lit, rest) = split_glob(&p.pattern);
    let base_raw = match (&p.path, lit.is_empty()) {
        (Some(path), true) => path.clone(),
        (Some(path), false) if !lit.starts_with('/') => format!("{path}/{lit}"),
        (_, false) => lit,
        (None, true) => c.cwd().display().to_string(),
    };
    let base = c.resolve(&base_raw)?;
    let rest = if rest.is_empty() {
        "*".to_string()
    } else {
        rest
    };
    let matcher = globset::GlobBuilder::new(&rest)
        .literal_separator(true)
        .build()
        .map_err(|e| format!("bad glob {:?}: {e}", p.pattern))?
        .compile_matcher();
    let mut found = Vec::new();
    let complete = walk(&base, &mut |path, rel| {
        if matcher.is_match(rel) {
            found.push(path.display().to_string());
        }
        found.len() < MAX_LIST_RESULTS
    });
    found.sort();
    if found.is_empty() {
        return Ok(format!(
            "No files match {:?} under {}",
            p.pattern,
            base.display()
        ));
    }
    let mut out = found.join("\n");
    if !complete {
        out.push_str("\n[listing stopped early: narrow the pattern]");
    }
    Ok(out)
}

#[derive(Deserialize)]
pub struct GrepParams {
    pub pattern: String,
    #[serde(default)]
    pub path: Option<String>,
    /// Only files whose name (relative to `path`) matches this glob.
    #[serde(default)]
    pub glob: Option<String>,
    #[serde(default)]
    pub case_insensitive: bool,
    #[serde(default)]
    pub max_results: Option<usize>,
}

pub fn grep(c: &Confinement, p: GrepParams) -> Result<String, String> {
    let re = regex::RegexBuilder::new(&p.pattern)
        .case_insensitive(p.case_insensitive)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| format!("bad regex: {e}"))?;
    let filter = match &p.glob {
        Some(g) => Some(
            globset::Glob::new(g)
                .map_err(|e| format!("bad glob {g:?}: {e}"))?
                .compile_matcher(),
        ),
        None => None,
    };
    let base = match &p.path {
        Some(path) => c.resolve(path)?,
        None => c.cwd().to_path_buf(),
    };
    let max = p
        .max_results
        .unwrap_or(DEFAULT_GREP_RESULTS)
        .clamp(1, MAX_GREP_RESULTS);
    let mut out = Vec::new();
    let mut search = |path: &Path, rel: &Path| -> bool {
        if filter
            .as_ref()
            .is_some_and(|f| !f.is_match(rel) && !rel.file_name().is_some_and(|n| f.is_match(n)))
        {
            return true;
        }
        let Ok(meta) = std::fs::metadata(path) else {
            return true;
        };
        if meta.len() > MAX_GREP_FILE_BYTES {
            return true;
        }
        let Ok(bytes) = std::fs::read(path) else {
            return true;
        };
        if bytes[..bytes.len().min(8192)].contains(&0) {
            return true;
        }
        let text = String::from_utf8_lossy(&bytes);
        for (n, line) in text.lines().enumerate() {
            if re.is_match(line) {
                let mut shown = line.to_string();
                if shown.len() > MAX_GREP_LINE_BYTES {
                    let mut end = MAX_GREP_LINE_BYTES;
                    while !shown.is_char_boundary(end) {
                        end -= 1;
                    }
                    shown.truncate(end);
                    shown.push('…');
                }
                out.push(format!("{}:{}:{}", path.display(), n + 1, shown));
                if out.len() >= max {
                    return false;
                }
            }
        }
        true
    };
    let complete = if base.is_file() {
        let rel = PathBuf::from(base.file_name().unwrap_or_default());
        search(&base, &rel)
    } else {
        walk(&base, &mut search)
    };
    if out.is_empty() {
        return Ok(format!(
            "No matches for {:?} under {}",
            p.pattern,
            base.display()
        ));
    }
    let mut text = out.join("\n");
    if !complete {
        text.push_str(&format!(
            "\n[stopped after {} matches or the walk bound]",
            out.len()
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_never_climbs_above_root() {
        assert_eq!(
            normalize(Path::new("/a/b/../../../etc")),
            PathBuf::from("/etc")
        );
        assert_eq!(normalize(Path::new("/a/./b/")), PathBuf::from("/a/b"));
    }

    #[test]
    fn split_glob_finds_the_literal_base() {
        assert_eq!(split_glob("src/**/*.rs"), ("src".into(), "**/*.rs".into()));
        assert_eq!(split_glob("*.md"), ("".into(), "*.md".into()));
        assert_eq!(
            split_glob("/workspace/group/*.md"),
            ("/workspace/group".into(), "*.md".into())
        );
        assert_eq!(split_glob("/*"), ("/".into(), "*".into()));
    }
}
