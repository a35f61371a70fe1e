//! Real containers through the libcontainer backend (root only; CI runs as root).
//!
//! Each test gets its own state root and cgroup parent, so the leak checks see only its own runs.
//! The test image is Debian's busybox-static, built by `tests/support/build-test-rootfs.sh` and
//! cached under `target/`. Without root, or on a host that cannot enforce the limits, every test
//! prints why it skips.

#[path = "support/sandbox.rs"]
mod sandbox_support;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nanoclaw::core::mount_policy::{MountAllowlist, MountPolicy};
use nanoclaw::core::wire::{AdditionalMount, OUTPUT_END_MARKER, OUTPUT_START_MARKER};
use nanoclaw::sandbox::mounts::{self, DataLayout, FsResolver};
use nanoclaw::sandbox::protocol::{Event, ProcessExit, Request, RunRequest};
use nanoclaw::sandbox::{
    Backend, ContainerSpec, LibcontainerBackend, LibcontainerConfig, RunEvent, RunLogSpec,
    RunOutcome, RunSpec, RunStatus,
};
use sandbox_support::{HELPER, Sandbox, test_rootfs};

/// A [`Sandbox`] with the busybox rootfs resolved and a `data/` dir for group layouts.
struct Env {
    sb: Sandbox,
    rootfs: PathBuf,
    data: PathBuf,
}

impl std::ops::Deref for Env {
    type Target = Sandbox;
    fn deref(&self) -> &Sandbox {
        &self.sb
    }
}

/// The environment for one test, or `None` (with the reason printed) where it cannot run.
fn env(name: &str) -> Option<Env> {
    env_with(name, |_| {})
}

fn env_with(name: &str, tweak: impl FnOnce(&mut LibcontainerConfig)) -> Option<Env> {
    let sb = Sandbox::with_config(name, tweak)?;
    let data = sb.base.join("data");
    fs::create_dir_all(&data).unwrap();
    Some(Env {
        rootfs: sb.rootfs(),
        data,
        sb,
    })
}

impl Env {
    fn container(&self, args: &[&str]) -> ContainerSpec {
        ContainerSpec::new(
            self.rootfs.clone(),
            args.iter().map(|s| s.to_string()).collect(),
        )
    }

    fn sh(&self, script: &str) -> ContainerSpec {
        self.container(&["/bin/sh", "-c", script])
    }

    fn layout(&self) -> DataLayout {
        DataLayout {
            data_dir: self.data.clone(),
        }
    }

    /// A container with the group's contract mounts.
    fn group(&self, folder: &str, script: &str) -> ContainerSpec {
        let mut c = self.sh(script);
        c.mounts = mounts::group_mounts(&self.layout(), folder, (1000, 1000), &[]).unwrap();
        c
    }

    fn spec(&self, container: ContainerSpec) -> RunSpec {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut s = RunSpec::new(format!("t{}-{n}", std::process::id()), container);
        s.timeout = Duration::from_secs(30);
        s.grace = Duration::from_millis(500);
        s
    }

    async fn run(&self, spec: RunSpec) -> RunOutcome {
        self.backend.start(spec).await.unwrap().wait().await
    }

    async fn run_sh(&self, script: &str) -> RunOutcome {
        self.run(self.spec(self.sh(script))).await
    }

    /// Nothing of any run is left: state dirs, cgroups, mounts, zombies, supervisors.
    fn assert_clean(&self) {
        self.sb.assert_clean();
        let state = &self.backend.config().state_root;
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
        for needle in [state.to_string_lossy(), self.rootfs.to_string_lossy()] {
            assert!(
                !mountinfo.contains(needle.as_ref()),
                "host mount table mentions {needle}"
            );
        }
        // Other tests in this process may have a helper that exited a moment ago and is about to
        // be reaped; a real leak stays.
        wait_until("no zombie children", Duration::from_secs(3), || {
            own_zombies().is_empty()
        });
    }
}

/// Children of this process that are zombies.
fn own_zombies() -> Vec<i32> {
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() > 1 && f[0] == "Z" && f[1] == me {
            out.push(entry.file_name().to_string_lossy().parse().unwrap_or(-1));
        }
    }
    out
}

fn stdout(o: &RunOutcome) -> String {
    String::from_utf8_lossy(&o.stdout.bytes).into_owned()
}

fn stderr(o: &RunOutcome) -> String {
    String::from_utf8_lossy(&o.stderr.bytes).into_owned()
}

fn is_alive(pid: i32) -> bool {
    // A zombie no longer runs; its parent (or PID 1) will reap it.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, r)| !r.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stdin_is_echoed_and_frames_stream_in_order() {
    let Some(env) = env("echo") else { return };
    let input = format!(
        "noise\n{OUTPUT_START_MARKER}\n{{\"status\":\"success\",\"result\":\"one\"}}\n{OUTPUT_END_MARKER}\n\
         {OUTPUT_START_MARKER}\n{{\"status\":\"success\",\"result\":null,\"newSessionId\":\"s-1\"}}\n{OUTPUT_END_MARKER}\n"
    );
    let mut spec = env.spec(env.container(&["cat"]));
    spec.input = input.clone().into_bytes();
    let mut handle = env.backend.start(spec).await.unwrap();
    let mut events = Vec::new();
    let mut outcome = None;
    while let Some(ev) = handle.next_event().await {
        match ev {
            RunEvent::Finished(o) => outcome = Some(o),
            other => events.push(other),
        }
    }
    let outcome = outcome.unwrap();
    assert_eq!(outcome.status, RunStatus::Exited(0), "{}", stderr(&outcome));
    assert_eq!(
        stdout(&outcome),
        input,
        "stdin reached the workload and came back"
    );
    assert!(matches!(events[0], RunEvent::Started));
    let results: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::Frame(f) => Some(f.result.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(results, vec![Some(serde_json::json!("one")), None]);
    assert_eq!(outcome.frames, 2);
    assert_eq!(outcome.new_session_id.as_deref(), Some("s-1"));
    env.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rootfs_is_read_only_and_group_dir_is_writable() {
    let Some(env) = env("fs") else { return };
    let o = env
        .run(env.spec(env.group(
            "family",
            "touch /rootfile; echo rc=$?; echo hello > /workspace/group/note && echo wrote; \
             touch /tmp/x && echo tmp-ok",
        )))
        .await;
    assert_eq!(o.status, RunStatus::Exited(0));
    let out = stdout(&o);
    assert!(out.contains("rc=1"), "{out}");
    assert!(
        stderr(&o).contains("Read-only file system"),
        "{}",
        stderr(&o)
    );
    assert!(out.contains("wrote") && out.contains("tmp-ok"), "{out}");
    let note = env.layout().group_dir("family").join("note");
    assert_eq!(fs::read_to_string(&note).unwrap(), "hello\n");
    assert_eq!(
        fs::metadata(&note).unwrap().uid(),
        1000,
        "written by the run's uid"
    );
    assert!(!env.rootfs.join("rootfile").exists());
    env.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_only_extra_mount_is_readable_not_writable() {
    let Some(env) = env("extra") else { return };
    let allowed = env.data.parent().unwrap().join("shared");
    fs::create_dir_all(allowed.join("docs")).unwrap();
    fs::write(allowed.join("docs/readme"), "shared text\n").unwrap();
    let allowlist = MountAllowlist::parse(&format!(
        r#"{{"allowedRoots":[{{"path":"{}","allowReadWrite":true}}],"blockedPatterns":[],"nonMainReadOnly":false}}"#,
        allowed.display()
    ))
    .unwrap();
    let resolver = FsResolver { home: None };
    let policy = MountPolicy::new(&allowlist, &resolver);
    let request = AdditionalMount {
        host_path: allowed.join("docs").display().to_string(),
        container_path: None,
        readonly: Some(false), // asked for rw; a non-main group still gets ro
        extra: BTreeMap::new(),
    };
    let extra = mounts::validate_additional(Some(&policy), &[request], false, &resolver);
    assert_eq!(extra.len(), 1);
    let mut c = env.sh(
        "cat /workspace/extra/docs/readme; touch /workspace/extra/docs/new; echo rc=$?; \
         touch /workspace/extra/planted; echo rc2=$?",
    );
    c.mounts = mounts::group_mounts(&env.layout(), "family", (1000, 1000), &extra).unwrap();
    let o = env.run(env.spec(c)).await;
    assert_eq!(o.status, RunStatus::Exited(0));
    let out = stdout(&o);
    assert!(out.contains("shared text"), "{out}");
    assert!(out.contains("rc=1") && out.contains("rc2=1"), "{out}");
    assert!(
        stderr(&o).contains("Read-only file system"),
        "{}",
        stderr(&o)
    );
    assert!(!allowed.join("docs/new").exists());
    env.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn planted_symlinks_do_not_reach_the_host() {
    let Some(env) = env("symlink") else { return };
    // Run 1 plants links to /etc where a later run, or the host, might follow them.
    let o = env
        .run(env.spec(env.group(
            "family",
            "ln -s /etc /workspace/group/hostetc && ln -s /etc /workspace/group/logs && echo planted",
        )))
        .await;
    assert!(stdout(&o).contains("planted"), "{}", stderr(&o));
    let group_dir = env.layout().group_dir("family");
    assert_eq!(
        fs::read_link(group_dir.join("logs")).unwrap(),
        Path::new("/etc")
    );

    // Run 2 reads through the link, and asks the host to write its run log into `logs/`.
    let host_hostname = fs::read_to_string("/etc/hostname").unwrap_or_default();
    let etc_before: Vec<_> = fs::read_dir("/etc")
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let mut spec = env.spec(env.group(
        "family",
        "cat /workspace/group/hostetc/nanoclaw-marker; cat /workspace/group/hostetc/hostname",
    ));
    spec.log = Some(RunLogSpec {
        group_dir: group_dir.clone(),
        group_name: "Family".into(),
        is_main: false,
        verbose: true,
    });
    let o = env.run(spec).await;
    assert_eq!(o.status, RunStatus::Exited(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("inside-the-image"),
        "the link resolved inside the image: {out}"
    );
    assert!(out.contains("nanoclaw-test-rootfs"), "{out}");
    if !host_hostname.trim().is_empty() {
        assert!(
            !out.contains(host_hostname.trim()),
            "host /etc leaked: {out}"
        );
    }
    assert_eq!(
        o.log_file, None,
        "the host must not write through the planted link"
    );
    let etc_after: Vec<_> = fs::read_dir("/etc")
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        etc_before.len(),
        etc_after.len(),
        "nothing written into the host's /etc"
    );

    // Main sees every group folder; it can swap a group's session dir for a link to /etc. Building
    // that group's next mounts refuses instead of bind-mounting the host's /etc.
    let o = env
        .run(env.spec(env.group(
            "main",
            "ls /workspace/project/groups/family >/dev/null && echo sees-family",
        )))
        .await;
    assert!(stdout(&o).contains("sees-family"), "{}", stderr(&o));
    let sessions = env.layout().session_dir("family");
    fs::remove_dir_all(&sessions).unwrap();
    std::os::unix::fs::symlink("/etc", &sessions).unwrap();
    let err = mounts::group_mounts(&env.layout(), "family", (1000, 1000), &[]).unwrap_err();
    assert!(
        err.to_string().contains("refusing to follow symlinks"),
        "{err}"
    );
    env.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_hog_ends_as_oom() {
    let Some(env) = env("oom") else { return };
    let mut c = env.container(&["dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=1"]);
    c.limits.memory_bytes = 32 << 20;
    let o = env.run(env.spec(c)).await;
    assert_eq!(o.status, RunStatus::Oom, "stderr: {}", stderr(&o));
    assert!(o.oom_kills >= 1);
    env.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fork_bomb_hits_the_pids_limit_and_the_host_is_unharmed() {
    let Some(env) = env("forkbomb") else { return };
    let mut c = env.sh("f() { f | f & }; f; sleep 5");
    c.limits.pids = 32;
    let mut spec = env.spec(c);
    spec.timeout = Duration::from_secs(3);
    spec.grace = Duration::from_millis(200);
    let t0 = Instant::now();
    let o = env.run(spec).await;
    let err = stderr(&o);
    assert!(
        err.contains("can't fork") || err.contains("Resource temporarily unavailable"),
        "the pids limit stopped the bomb: {err}"
    );
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    // The host still forks fine.
    assert!(Command::new("true").status().unwrap().success());
    env.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sleeping_forever_times_out_within_timeout_plus_grace() {
    let Some(env) = env("timeout") else { return };
    let mut spec = env.spec(env.container(&["sleep", "1000"]));
    spec.timeout = Duration::from_secs(1);
    spec.grace = Duration::from_millis(500);
    let t0 = Instant::now();
    let o = env.run(spec).await;
    let took = t0.elapsed();
    assert_eq!(o.status, RunStatus::Timeout);
    // pid 1 ignores SIGTERM without a handler, so this also proves the SIGKILL escalation.
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(took < Duration::from_millis(1500 + 2500), "{took:?}");
    env.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn output_past_the_cap_is_truncated_with_a_marker() {
    let Some(env) = env("cap") else { return };
    let mut spec = env.spec(env.sh("yes | head -c 1000000; echo done >&2"));
    spec.output_cap = 10_000;
    let o = env.run(spec).await;
    assert_eq!(o.status, RunStatus::Exited(0));
    assert_eq!(o.stdout.bytes.len(), 10_000);
    assert_eq!(o.stdout.dropped, 990_000);
    assert!(
        o.stdout
            .text()
            .ends_with("[nanoclaw: output truncated, 990000 bytes dropped]\n")
    );
    assert!(!o.stderr.truncated());
    env.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identity_capabilities_seccomp_and_signals() {
    let Some(env) = env("identity") else { return };
    let o = env
        .run_sh(
            "id -u; id -g; grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp|SigIgn|SigBlk):' /proc/self/status; \
             unshare -U true; echo unshare-rc=$?; yes | head -1 >/dev/null; \
             echo fds=$(ls /proc/self/fd | tr '\\n' ' '); env | sed 's/^/env:/'; \
             echo pid=$$ host=$(hostname) procs=$(ls /proc | grep -c '^[0-9]'); \
             echo masked=$(wc -c < /proc/timer_list)",
        )
        .await;
    assert_eq!(o.status, RunStatus::Exited(0), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1000", "uid");
    assert_eq!(lines[1], "1000", "gid");
    let field = |name: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(str::trim)
            .unwrap_or_else(|| panic!("{name} missing: {out}"))
    };
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(field(cap), "0000000000000000", "{cap}");
    }
    assert_eq!(field("NoNewPrivs"), "1");
    assert_eq!(field("Seccomp"), "2", "filter mode");
    assert_eq!(
        field("SigIgn"),
        "0000000000000000",
        "no ignored signal leaked in"
    );
    assert_eq!(
        field("SigBlk"),
        "0000000000000000",
        "no blocked signal leaked in"
    );
    assert!(out.contains("unshare-rc=1"), "{out}");
    assert!(
        stderr(&o).contains("Operation not permitted"),
        "{}",
        stderr(&o)
    );
    assert!(
        !stderr(&o).contains("Broken pipe"),
        "SIGPIPE is default again"
    );

    // Control: the same binary, same uid, on the host without our filter, may unshare -U. So the
    // EPERM above came from the seccomp filter, not from missing privileges.
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let bb = dir.path().join("busybox");
    fs::copy(env.rootfs.join("bin/busybox"), &bb).unwrap();
    let status = Command::new(&bb)
        .args(["unshare", "-U", "true"])
        .uid(1000)
        .gid(1000)
        .status()
        .unwrap();
    if status.success() {
        eprintln!("control: uid 1000 may create user namespaces on this host");
    } else {
        panic!("control failed: uid 1000 cannot unshare -U on the host, so EPERM proves nothing");
    }
    env.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_loopback_in_the_run_network_namespace() {
    let Some(env) = env("netns") else { return };
    let o = env
        .run_sh("tail -n +3 /proc/net/dev | cut -d: -f1; nc -w 1 1.1.1.1 80 </dev/null; echo nc=$?")
        .await;
    assert_eq!(o.status, RunStatus::Exited(0), "{}", stderr(&o));
    let out = stdout(&o);
    let ifaces: Vec<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("nc="))
        .collect();
    assert_eq!(ifaces, vec!["lo"], "{out}");
    assert!(out.contains("nc=1"), "no route out: {out}");
    env.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_runs_sequential_and_concurrent_leave_nothing_behind() {
    let Some(env) = env("many") else { return };
    let t0 = Instant::now();
    for i in 0..50 {
        let o = env.run_sh(&format!("echo {i}")).await;
        assert_eq!(o.status, RunStatus::Exited(0), "run {i}: {}", stderr(&o));
        assert_eq!(stdout(&o), format!("{i}\n"));
    }
    let seq = t0.elapsed();
    env.assert_clean();
    let t1 = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..10 {
        let spec = env.spec(env.sh(&format!("sleep 0.2; echo {i}")));
        let handle = env.backend.start(spec).await.unwrap();
        tasks.push(tokio::spawn(async move { (i, handle.wait().await) }));
    }
    for t in tasks {
        let (i, o) = t.await.unwrap();
        assert_eq!(o.status, RunStatus::Exited(0), "run {i}: {}", stderr(&o));
        assert_eq!(stdout(&o), format!("{i}\n"));
    }
    eprintln!(
        "50 sequential runs: {seq:?}; 10 concurrent: {:?}",
        t1.elapsed()
    );
    env.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_spec_the_image_cannot_run_fails_to_start_cleanly() {
    let Some(env) = env("badexec") else { return };
    let o = env.run(env.spec(env.container(&["/no/such/binary"]))).await;
    match &o.status {
        RunStatus::FailedToStart(why) => assert!(why.contains("/no/such/binary"), "{why}"),
        other => panic!("{other:?}"),
    }
    // A missing mount point in the read-only image is refused before anything is created.
    let mut c = env.sh("true");
    c.mounts.push(nanoclaw::sandbox::BindMount {
        source: env.data.clone(),
        destination: "/not-in-image".into(),
        readonly: true,
    });
    let o = env.run(env.spec(c)).await;
    match &o.status {
        RunStatus::FailedToStart(why) => {
            assert!(why.contains("does not exist in the image"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    assert!(!env.rootfs.join("not-in-image").exists());
    env.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runtime_diagnostics_never_reach_the_workload_streams() {
    // The most verbose helper logging: libcontainer's own messages, emitted in the container's
    // init after its fd 2 became the workload's stderr, must still go to the host instead.
    let Some(env) = env_with("logs", |cfg| cfg.helper_log_filter = "trace".into()) else {
        return;
    };
    let o = env.run(env.spec(env.container(&["true"]))).await;
    assert_eq!(o.status, RunStatus::Exited(0));
    assert_eq!(
        stderr(&o),
        "",
        "libcontainer logs leaked into the workload's stderr"
    );
    assert_eq!(stdout(&o), "");
    env.assert_clean();
}

#[test]
fn a_cgroup_v2_host_without_the_memory_controller_refuses_to_run() {
    // On this hybrid layout the cgroup2 mount has no controllers; shown at /sys/fs/cgroup in a
    // private mount namespace it looks like a v2 kernel booted without `cgroup_enable=memory`.
    let unified = Path::new("/sys/fs/cgroup/unified");
    if nix::unistd::geteuid().as_raw() != 0 {
        eprintln!("skipping: needs root to build a private mount namespace");
        return;
    }
    let controllers = fs::read_to_string(unified.join("cgroup.controllers")).unwrap_or_default();
    if !unified.exists() || controllers.split_whitespace().any(|c| c == "memory") {
        eprintln!(
            "skipping: no controller-less cgroup2 mount at {} to stand in for a broken v2 host",
            unified.display()
        );
        return;
    }
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind /sys/fs/cgroup/unified /sys/fs/cgroup && exec "$0" bench sandbox --rootfs "$1" --runs 1"#)
        .arg(HELPER)
        .arg(test_rootfs())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "must refuse: {err}");
    assert!(err.contains("`memory` is not available (V2)"), "{err}");
    assert!(err.contains("cgroup_enable=memory"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runs_from_a_squashfs_image_mounted_read_only() {
    let Some(env) = env("squashfs") else { return };
    if Command::new("mksquashfs").arg("-version").output().is_err() {
        eprintln!("skipping squashfs: mksquashfs not installed (squashfs-tools)");
        return;
    }
    let work = env.data.parent().unwrap().to_path_buf();
    let image = work.join("runner.squashfs");
    let out = Command::new("mksquashfs")
        .arg(&env.rootfs)
        .arg(&image)
        .args(["-noappend", "-quiet", "-no-progress"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root = nanoclaw::sandbox::image::prepare(&image, &work.join("mnt")).unwrap();
    assert!(root.mounted.is_some());
    let mut c = env.sh("cat /etc/nanoclaw-marker; touch /x; echo rc=$?");
    c.rootfs = root.root.clone();
    let o = env.run(env.spec(c)).await;
    let backing = loop_backing_files();
    root.unmount().unwrap();
    assert_eq!(o.status, RunStatus::Exited(0), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("inside-the-image\n"),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("rc=1"));
    assert!(backing.iter().any(|b| b == &image), "{backing:?}");
    // Preparing again over a stale mount replaces it rather than stacking.
    let again = nanoclaw::sandbox::image::prepare(&image, &work.join("mnt")).unwrap();
    let again2 = nanoclaw::sandbox::image::prepare(&image, &work.join("mnt")).unwrap();
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let target = again2.root.to_string_lossy().into_owned();
    assert_eq!(
        mounts
            .lines()
            .filter(|l| l.split_whitespace().nth(4) == Some(target.as_str()))
            .count(),
        1
    );
    again.unmount().unwrap();
    // Autoclear: the loop device went away with the mount.
    wait_until("loop device detached", Duration::from_secs(5), || {
        !loop_backing_files().contains(&image)
    });
    env.assert_clean();
}

fn loop_backing_files() -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| fs::read_to_string(e.path().join("loop/backing_file")).ok())
        .map(|s| PathBuf::from(s.trim()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicate_run_ids_are_refused_and_stop_requests_work() {
    let Some(env) = env("dup") else { return };
    let spec = env.spec(env.container(&["sleep", "1000"]));
    let id = spec.run_id.clone();
    let mut first = env.backend.start(spec.clone()).await.unwrap();
    assert!(matches!(first.next_event().await, Some(RunEvent::Started)));
    let pids = run_pids(&env, &id);
    assert!(!pids.is_empty());

    // Same id while the first is live: refused, and the live run's cgroup is not touched.
    let o = env.run(spec).await;
    match &o.status {
        RunStatus::FailedToStart(why) => assert!(why.contains("run id in use"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(run_pids(&env, &id), pids, "the live run is intact");

    // A graceful stop from elsewhere: sleep as pid 1 ignores SIGTERM, so it ends by SIGKILL.
    first.kill_switch().terminate();
    let o = first.wait().await;
    assert_eq!(o.status, RunStatus::Killed(libc::SIGKILL));
    assert!(o.stop_requested);

    // Dropping a handle mid-run kills the run; its supervisor still cleans up.
    let handle = env
        .backend
        .start(env.spec(env.container(&["sleep", "1000"])))
        .await
        .unwrap();
    drop(handle);
    wait_until("dropped run cleaned up", Duration::from_secs(10), || {
        env.backend.live_runs() == 0
    });
    env.assert_clean();
}

/// Talks to a helper directly, as a host would, so the test can crash the "host".
struct RawHelper {
    child: std::process::Child,
    control: BufReader<UnixStream>,
}

impl RawHelper {
    fn spawn(env: &Env, run_id: &str, container: ContainerSpec) -> Self {
        Self::spawn_with(env, run_id, container, b"")
    }

    /// `trailer` is written in the same `write` as the request line.
    fn spawn_with(env: &Env, run_id: &str, container: ContainerSpec, trailer: &[u8]) -> Self {
        let cfg = env.backend.config();
        let (ours, theirs) = UnixStream::pair().unwrap();
        let fd = theirs.as_raw_fd();
        let mut cmd = Command::new(HELPER);
        cmd.arg("sandbox-exec")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // SAFETY: dup2 only, between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        drop(theirs);
        let req = Request::Run(Box::new(RunRequest {
            run_id: run_id.into(),
            state_root: cfg.state_root.clone(),
            cgroup_parent: cfg.cgroup_parent.clone(),
            cgroup_root: cfg.cgroup_root.clone(),
            container,
            log_filter: "warn".into(),
        }));
        let mut line = serde_json::to_vec(&req).unwrap();
        line.push(b'\n');
        line.extend_from_slice(trailer);
        (&ours).write_all(&line).unwrap();
        ours.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Self {
            child,
            control: BufReader::new(ours),
        }
    }

    fn wait_for(&mut self, want: fn(&Event) -> bool) -> Event {
        loop {
            let mut line = String::new();
            let n = self.control.read_line(&mut line).unwrap();
            assert!(n > 0, "helper closed the socket");
            let ev: Event = serde_json::from_str(&line).unwrap();
            if want(&ev) {
                return ev;
            }
            assert!(!matches!(ev, Event::Failed { .. }), "{ev:?}");
        }
    }
}

fn run_pids(env: &Env, run_id: &str) -> Vec<i32> {
    let path = format!("/{}/{run_id}", env.backend.config().cgroup_parent);
    let dirs = env.backend.cgroup_host().run_dirs(&path);
    let mut pids: Vec<i32> = dirs
        .iter()
        .filter_map(|d| fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|t| {
            t.lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<_>>()
        })
        .collect();
    pids.sort();
    pids.dedup();
    pids
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stop_commands_work_even_when_early_or_when_runtime_state_is_gone() {
    let Some(env) = env("stop") else { return };
    // A kill sent before the run even started (read together with the request) is obeyed.
    let run_a = format!("stop-a-{}", std::process::id());
    let mut h = RawHelper::spawn_with(
        &env,
        &run_a,
        env.container(&["sleep", "1000"]),
        b"{\"cmd\":\"kill\"}\n",
    );
    let t0 = Instant::now();
    let ev = h.wait_for(|e| matches!(e, Event::Exited { .. }));
    assert!(
        matches!(
            ev,
            Event::Exited {
                exit: ProcessExit::Signal(9),
                cleanup_error: None,
                ..
            }
        ),
        "{ev:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert!(h.child.wait().unwrap().success());

    // libcontainer's state vanishes under a live run (an operator wiped /run): a kill still
    // reaches every process of the run.
    let run_b = format!("stop-b-{}", std::process::id());
    let mut h = RawHelper::spawn(&env, &run_b, env.container(&["sleep", "1000"]));
    h.wait_for(|e| matches!(e, Event::Started));
    let pids = run_pids(&env, &run_b);
    fs::remove_dir_all(env.backend.config().state_root.join(&run_b).join("lc")).unwrap();
    h.control
        .get_mut()
        .write_all(b"{\"cmd\":\"kill\"}\n")
        .unwrap();
    let ev = h.wait_for(|e| matches!(e, Event::Exited { .. }));
    assert!(
        matches!(
            ev,
            Event::Exited {
                exit: ProcessExit::Signal(9),
                ..
            }
        ),
        "{ev:?}"
    );
    assert!(h.child.wait().unwrap().success());
    wait_until("run gone", Duration::from_secs(5), || {
        pids.iter().all(|p| !is_alive(*p))
    });
    env.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn host_death_is_cleaned_by_the_helper_and_a_crash_by_the_next_start() {
    let Some(env) = env("orphan") else { return };
    let state = env.backend.config().state_root.clone();

    // 1. The host dies (its end of the socket closes); the helper is still there and cleans up.
    let run_a = format!("orphan-a-{}", std::process::id());
    let mut h = RawHelper::spawn(&env, &run_a, env.container(&["sleep", "1000"]));
    h.wait_for(|e| matches!(e, Event::Started));
    let pids = run_pids(&env, &run_a);
    assert!(!pids.is_empty());
    let RawHelper { mut child, control } = h;
    drop(control);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!state.join(&run_a).exists(), "the helper removed its state");
    wait_until("workload gone", Duration::from_secs(5), || {
        pids.iter().all(|p| !is_alive(*p))
    });

    // 2. Host and helper die together (SIGKILL, as for a crashed service): the workload runs on
    //    as an orphan with its state and cgroup...
    let run_b = format!("orphan-b-{}", std::process::id());
    let mut h = RawHelper::spawn(&env, &run_b, env.container(&["sleep", "1000"]));
    h.wait_for(|e| matches!(e, Event::Started));
    let pids = run_pids(&env, &run_b);
    assert!(!pids.is_empty());
    h.child.kill().unwrap();
    h.child.wait().unwrap();
    drop(h);
    std::thread::sleep(Duration::from_millis(200));
    assert!(pids.iter().any(|p| is_alive(*p)), "orphan still running");
    assert!(state.join(&run_b).exists(), "orphan state left");

    // ...until the next start's sweep removes it.
    let next = LibcontainerBackend::new(env.backend.config().clone()).unwrap();
    let report = next.cleanup_orphans().await.unwrap();
    assert_eq!(report.removed, vec![run_b.clone()], "{report:?}");
    assert!(report.errors.is_empty(), "{report:?}");
    wait_until("orphan gone", Duration::from_secs(5), || {
        pids.iter().all(|p| !is_alive(*p))
    });
    assert!(run_pids(&env, &run_b).is_empty());
    let again = next.cleanup_orphans().await.unwrap();
    assert!(again.removed.is_empty(), "{again:?}");
    env.assert_clean();
}
