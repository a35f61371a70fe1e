//! `nanoclaw-runner` in a real container (root; CI runs as root): the runner image from
//! `runner-rootfs/build.sh`, mounted read-only, run through the libcontainer sandbox with the
//! group's mounts, talking over the run's network namespace to the fake Messages API. One full turn
//! with a tool call. Elsewhere it skips with the reason printed.

#[path = "support/e2e.rs"]
mod e2e;
#[path = "support/sandbox.rs"]
mod sandbox_support;

use std::path::PathBuf;
use std::time::Duration;

use e2e::{NamedNetns, no_image, runner_image};
use nanoclaw::core::wire::FrameStatus;
use nanoclaw::runner::testing::Step;
use nanoclaw::sandbox::mounts::{self, DataLayout};
use nanoclaw::sandbox::spec::NetworkMode;
use nanoclaw::sandbox::{
    Backend, ContainerSpec, LibcontainerConfig, RunEvent, RunSpec, RunStatus, SandboxError, image,
};
use sandbox_support::{CgroupParent, HELPER, Sandbox, can_run_containers};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_turn_with_a_tool_call_in_a_real_container() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "nanoclaw=debug".into()))
        .with_test_writer()
        .try_init();
    let Some(sb) = Sandbox::new("runner_container") else {
        return;
    };
    let Some(image_path) = runner_image() else {
        eprintln!("skipping runner_container: {}", no_image());
        return;
    };
    let (base, backend) = (&sb.base, &sb.backend);
    let netns = match NamedNetns::try_new(&format!("ncrun-{}", std::process::id())) {
        Ok(ns) => ns,
        Err(e) => {
            eprintln!("skipping runner_container: cannot create a network namespace: {e}");
            return;
        }
    };
    let root = image::prepare(&image_path, &base.join("root")).unwrap();
    eprintln!(
        "runner_container: image {} mounted at {}",
        image_path.display(),
        root.root.display()
    );

    let script = "id -u; touch /usr/bin/x 2>/dev/null || echo rootfs-read-only; \
        awk '$2==\"/\" {print \"root-opts=\" $4}' /proc/mounts; grep CapEff /proc/self/status; \
        env | grep -c -e ANTHROPIC_API_KEY -e run-token-xyz; echo from-the-run > /workspace/group/out.txt";
    let api = netns.fake_api(vec![
        Step::tool("bash", json!({"command": script})),
        Step::text("done"),
    ]);
    let layout = DataLayout {
        data_dir: base.join("data"),
    };
    std::fs::create_dir_all(layout.group_dir("family")).unwrap();
    std::fs::write(
        layout.group_dir("family").join("CLAUDE.md"),
        "Family memory: likes tea.",
    )
    .unwrap();
    let mut container =
        ContainerSpec::new(root.root.clone(), vec!["/usr/bin/nanoclaw-runner".into()]);
    container.mounts = mounts::group_mounts(&layout, "family", (1000, 1000), &[]).unwrap();
    container.env = vec![
        ("ANTHROPIC_BASE_URL".into(), api.url()),
        ("ANTHROPIC_API_KEY".into(), "run-token-xyz".into()),
        ("NANOCLAW_POLL_MS".into(), "50".into()),
    ];
    container.network = NetworkMode::Join(netns.path());
    let mut spec = RunSpec::new(format!("runner-{}", std::process::id()), container);
    spec.timeout = Duration::from_secs(60);
    spec.input = json!({"prompt": "<messages>hi</messages>", "groupFolder": "family", "chatJid": "120363001@g.us", "isMain": false})
        .to_string()
        .into_bytes();

    let mut handle = backend.start(spec).await.unwrap();
    eprintln!("runner_container: run started; fake API at {}", api.url());
    let mut frames = Vec::new();
    let outcome = loop {
        match handle.next_event().await {
            Some(RunEvent::Frame(f)) => {
                eprintln!("runner_container: frame {f:?}");
                if f.result.is_none() && f.status == FrameStatus::Success {
                    // Idle after the turn: close the run as the host does (contract §5.14).
                    std::fs::write(layout.ipc_dir("family").join("input/_close"), b"").unwrap();
                }
                frames.push(f);
            }
            Some(RunEvent::Finished(o)) => break o,
            Some(_) => {}
            None => panic!("run ended without an outcome"),
        }
    };
    let _ = root.unmount();
    let stderr = String::from_utf8_lossy(&outcome.stderr.bytes).into_owned();
    assert_eq!(outcome.status, RunStatus::Exited(0), "{stderr}");
    assert_eq!(frames.len(), 2, "{frames:?}\n{stderr}");
    assert_eq!(frames[0].result, Some(Value::String("done".into())));
    assert_eq!(frames[1].result, None);
    let reqs = api.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].header("x-api-key"), Some("run-token-xyz"));
    assert!(
        reqs[0].body["system"]
            .as_str()
            .unwrap()
            .contains("Family memory: likes tea.")
    );
    let (_, out, is_error) = reqs[1].tool_results().remove(0);
    assert!(!is_error, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1000", "{out}");
    assert_eq!(lines[1], "rootfs-read-only", "{out}");
    assert!(lines[2].starts_with("root-opts=ro"), "{out}");
    assert_eq!(lines[3], "CapEff:\t0000000000000000", "{out}");
    // Neither a credential nor even the run's gateway token reaches the agent's shell.
    assert_eq!(lines[4], "0", "{out}");
    assert_eq!(
        std::fs::read_to_string(layout.group_dir("family").join("out.txt")).unwrap(),
        "from-the-run\n"
    );
}

/// `nanoclaw bench runner --image`: real container runs, each in its own netns, with figures that
/// come from those runs (a request per run, the run cgroup's peak memory) and nothing left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_container_benchmark_measures_real_container_runs() {
    if !can_run_containers("runner container benchmark") {
        return;
    }
    let Some(image_path) = runner_image() else {
        eprintln!("skipping runner container benchmark: {}", no_image());
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().canonicalize().unwrap();
    let cgroup_parent = CgroupParent::new("bench");
    let opts = nanoclaw::runner::bench::ContainerBench {
        image: image_path,
        runs: 2,
        backend: LibcontainerConfig {
            helper_exe: PathBuf::from(HELPER),
            state_root: base.join("state"),
            cgroup_parent: cgroup_parent.0.clone(),
            ..Default::default()
        },
        work_dir: base.join("work"),
        subnet: "10.231.7.0/24".parse().unwrap(),
    };
    let report = match nanoclaw::runner::bench::bench_runner_in_container(&opts).await {
        Ok(r) => r,
        Err(nanoclaw::runner::bench::BenchError::Sandbox(SandboxError::Cgroup(e))) => {
            eprintln!(
                "skipping runner container benchmark: this host cannot enforce run limits: {e}"
            );
            return;
        }
        Err(e) => panic!("{e}"),
    };
    eprintln!("{report}");
    assert_eq!(report.first_request.len(), 2);
    assert!(
        report
            .first_request
            .iter()
            .zip(&report.total)
            .all(|(f, t)| f < t)
    );
    // The cgroup's peak: at least the runner's own pages, far below the original's ~400 MiB tree.
    assert!(
        report
            .peak_rss_kib
            .iter()
            .all(|&k| k > 256 && k < 200 * 1024),
        "{report}"
    );
    assert!(report.to_string().contains("in a container"), "{report}");
    assert!(!base.join("work").exists(), "work dir removed");
    let left: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("ncbn"))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "netns left: {left:?}");
}
