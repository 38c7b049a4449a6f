//! The export and import benchmark: for each size, an instance filled with
//! a fixture of about that size, exported through the API, backed up by hand
//! for comparison, then deleted and imported again from its archive.
//!
//! Each measured phase runs in a `herd serve` of its own, so its peak
//! resident memory is that of the phase alone and comparable across sizes.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::TryStreamExt;
use herd_fixture::FixtureSpec;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::installation::{Api, Installation, Server};
use crate::tenant::{Tenant, TenantSize};
use crate::{PortabilityArgs, backup, machine, mib_per_second, round};

const MIB: u64 = 1 << 20;
/// What one fixture unit at full media size carries into an export: about
/// 3 MB of database and 22 of the 28 MB of media (the rest is the remote
/// cache, left out).
pub const CARRIED_BYTES_PER_UNIT: u64 = 25 * MIB;

struct Export {
    id: String,
    seconds: f64,
    archive_bytes: u64,
}

struct Import {
    instance: String,
    accept_seconds: f64,
    seconds: f64,
}

/// Everything measured for one size.
struct Measured {
    size_mb: u64,
    fixture: FixtureSpec,
    tenant: TenantSize,
    fill_seconds: f64,
    export: Export,
    export_rss_mib: f64,
    backup: backup::BackupResult,
    download_seconds: f64,
    rss_after_download_mib: f64,
    import: Import,
    import_rss_mib: f64,
}

impl Measured {
    fn json(&self) -> Value {
        let carried = self.tenant.carried_bytes();
        // Both copy the same bytes, so the ratio of throughputs is that of times.
        let ratio = self.backup.seconds / self.export.seconds;
        json!({
            "size_mb": self.size_mb,
            "fixture": {
                "seed": self.fixture.seed,
                "scale": self.fixture.scale,
                "media_percent": self.fixture.media_percent,
            },
            "tenant": self.tenant.json(),
            "seconds_to_fill": round(self.fill_seconds),
            "herd_export": {
                "seconds": round(self.export.seconds),
                "archive_bytes": self.export.archive_bytes,
                "throughput_mib_per_second": mib_per_second(carried, self.export.seconds),
                "peak_rss_mib": self.export_rss_mib,
                "download_seconds": round(self.download_seconds),
                "peak_rss_mib_after_download": self.rss_after_download_mib,
            },
            "herd_import": {
                "seconds_to_accept_upload": round(self.import.accept_seconds),
                "seconds_until_running": round(self.import.seconds),
                "throughput_mib_per_second": mib_per_second(carried, self.import.seconds),
                "peak_rss_mib": self.import_rss_mib,
            },
            "baseline": self.backup.json(carried),
            "export_throughput_ratio": round(ratio),
            "targets": {
                "export_at_least_0_9x_baseline": ratio >= 0.9,
                "peak_rss_under_150_mb": self.export_rss_mib.max(self.import_rss_mib) < 150.0,
            },
        })
    }
}

/// The same Herd installation for every size; a new `herd serve` per phase.
struct Bench<'a> {
    args: &'a PortabilityArgs,
    herd: Installation<'a>,
    api: Api,
    deadline: Duration,
}

impl Bench<'_> {
    async fn fresh_server(&self, log: &str) -> anyhow::Result<Server> {
        let server = self.herd.serve(log)?;
        self.api.ready(Duration::from_secs(60)).await?;
        Ok(server)
    }

    /// The API's `until_succeeded` within the benchmark's deadline.
    async fn until_succeeded(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<(Value, f64)> {
        self.api.until_succeeded(request, self.deadline).await
    }

    async fn running_instance(&self, domain: &str) -> anyhow::Result<String> {
        let (answer, _) = self
            .until_succeeded(
                self.api
                    .order(domain, &herd_core::version::DEFAULT_VERSION.to_string()),
            )
            .await?;
        id_of(&answer["instance"])
    }

    async fn fill(&self, instance: &str, fixture: &FixtureSpec) -> anyhow::Result<Tenant> {
        let tenant = Tenant::of(instance).await?;
        eprintln!(
            "herd-bench: filling {} with a fixture of scale {}",
            fixture.local_domain, fixture.scale
        );
        herd_fixture::generate(&tenant.credentials.database_url(), &tenant.media, fixture).await?;
        Ok(tenant)
    }

    async fn export(&self, instance: &str) -> anyhow::Result<Export> {
        let request = self
            .api
            .request(
                Method::POST,
                &format!("/api/v1/instances/{instance}/exports"),
            )
            .json(&json!({}));
        let (answer, seconds) = self.until_succeeded(request).await?;
        let id = id_of(&answer["export"])?;
        let request = self
            .api
            .request(Method::GET, &format!("/api/v1/exports/{id}"));
        let export = self.api.call(request, 200).await?;
        Ok(Export {
            archive_bytes: export["size"].as_u64().context("the export has no size")?,
            id,
            seconds,
        })
    }

    async fn download(&self, export: &Export, to: &Path) -> anyhow::Result<()> {
        let response = self
            .api
            .request(
                Method::GET,
                &format!("/api/v1/exports/{}/download", export.id),
            )
            .send()
            .await?
            .error_for_status()?;
        let mut file = tokio::fs::File::create(to).await?;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.try_next().await? {
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        let written = tokio::fs::metadata(to).await?.len();
        if written != export.archive_bytes {
            bail!(
                "downloaded {written} bytes of an archive of {}",
                export.archive_bytes
            );
        }
        Ok(())
    }

    async fn delete(&self, instance: &str) -> anyhow::Result<()> {
        let request = self
            .api
            .request(Method::DELETE, &format!("/api/v1/instances/{instance}"));
        self.until_succeeded(request).await.map(drop)
    }

    /// Uploads the archive as it is read from disk and waits until the new
    /// instance runs.
    async fn import(&self, domain: &str, archive: &Path) -> anyhow::Result<Import> {
        let length = tokio::fs::metadata(archive).await?.len();
        let file = tokio::fs::File::open(archive).await?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        let form = reqwest::multipart::Form::new()
            .text("domain", domain.to_owned())
            .text("plan", "small")
            .text("owner_email", "owner@example.org")
            .part(
                "archive",
                reqwest::multipart::Part::stream_with_length(body, length).file_name("archive"),
            );
        let started = Instant::now();
        let request = self
            .api
            .request(Method::POST, "/api/v1/imports")
            .multipart(form);
        let answer = self.api.call(request, 202).await?;
        let accept_seconds = started.elapsed().as_secs_f64();
        let operation = id_of(&answer["operation"])?;
        self.api.succeeded(&operation, self.deadline).await?;
        Ok(Import {
            instance: id_of(&answer["instance"])?,
            accept_seconds,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// One size, from ordering the instance to removing the imported one.
    async fn measure(&self, size_mb: u64) -> anyhow::Result<Measured> {
        let domain = format!("p{size_mb}.bench.example");
        let fixture = FixtureSpec {
            seed: self.args.seed,
            scale: (size_mb * MIB).div_ceil(CARRIED_BYTES_PER_UNIT),
            media_percent: 100,
            local_domain: domain.clone(),
        };
        let work = self.args.installation.work_dir.join(format!("{size_mb}mb"));
        std::fs::create_dir_all(&work)?;

        let server = self
            .fresh_server(&format!("herd-{size_mb}mb-provision.log"))
            .await?;
        let instance = self.running_instance(&domain).await?;
        let started = Instant::now();
        let tenant = self.fill(&instance, &fixture).await?;
        let fill_seconds = started.elapsed().as_secs_f64();
        drop(server);
        let size = tenant.size().await?;
        eprintln!(
            "herd-bench: {domain} holds {} MiB to carry ({fill_seconds:.0}s to fill); exporting",
            size.carried_bytes() / MIB,
        );

        let server = self
            .fresh_server(&format!("herd-{size_mb}mb-export.log"))
            .await?;
        let export = self.export(&instance).await?;
        let export_rss_mib = server.peak_rss_mib()?;
        eprintln!(
            "herd-bench: exported in {:.1}s; the same by hand",
            export.seconds
        );
        let backup = backup::run(&tenant, &work.join("backup")).await?;
        eprintln!(
            "herd-bench: backed up by hand in {:.1}s; downloading the export",
            backup.seconds
        );
        let archive = work.join("export.tar.zst");
        let started = Instant::now();
        self.download(&export, &archive).await?;
        let download_seconds = started.elapsed().as_secs_f64();
        let rss_after_download_mib = server.peak_rss_mib()?;
        // The domain is free again once the old server is gone, as when moving hosts.
        self.delete(&instance).await?;
        drop(server);

        eprintln!("herd-bench: importing");
        let server = self
            .fresh_server(&format!("herd-{size_mb}mb-import.log"))
            .await?;
        let import = self.import(&domain, &archive).await?;
        let import_rss_mib = server.peak_rss_mib()?;
        eprintln!("herd-bench: imported in {:.1}s", import.seconds);
        // The next size needs the disk space.
        std::fs::remove_file(&archive)?;
        self.delete(&import.instance).await?;
        drop(server);

        Ok(Measured {
            size_mb,
            fixture,
            tenant: size,
            fill_seconds,
            export,
            export_rss_mib,
            backup,
            download_seconds,
            rss_after_download_mib,
            import,
            import_rss_mib,
        })
    }
}

pub fn id_of(object: &Value) -> anyhow::Result<String> {
    Ok(object["id"]
        .as_str()
        .with_context(|| format!("no id in {object}"))?
        .to_owned())
}

pub async fn run(args: &PortabilityArgs) -> anyhow::Result<()> {
    let herd = Installation::new(&args.installation)?;
    // Each size has its instance and, for a while, the imported one.
    let token = herd.set_up(2 * args.sizes_mb.len())?;
    let versions = json!({
        "herd": herd.run(&["--version"], &[])?,
        "tools": backup::versions().await?,
    });
    let api = herd.api(token);
    let bench = Bench {
        args,
        herd,
        api,
        deadline: Duration::from_secs(args.deadline_seconds),
    };
    for &size_mb in &args.sizes_mb {
        let mut report = bench.measure(size_mb).await?.json();
        report["benchmark"] = json!("portability");
        report["machine"] = machine::facts();
        report["versions"] = versions.clone();
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}
