//! Where the WhatsApp credentials live and who may read them: `<data_dir>/whatsapp/` (0700) holding the
//! library's own SQLite file `auth.db` (0600). Its own file because the library runs its own diesel
//! pool; sharing the host database would mean two writers on one file.

use std::fs::{self, OpenOptions, Permissions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::channel::whatsapp::WhatsAppError;

/// Subdirectory of the data dir for everything WhatsApp.
pub const DIR: &str = "whatsapp";
/// The library's credential and Signal-session store.
pub const AUTH_DB: &str = "auth.db";
/// SQLite files that accompany the database and hold the same secrets.
const SIDECARS: [&str; 3] = ["-wal", "-shm", "-journal"];

/// Paths of the WhatsApp state under a data dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaPaths {
    pub dir: PathBuf,
    pub auth_db: PathBuf,
    /// Last pairing QR as an image, present only while pairing.
    pub qr_png: PathBuf,
    /// One-line pairing status for operators and tools (contract §11.2 values).
    pub status: PathBuf,
}

impl WaPaths {
    pub fn new(data_dir: &Path) -> Self {
        let dir = data_dir.join(DIR);
        Self {
            auth_db: dir.join(AUTH_DB),
            qr_png: dir.join("pair-qr.png"),
            status: dir.join("auth-status.txt"),
            dir,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> WhatsAppError + '_ {
    move |source| WhatsAppError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates the directory (0700) and the database file (0600) before the library opens it, and tightens
/// both, and any SQLite sidecar files, if they already exist with wider modes. SQLite creates its
/// `-wal`/`-shm` files with the database file's mode, so they stay 0600 too.
pub fn prepare(paths: &WaPaths) -> Result<(), WhatsAppError> {
    fs::create_dir_all(&paths.dir).map_err(io_err(&paths.dir))?;
    refuse_symlink(&paths.dir)?;
    fs::set_permissions(&paths.dir, Permissions::from_mode(0o700)).map_err(io_err(&paths.dir))?;
    refuse_symlink(&paths.auth_db)?;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&paths.auth_db)
        .map_err(io_err(&paths.auth_db))?;
    tighten(&paths.auth_db)?;
    for suffix in SIDECARS {
        let sidecar = sidecar(&paths.auth_db, suffix);
        if sidecar.exists() {
            tighten(&sidecar)?;
        }
    }
    Ok(())
}

/// Deletes the credentials (database and sidecars) so the next pairing starts fresh.
pub fn reset(paths: &WaPaths) -> Result<(), WhatsAppError> {
    let mut files = vec![paths.auth_db.clone()];
    files.extend(SIDECARS.iter().map(|s| sidecar(&paths.auth_db, s)));
    for file in files {
        match fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&file)(e)),
        }
    }
    Ok(())
}

fn sidecar(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

fn tighten(path: &Path) -> Result<(), WhatsAppError> {
    fs::set_permissions(path, Permissions::from_mode(0o600)).map_err(io_err(path))
}

/// A symlink here could point the secrets (or our chmod) somewhere else.
fn refuse_symlink(path: &Path) -> Result<(), WhatsAppError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => Err(WhatsAppError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "is a symlink"),
        }),
        _ => Ok(()),
    }
}

/// Writes a small file atomically with mode 0600 (temp file + rename).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), WhatsAppError> {
    use std::io::Write;
    let tmp = sidecar(path, ".tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    file.write_all(bytes).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn creates_private_dir_and_file() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = WaPaths::new(tmp.path());
        prepare(&paths).unwrap();
        assert_eq!(mode(&paths.dir), 0o700);
        assert_eq!(mode(&paths.auth_db), 0o600);
        assert_eq!(fs::metadata(&paths.auth_db).unwrap().len(), 0);
    }

    #[test]
    fn tightens_existing_files_without_touching_content() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = WaPaths::new(tmp.path());
        fs::create_dir_all(&paths.dir).unwrap();
        fs::set_permissions(&paths.dir, Permissions::from_mode(0o755)).unwrap();
        fs::write(&paths.auth_db, b"keep me").unwrap();
        fs::set_permissions(&paths.auth_db, Permissions::from_mode(0o644)).unwrap();
        let wal = sidecar(&paths.auth_db, "-wal");
        fs::write(&wal, b"wal").unwrap();
        fs::set_permissions(&wal, Permissions::from_mode(0o666)).unwrap();
        prepare(&paths).unwrap();
        assert_eq!(mode(&paths.dir), 0o700);
        assert_eq!(mode(&paths.auth_db), 0o600);
        assert_eq!(mode(&wal), 0o600);
        assert_eq!(fs::read(&paths.auth_db).unwrap(), b"keep me");
    }

    #[test]
    fn refuses_a_symlinked_database() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = WaPaths::new(tmp.path());
        fs::create_dir_all(&paths.dir).unwrap();
        let elsewhere = tmp.path().join("elsewhere.db");
        fs::write(&elsewhere, b"").unwrap();
        std::os::unix::fs::symlink(&elsewhere, &paths.auth_db).unwrap();
        let err = prepare(&paths).unwrap_err();
        assert!(err.to_string().contains("is a symlink"), "{err}");
    }

    #[test]
    fn reset_removes_database_and_sidecars() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = WaPaths::new(tmp.path());
        prepare(&paths).unwrap();
        fs::write(sidecar(&paths.auth_db, "-shm"), b"x").unwrap();
        reset(&paths).unwrap();
        assert!(!paths.auth_db.exists());
        assert!(!sidecar(&paths.auth_db, "-shm").exists());
        reset(&paths).unwrap(); // idempotent
    }

    #[test]
    fn private_writes_are_0600_and_replace() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("status.txt");
        write_private(&file, b"one").unwrap();
        write_private(&file, b"two").unwrap();
        assert_eq!(fs::read(&file).unwrap(), b"two");
        assert_eq!(mode(&file), 0o600);
    }
}
