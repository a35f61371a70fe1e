//! The secret broker: loads the model credential from a root-only file or from systemd credentials
//! (`$CREDENTIALS_DIRECTORY/credentials`, see `LoadCredential=`), holds it in [`Secret`] (zeroized on
//! drop, registered with the redactor), and hands out per-run tokens that are worthless outside the
//! gateway. We never write the credential anywhere; runs only ever see their token.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::core::redact::Secret;
use crate::net::NetError;

/// File name looked up inside `$CREDENTIALS_DIRECTORY`.
pub const SYSTEMD_CREDENTIAL_NAME: &str = "credentials";
/// Largest credentials file we read.
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// The model credential and how the gateway presents it upstream.
#[derive(Clone, Debug)]
pub enum Credential {
    /// `ANTHROPIC_API_KEY`: sent as `x-api-key`.
    ApiKey(Secret),
    /// `CLAUDE_CODE_OAUTH_TOKEN`: sent as `Authorization: Bearer`.
    OAuth(Secret),
}

impl Credential {
    /// Which file to read: `$CREDENTIALS_DIRECTORY/credentials` when systemd provides it, else `file`.
    pub fn source(file: &Path, credentials_directory: Option<&Path>) -> PathBuf {
        match credentials_directory {
            Some(dir) => dir.join(SYSTEMD_CREDENTIAL_NAME),
            None => file.to_path_buf(),
        }
    }

    /// Loads from `path` (see [`Credential::source`]). The file must be a regular file readable by its
    /// owner only, owned by root or by us; it holds `KEY=value` lines (`#` comments allowed) with
    /// `ANTHROPIC_API_KEY` and/or `CLAUDE_CODE_OAUTH_TOKEN`. The API key wins when both are present.
    pub fn load(path: &Path) -> Result<Self, NetError> {
        let err = |reason: String| NetError::Credentials {
            path: path.display().to_string(),
            reason,
        };
        let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
        if !meta.is_file() {
            return Err(err("not a regular file".into()));
        }
        if meta.mode() & 0o077 != 0 {
            return Err(err(format!(
                "mode {:o} lets group or others read it; chmod 600",
                meta.mode() & 0o777
            )));
        }
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        if meta.uid() != 0 && meta.uid() != euid {
            return Err(err(format!("owned by uid {}, not root", meta.uid())));
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(err("larger than 64 KiB".into()));
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?);
        Self::parse(&text)
            .ok_or_else(|| err("no ANTHROPIC_API_KEY or CLAUDE_CODE_OAUTH_TOKEN line".into()))
    }

    /// Parses `KEY=value` text; values may be quoted.
    pub fn parse(text: &str) -> Option<Self> {
        let mut api = None;
        let mut oauth = None;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|x| x.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')))
                .unwrap_or(v);
            if v.is_empty() {
                continue;
            }
            match k.trim() {
                "ANTHROPIC_API_KEY" => api = Some(Secret::new(v.to_string())),
                "CLAUDE_CODE_OAUTH_TOKEN" => oauth = Some(Secret::new(v.to_string())),
                _ => {}
            }
        }
        api.map(Self::ApiKey).or(oauth.map(Self::OAuth))
    }

    /// The raw value, for the one place that sends it upstream.
    pub fn secret(&self) -> &Secret {
        match self {
            Self::ApiKey(s) | Self::OAuth(s) => s,
        }
    }
}

/// A fresh per-run token: 32 random bytes, hex, with a recognizable prefix.
pub fn new_run_token() -> Result<String, NetError> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    SystemRandom::new()
        .fill(bytes.as_mut())
        .map_err(|_| NetError::Policy("system random source failed".into()))?;
    let mut token = String::with_capacity(4 + 64);
    token.push_str("ncr-");
    for b in bytes.iter() {
        token.push_str(&format!("{b:02x}"));
    }
    Ok(token)
}

/// Constant-time comparison, so a run cannot find another run's token byte by byte.
pub fn token_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn parses_either_credential_and_prefers_the_api_key() {
        let c = Credential::parse("# c\nCLAUDE_CODE_OAUTH_TOKEN=oauth-value-123\n").unwrap();
        assert!(matches!(&c, Credential::OAuth(s) if s.expose() == "oauth-value-123"));
        let c = Credential::parse(
            "CLAUDE_CODE_OAUTH_TOKEN=oauth-value-123\nANTHROPIC_API_KEY=\"sk-ant-quoted-1234\"\n",
        )
        .unwrap();
        assert!(matches!(&c, Credential::ApiKey(s) if s.expose() == "sk-ant-quoted-1234"));
        assert!(Credential::parse("OTHER=1\nANTHROPIC_API_KEY=\n").is_none());
        assert_eq!(format!("{c:?}"), "ApiKey([REDACTED])");
    }

    #[test]
    fn refuses_files_others_can_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("credentials");
        std::fs::write(&p, "ANTHROPIC_API_KEY=sk-ant-file-secret-1\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Credential::load(&p).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        assert!(!e.contains("sk-ant-file-secret-1"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            Credential::load(&p).unwrap(),
            Credential::ApiKey(_)
        ));
        assert_eq!(
            Credential::source(&p, Some(Path::new("/run/credentials/nanoclaw.service"))),
            Path::new("/run/credentials/nanoclaw.service/credentials")
        );
        assert_eq!(Credential::source(&p, None), p);
    }

    #[test]
    fn run_tokens_are_random_and_compared_in_constant_time() {
        let a = new_run_token().unwrap();
        let b = new_run_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 68);
        assert!(token_eq(&a, &a.clone()));
        assert!(!token_eq(&a, &b));
        assert!(!token_eq(&a, "ncr-"));
    }
}
