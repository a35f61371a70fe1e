//! The default seccomp profile, compiled with the pure-Rust `seccompiler` for x86_64 and aarch64.
//!
//! libcontainer only applies the spec's seccomp section with its `libseccomp` feature (a C library
//! that does not link cleanly for static musl builds) and otherwise skips it with a warning. So the
//! profile is compiled here, in the helper, and installed by our executor right before `execve`
//! (after capabilities are dropped and `no_new_privileges` is set), and a run whose filter cannot be
//! installed never reaches its workload.
//!
//! It is a deny list on top of the other barriers (no capabilities, non-root, namespaces): calls
//! that only make sense for a privileged or kernel-poking process, and the big kernel attack
//! surfaces an agent does not need, return `EPERM`. `clone3` returns `ENOSYS` so libc falls back to
//! `clone`, whose flags the filter can read and where new namespaces are refused. Syscall numbers
//! come from seccompiler's per-architecture tables, so names missing on aarch64 (`iopl`, …) are
//! listed only for x86_64. Any other architecture ABI (i386 via `int 0x80`) kills the process, and
//! x32 syscall numbers are refused outright.
//!
//! The list is documented for operators in `docs/security.md`.

use seccompiler::{BpfProgram, TargetArch, sock_filter};
use serde_json::json;

/// Denied with `EPERM` on every architecture.
pub const DENIED_COMMON: &[&str] = &[
    // Mounts and namespaces: the run's view of the system is fixed by the sandbox.
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    // Kernel modules, kexec, reboot.
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    // Large kernel attack surface an agent does not need.
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "keyctl",
    "add_key",
    "request_key",
    // Looking into or controlling other processes.
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "pidfd_getfd",
    // Host-wide state.
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "quotactl_fd",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "syslog",
    "sethostname",
    "setdomainname",
    "vhangup",
    "lookup_dcookie",
    "nfsservctl",
    "fanotify_init",
    // File handles bypass path permissions (the "shocker" escape).
    "open_by_handle_at",
    "name_to_handle_at",
];

/// Denied with `EPERM` on x86_64 only (absent from the aarch64 table).
pub const DENIED_X86_64: &[&str] = &[
    "iopl",
    "ioperm",
    "uselib",
    "_sysctl",
    "create_module",
    "get_kernel_syms",
    "query_module",
];

/// `clone` flags that create namespaces; `clone` with any of them returns `EPERM`. (`CLONE_NEWTIME`
/// shares its bit with the exit signal in `clone`, and only exists for `clone3`/`unshare`, which
/// are refused whole.)
pub const DENIED_CLONE_FLAGS: &[(&str, u64)] = &[
    ("CLONE_NEWNS", 0x0002_0000),
    ("CLONE_NEWCGROUP", 0x0200_0000),
    ("CLONE_NEWUTS", 0x0400_0000),
    ("CLONE_NEWIPC", 0x0800_0000),
    ("CLONE_NEWUSER", 0x1000_0000),
    ("CLONE_NEWPID", 0x2000_0000),
    ("CLONE_NEWNET", 0x4000_0000),
];

/// x32 syscalls on x86_64 carry this bit in the number; none is allowed.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Why the profile could not be built or installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The build target is neither x86_64 nor aarch64.
    #[error("no seccomp profile for architecture {0}")]
    UnsupportedArch(&'static str),
    /// seccompiler refused the profile (e.g. an unknown syscall name for the architecture).
    #[error("compiling the seccomp profile for {arch:?}: {err}")]
    Compile {
        /// The target.
        arch: TargetArch,
        /// seccompiler's error.
        err: seccompiler::Error,
    },
    /// The kernel refused the filter.
    #[error("installing the seccomp filter: {0}")]
    Install(seccompiler::Error),
}

/// The architecture this binary runs on.
pub fn native_arch() -> Result<TargetArch, SeccompError> {
    match std::env::consts::ARCH {
        "x86_64" => Ok(TargetArch::x86_64),
        "aarch64" => Ok(TargetArch::aarch64),
        other => Err(SeccompError::UnsupportedArch(other)),
    }
}

/// Every syscall name denied with `EPERM` on `arch`.
pub fn denied_syscalls(arch: TargetArch) -> Vec<&'static str> {
    let mut names = DENIED_COMMON.to_vec();
    if arch == TargetArch::x86_64 {
        names.extend_from_slice(DENIED_X86_64);
    }
    names
}

fn profile_json(arch: TargetArch) -> serde_json::Value {
    let mut deny: Vec<serde_json::Value> = denied_syscalls(arch)
        .into_iter()
        .map(|name| json!({ "syscall": name }))
        .collect();
    for (name, flag) in DENIED_CLONE_FLAGS {
        deny.push(json!({
            "syscall": "clone",
            "comment": name,
            "args": [{ "index": 0, "type": "qword", "op": { "masked_eq": flag }, "val": flag }],
        }));
    }
    json!({
        "deny": {
            "mismatch_action": "allow",
            "match_action": { "errno": libc::EPERM },
            "filter": deny,
        },
        "clone3": {
            "mismatch_action": "allow",
            "match_action": { "errno": libc::ENOSYS },
            "filter": [{ "syscall": "clone3" }],
        },
    })
}

/// Compiles the profile for `arch` into the BPF programs to install, in order.
pub fn compile(arch: TargetArch) -> Result<Vec<BpfProgram>, SeccompError> {
    let text = profile_json(arch).to_string();
    let mut map = seccompiler::compile_from_json(text.as_bytes(), arch)
        .map_err(|err| SeccompError::Compile { arch, err })?;
    let missing = || SeccompError::Compile {
        arch,
        err: seccompiler::Error::EmptyFilter,
    };
    let mut deny = map.remove("deny").ok_or_else(missing)?;
    let clone3 = map.remove("clone3").ok_or_else(missing)?;
    if arch == TargetArch::x86_64 {
        // Prepended, so every jump offset inside seccompiler's program stays valid.
        let guard = vec![
            // A = seccomp_data.nr
            sock_filter {
                code: 0x20,
                jt: 0,
                jf: 0,
                k: 0,
            },
            // if A >= X32_SYSCALL_BIT goto deny else skip
            sock_filter {
                code: 0x35,
                jt: 0,
                jf: 1,
                k: X32_SYSCALL_BIT,
            },
            // return ERRNO(EPERM)
            sock_filter {
                code: 0x06,
                jt: 0,
                jf: 0,
                k: 0x0005_0000 | libc::EPERM as u32,
            },
        ];
        deny.splice(0..0, guard);
    }
    Ok(vec![clone3, deny])
}

/// Installs compiled programs on the calling thread. Needs `no_new_privileges` (set by
/// libcontainer from the spec) or CAP_SYS_ADMIN; seccompiler sets no_new_privs itself as well.
pub fn install(programs: &[BpfProgram]) -> Result<(), SeccompError> {
    for p in programs {
        seccompiler::apply_filter(p).map_err(SeccompError::Install)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_compiles_for_both_architectures() {
        for arch in [TargetArch::x86_64, TargetArch::aarch64] {
            let progs = compile(arch).unwrap_or_else(|e| panic!("{arch:?}: {e}"));
            assert_eq!(progs.len(), 2);
            // A BPF program is limited to 4096 instructions.
            assert!(progs.iter().all(|p| !p.is_empty() && p.len() < 4096));
        }
    }

    #[test]
    fn x86_only_names_are_rejected_on_aarch64() {
        // Proves names are resolved per architecture: the x86-only list would not compile there.
        let text = json!({"f": {"mismatch_action": "allow", "match_action": {"errno": 1},
            "filter": [{"syscall": "iopl"}]}})
        .to_string();
        assert!(seccompiler::compile_from_json(text.as_bytes(), TargetArch::aarch64).is_err());
        assert!(seccompiler::compile_from_json(text.as_bytes(), TargetArch::x86_64).is_ok());
    }

    #[test]
    fn the_deny_list_covers_the_documented_essentials() {
        let names = denied_syscalls(TargetArch::aarch64);
        for essential in [
            "mount",
            "unshare",
            "setns",
            "ptrace",
            "bpf",
            "keyctl",
            "io_uring_setup",
        ] {
            assert!(names.contains(&essential), "{essential}");
        }
        assert!(!names.contains(&"iopl"));
        assert!(denied_syscalls(TargetArch::x86_64).contains(&"iopl"));
    }

    #[test]
    fn x86_program_starts_with_the_x32_guard() {
        let progs = compile(TargetArch::x86_64).unwrap();
        assert_eq!(progs[1][1].k, X32_SYSCALL_BIT);
        let arm = compile(TargetArch::aarch64).unwrap();
        assert_ne!(arm[1][1].k, X32_SYSCALL_BIT);
    }

    #[test]
    fn installed_filter_denies_in_a_forked_child() {
        // Process-global state: do it in a forked child (youki test_utils style).
        let progs = compile(native_arch().unwrap()).unwrap();
        // SAFETY: the child only calls async-signal-safe functions (prctl, seccomp, syscall,
        // _exit) and touches memory prepared before the fork.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let code = match install(&progs) {
                Err(_) => 10,
                Ok(()) => {
                    // SAFETY: unshare with a flag; returns -1 and sets errno when denied.
                    let rc = unsafe { libc::unshare(libc::CLONE_NEWUSER) };
                    let errno = std::io::Error::last_os_error().raw_os_error();
                    // SAFETY: getpid is always safe; proves ordinary calls still work.
                    let alive = unsafe { libc::getpid() } > 0;
                    if rc == -1 && errno == Some(libc::EPERM) && alive {
                        0
                    } else {
                        11
                    }
                }
            };
            // SAFETY: _exit never returns and skips the parent's atexit handlers.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status));
        assert_eq!(libc::WEXITSTATUS(status), 0, "child saw unshare not denied");
    }
}
