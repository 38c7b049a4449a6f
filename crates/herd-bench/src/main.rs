//! Benchmarks of Herd against the local stack. `deploy/bench/provision.sh`
//! starts a throwaway stack, builds the binaries and runs `herd-bench
//! provision` in it; the results go to `docs/benchmarks.md`, never into a
//! timed test.

mod baseline;
mod cluster;
mod herd;
mod machine;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::json;

#[derive(Debug, Parser)]
#[command(name = "herd-bench", about = "Benchmarks Herd against the local stack")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Provisions N instances through Herd's API, then the same N as a
    /// `kubectl apply --server-side` loop, and prints both results as JSON.
    /// Reads the stack's settings from the environment (`source STATE/env`).
    Provision(ProvisionArgs),
}

#[derive(Debug, clap::Args)]
pub struct ProvisionArgs {
    /// How many instances to provision, both ways.
    #[arg(long)]
    instances: usize,
    /// The `herd` binary to measure (a release build).
    #[arg(long)]
    herd: PathBuf,
    /// Job workers of `herd serve`. Waiting for the cluster does not hold
    /// one, so a few more than the data services take at once are plenty.
    #[arg(long, default_value_t = 16)]
    workers: u32,
    /// Database connections of `herd serve`.
    #[arg(long, default_value_t = 32)]
    database_connections: u32,
    /// Orders in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrent_orders: usize,
    /// Where Herd's log and the baseline's manifests are written.
    #[arg(long)]
    work_dir: PathBuf,
    /// Each half of the run gives up after this long.
    #[arg(long, default_value_t = 3600)]
    deadline_seconds: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Command::Provision(args) = Cli::parse().command;
    let deadline = Duration::from_secs(args.deadline_seconds);
    std::fs::create_dir_all(&args.work_dir)?;

    let herd = herd::run(&args, deadline).await?;
    let baseline = baseline::run(&args, deadline).await?;
    let speedup = herd.instances_per_second / baseline.instances_per_second;
    let report = json!({
        "benchmark": "provision",
        "instances": args.instances,
        "machine": machine::facts(),
        "versions": {
            "herd": herd.version,
            "kubernetes": cluster::server_version().await?,
            "kubectl": cluster::client_version().await?,
            "dependencies": herd.dependencies,
        },
        "herd": herd.json(&args),
        "kubectl_loop": baseline.json(),
        "speedup": round(speedup),
        "targets": {
            "all_ready_within_300_s": herd.seconds < 300.0,
            "at_least_5x_the_kubectl_loop": speedup >= 5.0,
            "peak_rss_under_300_mb": herd.peak_rss_mib < 300.0,
        },
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// Two decimals are plenty for seconds and rates measured once.
pub fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}
