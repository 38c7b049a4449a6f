//! Benchmarks of Herd against the local stack. The scripts in
//! `deploy/bench/` start a throwaway stack, build the binaries and run a
//! `herd-bench` subcommand in it; the results go to `docs/benchmarks.md`,
//! never into a timed test.

mod backup;
mod baseline;
mod cluster;
mod herd;
mod installation;
mod machine;
mod migration;
mod portability;
mod tenant;
mod upgrade;

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
    /// For each size, exports an instance filled with a fixture of about that
    /// size, backs it up with `pg_dump` and `aws s3 cp` for comparison,
    /// imports the archive again, and prints the results as JSON, one object
    /// per size. Needs `aws` on PATH.
    Portability(PortabilityArgs),
    /// Orders N instances on one version and upgrades them all to the next
    /// with one fleet upgrade, then applies N instances with the kubectl loop
    /// and upgrades them with an operator's kubectl script, a wave's worth at
    /// a time, and prints both results as JSON.
    Upgrade(UpgradeArgs),
    /// For each size, moves an instance filled with a fixture of about that
    /// size to the other cluster and database server by hand (suspend,
    /// `pg_dump | pg_restore`, `aws s3 sync`, resume), then with Herd, and
    /// prints both write freezes as JSON, one object per size. Needs `aws`
    /// on PATH and the stack's second cluster.
    Migration(MigrationArgs),
}

/// The Herd installation the benchmarks set up on the stack.
#[derive(Debug, clap::Args)]
pub struct InstallationArgs {
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
    /// Where Herd's logs, its scratch files and the baselines' files are
    /// written.
    #[arg(long)]
    work_dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct ProvisionArgs {
    #[command(flatten)]
    installation: InstallationArgs,
    /// How many instances to provision, both ways.
    #[arg(long)]
    instances: usize,
    /// Orders in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrent_orders: usize,
    /// Each half of the run gives up after this long.
    #[arg(long, default_value_t = 3600)]
    deadline_seconds: u64,
}

#[derive(Debug, clap::Args)]
pub struct PortabilityArgs {
    #[command(flatten)]
    installation: InstallationArgs,
    /// The tenant sizes to measure, in MiB of database and exported media.
    #[arg(long, value_delimiter = ',', required = true)]
    sizes_mb: Vec<u64>,
    /// The fixture's seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Each operation (provisioning, export, deletion, import) gives up
    /// after this long.
    #[arg(long, default_value_t = 3600)]
    deadline_seconds: u64,
}

#[derive(Debug, clap::Args)]
pub struct UpgradeArgs {
    #[command(flatten)]
    installation: InstallationArgs,
    /// How many instances to upgrade, both ways.
    #[arg(long)]
    instances: usize,
    #[arg(long, default_value = "4.4.8")]
    from: String,
    #[arg(long, default_value = "4.5.2")]
    to: String,
    /// Instances upgraded alone first.
    #[arg(long, default_value_t = 10)]
    canary: u32,
    /// Instances per wave, and the script's instances at a time.
    #[arg(long, default_value_t = 100)]
    wave_size: u32,
    /// Each half of the run gives up after this long.
    #[arg(long, default_value_t = 3600)]
    deadline_seconds: u64,
}

#[derive(Debug, clap::Args)]
pub struct MigrationArgs {
    #[command(flatten)]
    installation: InstallationArgs,
    /// The tenant sizes to measure, in MiB of database and media.
    #[arg(long, value_delimiter = ',', required = true)]
    sizes_mb: Vec<u64>,
    /// The fixture's seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Each operation gives up after this long.
    #[arg(long, default_value_t = 3600)]
    deadline_seconds: u64,
    /// Moves the media too: the stack's second Garage is registered as the
    /// object store of this name and Herd's move goes there, while the
    /// manual move copies the media to it through a local directory.
    #[arg(long)]
    object_store: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Provision(args) => provision(&args).await,
        Command::Portability(args) => portability::run(&args).await,
        Command::Upgrade(args) => upgrade::run(&args).await,
        Command::Migration(args) => migration::run(&args).await,
    }
}

async fn provision(args: &ProvisionArgs) -> anyhow::Result<()> {
    let deadline = Duration::from_secs(args.deadline_seconds);

    let herd = herd::run(args, deadline).await?;
    let fleet: Vec<_> = (0..args.instances)
        .map(|index| baseline::instance(index, &herd_core::version::DEFAULT_VERSION.to_string()))
        .collect();
    let baseline = baseline::run(&args.installation.work_dir, &fleet, 1, deadline).await?;
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
        "herd": herd.json(args),
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

/// `bytes` per second, in MiB.
pub fn mib_per_second(bytes: u64, seconds: f64) -> f64 {
    round(bytes as f64 / (1u64 << 20) as f64 / seconds)
}
