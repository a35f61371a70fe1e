//! The one redaction helper. Every place a credential could appear (log sink, `config show`, error text
//! built from upstream responses) passes text through [`redact`].
//!
//! Two layers: values registered with [`register_secret`] are replaced wherever they appear, and
//! credential-shaped text (Anthropic keys, bearer tokens, `KEY=value` for known variable names) is masked
//! even if nobody registered it.

use std::fmt;
use std::sync::{LazyLock, RwLock};

use regex::Regex;
use zeroize::{Zeroize, Zeroizing};

/// What replaces a secret.
pub const REDACTED: &str = "[REDACTED]";

/// A credential held in memory only. Zeroized on drop; `Debug` and `Display` never show it.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a value and registers it with the process-wide redactor.
    pub fn new(value: String) -> Self {
        register_secret(&value);
        Self(Zeroizing::new(value))
    }

    /// The raw value, for the single place that must send it upstream.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

struct Registry(Vec<Zeroizing<String>>);

impl Drop for Registry {
    fn drop(&mut self) {
        for s in &mut self.0 {
            s.zeroize();
        }
    }
}

static REGISTRY: RwLock<Registry> = RwLock::new(Registry(Vec::new()));

/// Values shorter than this are not registered: masking every "a" in the logs would help nobody.
const MIN_SECRET_LEN: usize = 8;

/// Adds a value to the set that [`redact`] removes everywhere.
pub fn register_secret(value: &str) {
    if value.len() < MIN_SECRET_LEN {
        return;
    }
    let mut reg = REGISTRY.write().unwrap_or_else(|e| e.into_inner());
    if !reg.0.iter().any(|s| s.as_str() == value) {
        reg.0.push(Zeroizing::new(value.to_string()));
    }
}

static SHAPES: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        (r"sk-ant-[A-Za-z0-9_\-]{8,}", REDACTED),
        (r"(?i)(bearer\s+)[A-Za-z0-9._~+/=\-]{8,}", "${1}[REDACTED]"),
        (
            r"(?i)((?:ANTHROPIC_API_KEY|ANTHROPIC_AUTH_TOKEN|CLAUDE_CODE_OAUTH_TOKEN|x-api-key)\s*[=:]\s*)[^\s,;]+",
            "${1}[REDACTED]",
        ),
    ]
    .into_iter()
    .map(|(p, r)| (Regex::new(p).expect("static regex"), r))
    .collect()
});

/// Returns `text` with every registered secret and every credential-shaped substring masked.
pub fn redact(text: &str) -> String {
    let mut out = text.to_string();
    {
        let reg = REGISTRY.read().unwrap_or_else(|e| e.into_inner());
        for secret in &reg.0 {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), REDACTED);
            }
        }
    }
    for (re, replacement) in SHAPES.iter() {
        if re.is_match(&out) {
            out = re.replace_all(&out, *replacement).into_owned();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_values_are_masked() {
        let s = Secret::new("hunter2-but-longer".to_string());
        assert_eq!(format!("{s:?} {s}"), "[REDACTED] [REDACTED]");
        assert_eq!(redact("pw=hunter2-but-longer!"), "pw=[REDACTED]!");
    }

    #[test]
    fn credential_shapes_are_masked() {
        assert_eq!(
            redact("key sk-ant-api03-abcdefghijkl end"),
            "key [REDACTED] end"
        );
        assert_eq!(
            redact("Authorization: Bearer abc.def.ghijklmn"),
            "Authorization: Bearer [REDACTED]"
        );
        assert_eq!(
            redact("ANTHROPIC_API_KEY=xyz123 other"),
            "ANTHROPIC_API_KEY=[REDACTED] other"
        );
        assert_eq!(redact("nothing here"), "nothing here");
    }
}
