//! The QEMU suite's model API (`qemu-tests/run.sh` starts it on the build machine; the guest reaches
//! it at 10.0.2.2 through QEMU user networking). A test program, never part of the product binaries.
//!
//!     fake_api --key-file FILE [--serve NAME=SCRIPT.json]... [--canary] [--max-secs N]
//!
//! Each `--serve` starts one `runner::testing::FakeApi` on 127.0.0.1:<free port> replaying its script
//! and answering any request without the real key (from `--key-file`) with a 401, so a pass proves the
//! guest's gateway swapped the run token for the credential. A script is a JSON array of steps,
//! `{"text": "..."}` or `{"tool": "bash", "input": {...}}`; `@CANARY_PORT@` in it is replaced by the
//! canary's port. `--canary` also listens on a plain TCP port that answers `canary-ok` to anyone:
//! the egress scenario proves that a run cannot reach it while the guest itself can.
//!
//! Stdout, one event a line (run.sh parses it): `listening NAME PORT`, `ready`, then
//! `request NAME key=ok|wrong n=N user=<text>`, `tool_result NAME error=BOOL <content>`,
//! `canary-hit <first line the client sent>`, and at the end `summary NAME requests=N wrong_key=K
//! remaining=R`. It ends when stdin closes, on SIGTERM (run.sh's trap) or after `--max-secs`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nanoclaw::runner::testing::{FakeApi, Step};
use serde_json::Value;

/// Longest line of request or tool text echoed to stdout.
const ECHO_CHARS: usize = 300;

fn main() -> anyhow::Result<()> {
    let mut key_file: Option<PathBuf> = None;
    let mut serve: Vec<(String, PathBuf)> = Vec::new();
    let mut canary = false;
    let mut max_secs: u64 = 1800;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--key-file" => key_file = Some(args.next().context("--key-file FILE")?.into()),
            "--serve" => {
                let v = args.next().context("--serve NAME=SCRIPT")?;
                let (name, path) = v.split_once('=').context("--serve NAME=SCRIPT")?;
                serve.push((name.to_string(), path.into()));
            }
            "--canary" => canary = true,
            "--max-secs" => max_secs = args.next().context("--max-secs N")?.parse()?,
            other => {
                bail!("unknown argument {other} (see the doc comment of examples/fake_api.rs)")
            }
        }
    }
    let key_file = key_file.context("--key-file is required")?;
    let key = std::fs::read_to_string(&key_file)
        .with_context(|| format!("reading {}", key_file.display()))?
        .trim()
        .to_string();
    if key.is_empty() {
        bail!("{} is empty", key_file.display());
    }

    let (events, lines) = mpsc::channel::<String>();
    let mut canary_port = 0;
    if canary {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        canary_port = listener.local_addr()?.port();
        let events = events.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let events = events.clone();
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(3)));
                    let mut first = String::new();
                    let mut reader = BufReader::new((&conn).take(4096));
                    let _ = reader.read_line(&mut first);
                    let _ = (&conn).write_all(b"canary-ok\n");
                    let _ = events.send(format!("canary-hit {}", one_line(&first)));
                });
            }
        });
    }

    let mut apis = Vec::new();
    for (name, path) in &serve {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading {}", path.display()))?
            .replace("@CANARY_PORT@", &canary_port.to_string());
        let steps = parse_script(&text).with_context(|| format!("script {}", path.display()))?;
        let api = FakeApi::start(steps)?;
        api.require_api_key(&key);
        println!("listening {name} {}", api.addr().port());
        apis.push((name.clone(), api, 0usize));
    }
    if canary {
        println!("listening canary {canary_port}");
    }
    println!("ready");
    std::io::stdout().flush()?;

    // Stdin closing (run.sh gone) ends the program as surely as the deadline does.
    let (eof_tx, eof_rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        let _ = eof_tx.send(());
    });
    let deadline = Instant::now() + Duration::from_secs(max_secs);
    let mut out = std::io::stdout();
    loop {
        while let Ok(line) = lines.try_recv() {
            writeln!(out, "{line}")?;
        }
        for (name, api, seen) in &mut apis {
            let reqs = api.requests();
            for r in reqs.iter().skip(*seen) {
                let ok = r.header("x-api-key") == Some(key.as_str());
                writeln!(
                    out,
                    "request {name} key={} n={} user={}",
                    if ok { "ok" } else { "wrong" },
                    r.messages().len(),
                    one_line(&r.last_user_text())
                )?;
                for (_, content, is_error) in r.tool_results() {
                    writeln!(
                        out,
                        "tool_result {name} error={is_error} {}",
                        one_line(&content)
                    )?;
                }
            }
            *seen = reqs.len();
        }
        out.flush()?;
        if Instant::now() >= deadline || eof_rx.try_recv().is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for (name, api, _) in &apis {
        let reqs = api.requests();
        let wrong = reqs
            .iter()
            .filter(|r| r.header("x-api-key") != Some(key.as_str()))
            .count();
        writeln!(
            out,
            "summary {name} requests={} wrong_key={wrong} remaining={}",
            reqs.len(),
            api.remaining()
        )?;
    }
    Ok(())
}

fn parse_script(text: &str) -> anyhow::Result<Vec<Step>> {
    let v: Value = serde_json::from_str(text)?;
    let Some(items) = v.as_array() else {
        bail!("a script is a JSON array of steps");
    };
    items
        .iter()
        .map(|s| {
            if let Some(t) = s["text"].as_str() {
                Ok(Step::text(t))
            } else if let Some(tool) = s["tool"].as_str() {
                Ok(Step::tool(tool, s["input"].clone()))
            } else {
                bail!("step {s}: want {{\"text\": ...}} or {{\"tool\": ..., \"input\": ...}}")
            }
        })
        .collect()
}

/// Text on one line, bounded, for the event log.
fn one_line(s: &str) -> String {
    s.trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(ECHO_CHARS)
        .collect()
}
