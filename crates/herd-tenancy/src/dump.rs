//! A tenant database in and out as a `pg_dump` custom-format archive, the
//! format Mastodon's own backup documentation uses.
//!
//! Both directions connect as the tenant's own role. A restore in particular
//! never runs as a superuser: a dump from another host is untrusted input and
//! may hold any SQL, so whatever it tries is limited to what the tenant role
//! may do in its own database.

use std::path::Path;
use std::process::Stdio;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::Command;

use crate::{TenancyError, TenantCredentials};

/// The PostgreSQL client programs, found on `PATH`.
#[derive(Debug, Clone)]
pub struct PgTools {
    pg_dump: String,
    pg_restore: String,
}

impl Default for PgTools {
    fn default() -> Self {
        PgTools {
            pg_dump: "pg_dump".into(),
            pg_restore: "pg_restore".into(),
        }
    }
}

/// What `pg_restore` did with an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    /// Statements the tenant role was refused; each left the database unchanged.
    pub refused: Vec<String>,
}

impl PgTools {
    fn command(&self, program: &str, credentials: &TenantCredentials) -> Command {
        let mut command = Command::new(program);
        // Through the environment rather than arguments, which every local user can read.
        command
            .env("PGHOST", &credentials.host)
            .env("PGPORT", credentials.port.to_string())
            .env("PGUSER", &credentials.role)
            .env("PGPASSWORD", credentials.password.expose_secret())
            .env("PGDATABASE", &credentials.database)
            .env("PGCONNECT_TIMEOUT", "10")
            .kill_on_drop(true);
        command
    }

    /// Streams a consistent dump (one snapshot for the whole database) of the
    /// tenant's `public` schema into `out`; returns its size in bytes.
    pub async fn dump(
        &self,
        credentials: &TenantCredentials,
        out: &mut (impl AsyncWrite + Unpin),
    ) -> Result<u64, TenancyError> {
        let mut child = self
            .command(&self.pg_dump, credentials)
            .args([
                "--format=custom",
                "--schema=public",
                "--no-owner",
                "--no-privileges",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|err| tool_error("pg_dump", err.to_string()))?;
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let errors = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text).await;
            text
        });
        let written = tokio::io::copy(&mut stdout, out)
            .await
            .map_err(|err| tool_error("pg_dump", err.to_string()))?;
        out.flush()
            .await
            .map_err(|err| tool_error("pg_dump", err.to_string()))?;
        let status = child
            .wait()
            .await
            .map_err(|err| tool_error("pg_dump", err.to_string()))?;
        let stderr = errors.await.unwrap_or_default();
        if !status.success() {
            return Err(tool_error("pg_dump", stderr.trim().to_owned()));
        }
        Ok(written)
    }

    /// Restores a custom-format archive into the tenant's database, as the
    /// tenant: objects only in `public`, without owners or grants, so nothing
    /// in the archive can name another role or reach outside the database.
    /// Statements the role is refused are reported, not fatal: they had no effect.
    pub async fn restore(
        &self,
        credentials: &TenantCredentials,
        archive: &Path,
    ) -> Result<RestoreReport, TenancyError> {
        let output = self
            .restore_command(credentials)
            .arg(archive)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|err| tool_error("pg_restore", err.to_string()))?;
        restore_report(&output)
    }

    /// Restores as [`PgTools::restore`] does, reading the archive from
    /// `input` as it arrives: one pass, with nothing on disk, so a dump can
    /// be restored while it is being made.
    pub async fn restore_from(
        &self,
        credentials: &TenantCredentials,
        input: &mut (impl AsyncRead + Unpin),
    ) -> Result<RestoreReport, TenancyError> {
        let mut child = self
            .restore_command(credentials)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|err| tool_error("pg_restore", err.to_string()))?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let feed = async move {
            let fed = tokio::io::copy(input, &mut stdin).await;
            // The end of its input is the end of the archive for pg_restore.
            drop(stdin);
            fed
        };
        let (fed, output) = tokio::join!(feed, child.wait_with_output());
        let output = output.map_err(|err| tool_error("pg_restore", err.to_string()))?;
        let report = restore_report(&output)?;
        // A pg_restore that stopped early closes its input: its own error says why.
        fed.map_err(|err| tool_error("pg_restore", err.to_string()))?;
        Ok(report)
    }

    fn restore_command(&self, credentials: &TenantCredentials) -> Command {
        let mut command = self.command(&self.pg_restore, credentials);
        command
            .args([
                "--format=custom",
                "--schema=public",
                "--no-owner",
                "--no-privileges",
                "--no-comments",
            ])
            .arg(format!("--dbname={}", credentials.database));
        command
    }
}

fn restore_report(output: &std::process::Output) -> Result<RestoreReport, TenancyError> {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let refused: Vec<String> = stderr
        .lines()
        .filter(|line| line.contains("error:") && !line.contains("errors ignored on restore"))
        .map(str::to_owned)
        .collect();
    if !output.status.success() && refused.is_empty() {
        return Err(tool_error("pg_restore", stderr.trim().to_owned()));
    }
    Ok(RestoreReport { refused })
}

/// Whether `input` starts like a `pg_dump` custom-format archive.
pub async fn looks_like_custom_dump(input: &mut (impl AsyncRead + Unpin)) -> std::io::Result<bool> {
    let mut magic = [0u8; 5];
    match input.read_exact(&mut magic).await {
        Ok(_) => Ok(&magic == b"PGDMP"),
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(err) => Err(err),
    }
}

fn tool_error(tool: &'static str, message: String) -> TenancyError {
    TenancyError::Tool { tool, message }
}
