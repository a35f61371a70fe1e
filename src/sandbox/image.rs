//! The runner image as a run's root: a prepared directory is used as is; a squashfs or erofs file
//! is attached to a loop device read-only and mounted read-only once, then shared by every run.
//!
//! Plain syscalls (no libcontainer), so the host may call this at startup; it blocks briefly, so
//! call it from `spawn_blocking` or before the runtime starts.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// Errors of preparing the image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The file is neither a directory nor a squashfs/erofs image.
    #[error("{0} is not a directory, squashfs or erofs image")]
    UnknownFormat(PathBuf),
    /// No free loop device could be configured.
    #[error("no loop device for {path}: {err}")]
    Loop {
        /// The image.
        path: PathBuf,
        /// The last error.
        err: io::Error,
    },
    /// Filesystem error with its path.
    #[error("{path}: {err}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        err: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ImageError + '_ {
    move |err| ImageError::Io {
        path: path.to_path_buf(),
        err,
    }
}

/// The image's filesystem type, from its magic number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// `hsqs` at offset 0.
    Squashfs,
    /// `0xE0F5E1E2` (little endian) at offset 1024.
    Erofs,
}

impl ImageFormat {
    fn fstype(self) -> &'static str {
        match self {
            ImageFormat::Squashfs => "squashfs",
            ImageFormat::Erofs => "erofs",
        }
    }

    /// Recognizes an image from its first 1028 bytes (or fewer).
    pub fn detect(head: &[u8]) -> Option<Self> {
        if head.starts_with(b"hsqs") {
            return Some(ImageFormat::Squashfs);
        }
        if head.get(1024..1028) == Some(&0xE0F5_E1E2u32.to_le_bytes()[..]) {
            return Some(ImageFormat::Erofs);
        }
        None
    }
}

/// A root ready for runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerRoot {
    /// The directory to use as `ContainerSpec::rootfs` (a real path).
    pub root: PathBuf,
    /// Set when this module mounted an image there (unmount with [`RunnerRoot::unmount`]).
    pub mounted: Option<ImageFormat>,
}

impl RunnerRoot {
    /// Detaches the image mount, if there is one; the loop device goes with it (autoclear).
    pub fn unmount(&self) -> io::Result<()> {
        if self.mounted.is_some() {
            nix::mount::umount2(&self.root, nix::mount::MntFlags::MNT_DETACH)?;
        }
        Ok(())
    }
}

/// Makes `image` usable as the runs' root. A directory is returned as is (canonicalized). An image
/// file is mounted read-only (nodev, nosuid) at `mount_point`, replacing whatever an earlier,
/// crashed host left mounted there.
pub fn prepare(image: &Path, mount_point: &Path) -> Result<RunnerRoot, ImageError> {
    let meta = fs::metadata(image).map_err(io_err(image))?;
    if meta.is_dir() {
        return Ok(RunnerRoot {
            root: fs::canonicalize(image).map_err(io_err(image))?,
            mounted: None,
        });
    }
    let mut head = [0u8; 1028];
    let mut file = File::open(image).map_err(io_err(image))?;
    let n = read_up_to(&mut file, &mut head).map_err(io_err(image))?;
    let format =
        ImageFormat::detect(&head[..n]).ok_or_else(|| ImageError::UnknownFormat(image.into()))?;
    if !meta.file_type().is_file() && !meta.file_type().is_block_device() {
        return Err(ImageError::UnknownFormat(image.into()));
    }

    fs::create_dir_all(mount_point).map_err(io_err(mount_point))?;
    let target = fs::canonicalize(mount_point).map_err(io_err(mount_point))?;
    // An earlier host may have died with the image mounted; detach every layer.
    while is_mount_point(&target) {
        nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH)
            .map_err(|e| io_err(&target)(e.into()))?;
    }
    // The loop device stays open until the mount holds it: with autoclear, closing the last
    // reference to an unmounted device detaches it.
    let (device, _loop_fd) = if meta.file_type().is_block_device() {
        (image.to_path_buf(), None)
    } else {
        let (path, fd) = attach_loop(image)?;
        (path, Some(fd))
    };
    let flags = nix::mount::MsFlags::MS_RDONLY
        | nix::mount::MsFlags::MS_NODEV
        | nix::mount::MsFlags::MS_NOSUID;
    nix::mount::mount(
        Some(&device),
        &target,
        Some(format.fstype()),
        flags,
        None::<&str>,
    )
    .map_err(|e| io_err(&target)(e.into()))?;
    Ok(RunnerRoot {
        root: target,
        mounted: Some(format),
    })
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            m => n += m,
        }
    }
    Ok(n)
}

/// Whether `path` is the root of a mount (its device differs from its parent's, or mountinfo
/// lists it).
fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    info.lines().any(|l| {
        l.split_whitespace()
            .nth(4)
            .is_some_and(|mp| mp.replace("\\040", " ") == want)
    })
}

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_SET_STATUS64: libc::c_ulong = 0x4C04;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64` from linux/loop.h.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` from linux/loop.h (Linux 5.8+).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

fn loop_info() -> LoopInfo64 {
    LoopInfo64 {
        lo_device: 0,
        lo_inode: 0,
        lo_rdevice: 0,
        lo_offset: 0,
        lo_sizelimit: 0,
        lo_number: 0,
        lo_encrypt_type: 0,
        lo_encrypt_key_size: 0,
        // Autoclear: the device detaches when the mount goes, so nothing leaks.
        lo_flags: LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR,
        lo_file_name: [0; 64],
        lo_crypt_name: [0; 64],
        lo_encrypt_key: [0; 32],
        lo_init: [0; 2],
    }
}

/// Attaches `image` read-only to a free loop device; returns its path and an open handle that
/// keeps it attached until the mount takes over.
fn attach_loop(image: &Path) -> Result<(PathBuf, File), ImageError> {
    let loop_err = |err| ImageError::Loop {
        path: image.to_path_buf(),
        err,
    };
    let backing = File::open(image).map_err(io_err(image))?;
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .map_err(loop_err)?;
    let mut last = io::Error::other("no attempt");
    // Another process may grab the same free device between GET_FREE and configuring it.
    for _ in 0..16 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
        if n < 0 {
            return Err(loop_err(io::Error::last_os_error()));
        }
        let dev = PathBuf::from(format!("/dev/loop{n}"));
        let dev_file = match OpenOptions::new().read(true).open(&dev) {
            Ok(f) => f,
            Err(e) => {
                last = e;
                continue;
            }
        };
        let cfg = LoopConfig {
            fd: backing.as_raw_fd() as u32,
            block_size: 0,
            info: loop_info(),
            reserved: [0; 8],
        };
        // SAFETY: LOOP_CONFIGURE reads a properly laid out `struct loop_config`.
        let rc = unsafe { libc::ioctl(dev_file.as_raw_fd(), LOOP_CONFIGURE as _, &cfg) };
        if rc == 0 {
            return Ok((dev, dev_file));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EBUSY) => last = err,
            // Kernels before 5.8: the two-step setup.
            Some(libc::EINVAL) | Some(libc::ENOTTY) => {
                // SAFETY: LOOP_SET_FD takes the backing fd as its argument.
                let rc = unsafe {
                    libc::ioctl(dev_file.as_raw_fd(), LOOP_SET_FD as _, backing.as_raw_fd())
                };
                if rc != 0 {
                    last = io::Error::last_os_error();
                    continue;
                }
                let info = loop_info();
                // SAFETY: LOOP_SET_STATUS64 reads a `struct loop_info64`.
                let rc =
                    unsafe { libc::ioctl(dev_file.as_raw_fd(), LOOP_SET_STATUS64 as _, &info) };
                if rc != 0 {
                    let err = io::Error::last_os_error();
                    // SAFETY: detach what we attached; no argument.
                    unsafe { libc::ioctl(dev_file.as_raw_fd(), LOOP_CLR_FD as _) };
                    return Err(loop_err(err));
                }
                return Ok((dev, dev_file));
            }
            _ => return Err(loop_err(err)),
        }
    }
    Err(loop_err(last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_recognized_by_magic() {
        assert_eq!(
            ImageFormat::detect(b"hsqs\0\0"),
            Some(ImageFormat::Squashfs)
        );
        let mut erofs = vec![0u8; 1028];
        erofs[1024..].copy_from_slice(&0xE0F5_E1E2u32.to_le_bytes());
        assert_eq!(ImageFormat::detect(&erofs), Some(ImageFormat::Erofs));
        assert_eq!(ImageFormat::detect(b"\x7fELF"), None);
        assert_eq!(ImageFormat::detect(&[]), None);
    }

    #[test]
    fn a_directory_is_used_as_is_and_other_files_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = prepare(tmp.path(), &tmp.path().join("mnt")).unwrap();
        assert_eq!(root.root, tmp.path().canonicalize().unwrap());
        assert_eq!(root.mounted, None);
        let f = tmp.path().join("junk");
        fs::write(&f, b"not an image").unwrap();
        assert!(matches!(
            prepare(&f, &tmp.path().join("mnt")),
            Err(ImageError::UnknownFormat(_))
        ));
    }

    #[test]
    fn struct_layouts_match_the_kernel() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }
}
