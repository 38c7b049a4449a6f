//! The move benchmark: for each size, an instance filled with a fixture of
//! about that size on cluster `local` and database server `local`, moved by
//! hand the way an operator would without Herd (suspend, `pg_dump -Fc |
//! pg_restore` to the other server, `aws s3 sync` of the media to another
//! bucket, resume), then moved by Herd to cluster `local-b` and server
//! `local-2`. What counts is the write freeze: from the suspension to the
//! instance running again.
//!
//! With `--object-store NAME` the media move too, to the stack's second
//! Garage registered under that name: Herd copies them while the instance
//! runs and what changed since in its freeze; by hand they go down to a local
//! directory and up to the other store, as `aws s3 sync` copies between two
//! endpoints no other way.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use herd_fixture::FixtureSpec;
use herd_tenancy::{BucketPermissions, GarageAdmin, ObjectStore};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::process::Command;

use crate::backup::{aws, aws_on, run_timed};
use crate::cluster::kubectl;
use crate::installation::{Api, Installation, stack};
use crate::portability::{CARRIED_BYTES_PER_UNIT, id_of};
use crate::tenant::{REMOTE_CACHE_PREFIX, Tenant};
use crate::{MigrationArgs, machine, round};

const MIB: u64 = 1 << 20;
/// The database and bucket the manual move copies into, removed afterwards.
const MANUAL_COPY: &str = "bench_manual_copy";
const MANUAL_BUCKET: &str = "bench-manual-copy";

/// The manual move's freeze, phase by phase.
struct Manual {
    suspend_seconds: f64,
    database_seconds: f64,
    media: ManualMedia,
    resume_seconds: f64,
}

/// The media copy of the manual move, all of it inside the freeze.
struct ManualMedia {
    seconds: f64,
    /// The download to a local directory, when the media go to another store.
    download_seconds: Option<f64>,
    objects: u64,
    bytes: u64,
}

impl Manual {
    fn freeze_seconds(&self) -> f64 {
        self.suspend_seconds + self.database_seconds + self.media.seconds + self.resume_seconds
    }

    fn json(&self) -> Value {
        let exclude = format!("--exclude '{REMOTE_CACHE_PREFIX}*'");
        let media_commands = match self.media.download_seconds {
            None => vec![format!("aws s3 sync {exclude} s3://BUCKET s3://NEW_BUCKET")],
            Some(_) => vec![
                format!("aws s3 sync {exclude} s3://BUCKET DIR (first store)"),
                "aws s3 sync DIR s3://NEW_BUCKET (second store)".to_owned(),
            ],
        };
        let mut commands = vec![
            "POST /api/v1/instances/ID/suspend, until no pod runs".to_owned(),
            "pg_dump -Fc SOURCE | pg_restore --no-owner --no-privileges -d TARGET".to_owned(),
        ];
        commands.extend(media_commands);
        commands.push("POST /api/v1/instances/ID/resume, until running".to_owned());
        let mut report = json!({
            "commands": commands,
            "freeze_seconds": round(self.freeze_seconds()),
            "suspend_seconds": round(self.suspend_seconds),
            "pg_dump_restore_seconds": round(self.database_seconds),
            "s3_sync_seconds": round(self.media.seconds),
            "resume_seconds": round(self.resume_seconds),
            "freeze_seconds_without_media": round(self.freeze_seconds() - self.media.seconds),
            "media_objects_copied_in_freeze": self.media.objects,
            "media_bytes_copied_in_freeze": self.media.bytes,
            "media_objects_copied_outside_freeze": 0,
            "media_bytes_copied_outside_freeze": 0,
        });
        if let Some(download_seconds) = self.media.download_seconds {
            report["s3_download_seconds"] = json!(round(download_seconds));
        }
        report
    }
}

struct Bench<'a> {
    herd: &'a Installation<'a>,
    api: Api,
    deadline: Duration,
}

impl Bench<'_> {
    /// The API's `until_succeeded` within the benchmark's deadline.
    async fn until_succeeded(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<(Value, f64)> {
        self.api.until_succeeded(request, self.deadline).await
    }

    async fn instance_action(&self, instance: &str, action: &str) -> anyhow::Result<f64> {
        let request = self.api.request(
            Method::POST,
            &format!("/api/v1/instances/{instance}/{action}"),
        );
        Ok(self.until_succeeded(request).await?.1)
    }

    /// Waits until Herd reports the instance running: its workloads are ready.
    async fn running(&self, instance: &str) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let request = self
                .api
                .request(Method::GET, &format!("/api/v1/instances/{instance}"));
            let shown = self.api.call(request, 200).await?;
            if shown["state"] == "running" {
                return Ok(());
            }
            if started.elapsed() > self.deadline {
                bail!("{instance} is not running again: {shown}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The operator's move: every step in the freeze, one after the other.
    /// With `across_stores` the media go to the stack's second Garage.
    async fn manual(
        &self,
        instance: &str,
        tenant: &Tenant,
        work: &Path,
        across_stores: bool,
    ) -> anyhow::Result<Manual> {
        let store = if across_stores { "_2" } else { "" };
        let target_admin = stack("HERD_PG2_ADMIN_URL")?;
        let copy_url = {
            let mut url = url::Url::parse(&target_admin)?;
            url.set_path(MANUAL_COPY);
            url.to_string()
        };
        admin_sql(&target_admin, &format!("CREATE DATABASE {MANUAL_COPY}")).await?;
        let garage = GarageAdmin::new(
            &stack(&format!("HERD_GARAGE_ADMIN_URL{store}"))?,
            stack(&format!("HERD_GARAGE_ADMIN_TOKEN{store}"))?,
        )?;
        if across_stores {
            // The operator gives the tenant's key to the other store as well.
            // It stays there for Herd's move, which imports that same key.
            garage.ensure_key(&tenant.key, MANUAL_BUCKET).await?;
        }
        let bucket = garage.ensure_bucket(MANUAL_BUCKET).await?;
        garage
            .allow_key_on_bucket(
                &bucket,
                &tenant.key.access_key_id,
                BucketPermissions::READ_WRITE,
            )
            .await?;

        let started = Instant::now();
        self.instance_action(instance, "suspend").await?;
        no_pod_runs(instance, self.deadline).await?;
        let suspend_seconds = started.elapsed().as_secs_f64();
        let mut database = Command::new("bash");
        database
            .arg("-o")
            .arg("pipefail")
            .arg("-c")
            .arg(r#"pg_dump -Fc "$SOURCE" | pg_restore --no-owner --no-privileges -d "$TARGET""#)
            .env("SOURCE", tenant.credentials.database_url())
            .env("TARGET", &copy_url);
        let database_seconds = run_timed("pg_dump | pg_restore", &mut database).await?;
        std::fs::create_dir_all(work)?;
        let (media_seconds, download_seconds) = sync_media(tenant, work, across_stores).await?;
        let resumed = Instant::now();
        self.instance_action(instance, "resume").await?;
        self.running(instance).await?;
        let resume_seconds = resumed.elapsed().as_secs_f64();

        admin_sql(
            &target_admin,
            &format!("DROP DATABASE {MANUAL_COPY} WITH (FORCE)"),
        )
        .await?;
        let copy = ObjectStore::new(
            &stack(&format!("HERD_S3_ENDPOINT{store}"))?,
            &stack(&format!("HERD_S3_REGION{store}"))?,
            MANUAL_BUCKET,
            &tenant.key,
        )?;
        let copied = copy.list_objects("").await?;
        copy.empty().await?;
        garage.delete_bucket(&bucket).await?;
        std::fs::remove_dir_all(work)?;
        Ok(Manual {
            suspend_seconds,
            database_seconds,
            media: ManualMedia {
                seconds: media_seconds,
                download_seconds,
                objects: copied.len() as u64,
                bytes: copied.iter().map(|object| object.size).sum(),
            },
            resume_seconds,
        })
    }

    /// Herd's move to the second cluster and server, and to `object_store`
    /// when given; returns the operation.
    async fn herd(
        &self,
        instance: &str,
        object_store: Option<&str>,
    ) -> anyhow::Result<(Value, f64)> {
        let mut body = json!({"cluster": "local-b", "database_server": "local-2"});
        if let Some(name) = object_store {
            body["object_store"] = json!(name);
        }
        let request = self
            .api
            .request(
                Method::POST,
                &format!("/api/v1/instances/{instance}/migrate"),
            )
            .json(&body);
        let (answer, seconds) = self.until_succeeded(request).await?;
        let operation = id_of(&answer["operation"])?;
        let request = self
            .api
            .request(Method::GET, &format!("/api/v1/operations/{operation}"));
        Ok((self.api.call(request, 200).await?, seconds))
    }

    async fn measure(&self, args: &MigrationArgs, size_mb: u64) -> anyhow::Result<Value> {
        let domain = format!("m{size_mb}.bench.example");
        let fixture = FixtureSpec {
            seed: args.seed,
            scale: (size_mb * MIB).div_ceil(CARRIED_BYTES_PER_UNIT),
            media_percent: 100,
            local_domain: domain.clone(),
        };
        let (answer, _) = self
            .until_succeeded(
                self.api
                    .order(&domain, &herd_core::version::DEFAULT_VERSION.to_string()),
            )
            .await?;
        let instance = id_of(&answer["instance"])?;
        // Registered once the instance is placed on `local`, early enough for
        // Herd to reconcile the new cluster before the move.
        let object_store = args.object_store.as_deref();
        self.herd
            .add_second_placement(args.sizes_mb.len(), object_store)?;
        let tenant = Tenant::of(&instance).await?;
        eprintln!("herd-bench: filling {domain} (scale {})", fixture.scale);
        let started = Instant::now();
        herd_fixture::generate(&tenant.credentials.database_url(), &tenant.media, &fixture).await?;
        let fill_seconds = started.elapsed().as_secs_f64();
        let size = tenant.size().await?;

        eprintln!("herd-bench: moving {domain} by hand");
        let work = args
            .installation
            .work_dir
            .join(format!("{size_mb}mb-manual"));
        let manual = self
            .manual(&instance, &tenant, &work, object_store.is_some())
            .await?;
        eprintln!(
            "herd-bench: frozen {:.1}s by hand; moving with Herd",
            manual.freeze_seconds()
        );
        let (operation, operation_seconds) = self.herd(&instance, object_store).await?;
        let details = &operation["details"];
        let herd_freeze = details["freeze_seconds"]
            .as_f64()
            .with_context(|| format!("no freeze in {operation}"))?;
        eprintln!("herd-bench: frozen {herd_freeze:.1}s by Herd");
        // The details name the copies only when the media moved.
        let count = |name: &str| details[name].as_u64().unwrap_or(0);
        let request = self
            .api
            .request(Method::DELETE, &format!("/api/v1/instances/{instance}"));
        self.until_succeeded(request).await?;
        Ok(json!({
            "size_mb": size_mb,
            "fixture": {
                "seed": fixture.seed,
                "scale": fixture.scale,
                "media_percent": fixture.media_percent,
            },
            "tenant": size.json(),
            "seconds_to_fill": round(fill_seconds),
            "herd": {
                "freeze_seconds": round(herd_freeze),
                "operation_seconds": round(operation_seconds),
                "database_bytes": details["database_bytes"],
                "object_store": object_store,
                "media_objects_copied_outside_freeze": count("media_objects_copied"),
                "media_bytes_copied_outside_freeze": count("media_bytes_copied"),
                "media_objects_copied_in_freeze": count("media_delta_objects_copied"),
                "media_bytes_copied_in_freeze": count("media_delta_bytes_copied"),
                "media_objects_deleted_in_freeze": count("media_delta_objects_deleted"),
            },
            "manual": manual.json(),
            "freeze_ratio_manual_to_herd": round(manual.freeze_seconds() / herd_freeze),
            "targets": {
                "herd_freeze_under_60_s": herd_freeze < 60.0,
            },
        }))
    }
}

/// Copies the tenant's media but the remote cache to the manual move's
/// bucket: on the same store in one `aws s3 sync`, across stores down to a
/// directory under `work` and up again. Returns the seconds of it all and,
/// across stores, of the download.
async fn sync_media(
    tenant: &Tenant,
    work: &Path,
    across_stores: bool,
) -> anyhow::Result<(f64, Option<f64>)> {
    let source = format!("s3://{}", tenant.bucket);
    let copy = format!("s3://{MANUAL_BUCKET}");
    let sync = |command: &mut Command| {
        command.args(["s3", "sync", "--only-show-errors"]);
    };
    let mut download = aws(tenant, work)?;
    sync(&mut download);
    download
        .arg("--exclude")
        .arg(format!("{REMOTE_CACHE_PREFIX}*"))
        .arg(&source);
    if !across_stores {
        download.arg(&copy);
        return Ok((run_timed("aws s3 sync", &mut download).await?, None));
    }
    let local = work.join("media");
    download.arg(&local);
    let download_seconds = run_timed("aws s3 sync to a directory", &mut download).await?;
    let mut upload = aws_on(tenant, work, "_2")?;
    sync(&mut upload);
    upload.arg(&local).arg(&copy);
    let upload_seconds = run_timed("aws s3 sync from a directory", &mut upload).await?;
    Ok((download_seconds + upload_seconds, Some(download_seconds)))
}

/// Waits until no pod of the instance runs any more (finished Job pods aside),
/// as an operator watches `kubectl get pods`.
async fn no_pod_runs(instance: &str, deadline: Duration) -> anyhow::Result<()> {
    let namespace = herd_kube::children::namespace_name(instance);
    let started = Instant::now();
    loop {
        let running = kubectl(&[
            "-n",
            &namespace,
            "get",
            "pods",
            "--field-selector=status.phase!=Succeeded,status.phase!=Failed",
            "-o",
            "name",
        ])
        .await?
        .lines()
        .count();
        if running == 0 {
            return Ok(());
        }
        if started.elapsed() > deadline {
            bail!("{running} pods of {instance} still run");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn admin_sql(admin_url: &str, statement: &str) -> anyhow::Result<()> {
    let (client, connection) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    client.batch_execute(statement).await?;
    Ok(())
}

pub async fn run(args: &MigrationArgs) -> anyhow::Result<()> {
    let herd = Installation::new(&args.installation)?;
    let token = herd.set_up(args.sizes_mb.len())?;
    let versions = json!({
        "herd": herd.run(&["--version"], &[])?,
        "tools": crate::backup::versions().await?,
    });
    let bench = Bench {
        herd: &herd,
        api: herd.api(token),
        deadline: Duration::from_secs(args.deadline_seconds),
    };
    let _server = bench.herd.serve("herd-migration.log")?;
    bench.api.ready(Duration::from_secs(60)).await?;
    for &size_mb in &args.sizes_mb {
        let mut report = bench.measure(args, size_mb).await?;
        report["benchmark"] = json!("migration");
        report["machine"] = machine::facts();
        report["versions"] = versions.clone();
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}
