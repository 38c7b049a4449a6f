//! The comparison for exports: the backup an operator makes by hand,
//! `pg_dump -Fc` of the tenant database and a copy of its bucket with the
//! AWS command line, then one tar of both.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::process::Command;

use crate::installation::stack;
use crate::round;
use crate::tenant::{REMOTE_CACHE_PREFIX, Tenant};

pub struct BackupResult {
    pub seconds: f64,
    dump_seconds: f64,
    copy_seconds: f64,
    tar_seconds: f64,
    dump_bytes: u64,
    tar_bytes: u64,
}

impl BackupResult {
    pub fn json(&self, carried_bytes: u64) -> Value {
        json!({
            "commands": [
                "pg_dump -Fc --file=DIR/database.dump",
                format!("aws s3 cp --recursive --exclude '{REMOTE_CACHE_PREFIX}*' s3://BUCKET DIR/system"),
                "tar cf DIR.tar -C DIR database.dump system",
            ],
            "seconds": round(self.seconds),
            "pg_dump_seconds": round(self.dump_seconds),
            "s3_copy_seconds": round(self.copy_seconds),
            "tar_seconds": round(self.tar_seconds),
            "dump_bytes": self.dump_bytes,
            "tar_bytes": self.tar_bytes,
            "throughput_mib_per_second": crate::mib_per_second(carried_bytes, self.seconds),
        })
    }
}

pub async fn run_timed(what: &str, command: &mut Command) -> anyhow::Result<f64> {
    let started = Instant::now();
    let output = command
        .output()
        .await
        .with_context(|| format!("running {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(started.elapsed().as_secs_f64())
}

/// The `aws` command with the tenant's key and the stack's endpoint, from
/// a config file of its own rather than the user's.
pub fn aws(tenant: &Tenant, dir: &Path) -> anyhow::Result<Command> {
    aws_on(tenant, dir, "")
}

/// `aws` on the stack's Garage whose settings end in `suffix` (`_2` for the
/// second one), with the tenant's key.
pub fn aws_on(tenant: &Tenant, dir: &Path, suffix: &str) -> anyhow::Result<Command> {
    let config = dir.join(format!("aws{suffix}.config"));
    // Garage serves buckets by path only, not as host names.
    std::fs::write(
        &config,
        format!(
            "[default]\nregion = {}\ns3 =\n    addressing_style = path\n",
            stack(&format!("HERD_S3_REGION{suffix}"))?
        ),
    )?;
    let mut command = Command::new("aws");
    command
        .env("AWS_CONFIG_FILE", config)
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_ACCESS_KEY_ID", &tenant.key.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &tenant.key.secret_access_key)
        .args([
            "--endpoint-url",
            &stack(&format!("HERD_S3_ENDPOINT{suffix}"))?,
        ]);
    Ok(command)
}

/// Backs the tenant up into `dir.tar`, one step after the other as a
/// backup script does, and removes everything it wrote.
pub async fn run(tenant: &Tenant, dir: &Path) -> anyhow::Result<BackupResult> {
    std::fs::create_dir_all(dir)?;
    let dump = dir.join("database.dump");
    let credentials = &tenant.credentials;
    let mut pg_dump = Command::new("pg_dump");
    pg_dump
        .env("PGHOST", &credentials.host)
        .env("PGPORT", credentials.port.to_string())
        .env("PGUSER", &credentials.role)
        .env("PGPASSWORD", credentials.password.expose_secret())
        .env("PGDATABASE", &credentials.database)
        .arg("-Fc")
        .arg(format!("--file={}", dump.display()));
    let mut copy = aws(tenant, dir)?;
    copy.args(["s3", "cp", "--recursive", "--only-show-errors", "--exclude"])
        .arg(format!("{REMOTE_CACHE_PREFIX}*"))
        .arg(format!("s3://{}", tenant.bucket))
        .arg(dir.join("system"));
    let tar_path = dir.with_extension("tar");
    let mut tar = Command::new("tar");
    tar.arg("cf")
        .arg(&tar_path)
        .arg("-C")
        .arg(dir)
        .args(["database.dump", "system"]);

    let dump_seconds = run_timed("pg_dump", &mut pg_dump).await?;
    let copy_seconds = run_timed("aws s3 cp", &mut copy).await?;
    let tar_seconds = run_timed("tar", &mut tar).await?;
    let result = BackupResult {
        seconds: dump_seconds + copy_seconds + tar_seconds,
        dump_seconds,
        copy_seconds,
        tar_seconds,
        dump_bytes: std::fs::metadata(&dump)?.len(),
        tar_bytes: std::fs::metadata(&tar_path)?.len(),
    };
    std::fs::remove_dir_all(dir)?;
    std::fs::remove_file(&tar_path)?;
    Ok(result)
}

/// `pg_dump` and `aws` as they report themselves.
pub async fn versions() -> anyhow::Result<Value> {
    let version = |program: &'static str| async move {
        let output = Command::new(program)
            .arg("--version")
            .output()
            .await
            .with_context(|| format!("running {program} (is it on PATH?)"))?;
        // aws 1.x prints its version on stderr.
        let text = [output.stdout, output.stderr].concat();
        anyhow::Ok(String::from_utf8_lossy(&text).trim().to_owned())
    };
    Ok(json!({
        "pg_dump": version("pg_dump").await?,
        "aws": version("aws").await?,
    }))
}
