use std::ffi::OsStr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// nanoclaw: an embedded-first personal-assistant host.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print performance figures (no pass/fail).
    Bench {
        #[command(subcommand)]
        what: BenchCmd,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Sandbox create+start and lifecycle latency, beside `crun run` if installed.
    Sandbox {
        /// Read-only image to run `/bin/true` from (e.g. target/test-rootfs).
        #[arg(long)]
        rootfs: PathBuf,
        /// Runs per variant.
        #[arg(long, default_value_t = 50)]
        runs: usize,
        /// crun binary to compare with.
        #[arg(long, default_value = "/usr/bin/crun")]
        crun: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    // The sandbox helper must start before anything spawns a thread (libcontainer clones the
    // calling process), so it is dispatched ahead of argument parsing and any runtime.
    if std::env::args_os().nth(1).as_deref()
        == Some(OsStr::new(nanoclaw::sandbox::HELPER_SUBCOMMAND))
    {
        std::process::exit(nanoclaw::sandbox::helper::main());
    }
    let cli = Cli::parse();
    match cli.command {
        Cmd::Bench {
            what: BenchCmd::Sandbox { rootfs, runs, crun },
        } => {
            let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
            let opts = nanoclaw::sandbox::bench::BenchOptions {
                runs,
                rootfs,
                backend: Default::default(),
                crun: Some(crun),
            };
            let report = rt.block_on(nanoclaw::sandbox::bench::run(&opts))?;
            print!("{report}");
        }
    }
    Ok(())
}
