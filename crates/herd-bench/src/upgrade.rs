//! The fleet upgrade benchmark: N instances on one version upgraded to the
//! next in waves through Herd's API, against what an operator would script
//! instead on the same number of instances: per instance, the pre-deploy
//! migration Job, the new images, the post-deploy migration Job, each waited
//! for with `kubectl`, a wave's worth of instances at a time.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use herd_core::spec::{MigrationPhase, MigrationRun};
use herd_kube::crd::MastodonInstance;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::process::Command;

use crate::cluster::Requests;
use crate::installation::Installation;
use crate::{UpgradeArgs, baseline, cluster, herd, machine, round};

/// A fleet upgrade takes minutes; a look every two seconds is plenty.
const POLL: Duration = Duration::from_secs(2);

/// The script's fleet is applied this many instances at a time.
const SET_UP_PARALLEL: usize = 8;

/// One instance's upgrade as an operator's script does it, with the files
/// `pre.yaml`, `deployments.yaml` and `post.yaml` in the directory `$1`, and
/// the namespace and the Jobs' names in `$2`, `$3`, `$4`.
const ONE_INSTANCE: &str = r#"set -e
kubectl apply --server-side -f "$1/pre.yaml" >/dev/null
kubectl -n "$2" wait --for=condition=complete "job/$3" --timeout=600s >/dev/null
kubectl apply --server-side -f "$1/deployments.yaml" >/dev/null
for d in $(kubectl -n "$2" get deployments -o name); do
  kubectl -n "$2" rollout status "$d" --timeout=600s >/dev/null
done
kubectl apply --server-side -f "$1/post.yaml" >/dev/null
kubectl -n "$2" wait --for=condition=complete "job/$4" --timeout=600s >/dev/null"#;

pub async fn run(args: &UpgradeArgs) -> anyhow::Result<()> {
    let deadline = Duration::from_secs(args.deadline_seconds);
    let herd = herd_half(args, deadline).await?;
    let script = script_half(args, deadline).await?;
    let speedup = script["seconds"].as_f64().unwrap_or(f64::NAN)
        / herd["seconds"].as_f64().unwrap_or(f64::NAN);
    // Herd's own requests (from the audit log) are what the target is about;
    // the cluster's controllers roll the Deployments out whoever asks.
    let requests = &herd["apiserver_requests"];
    let herds_own = requests["by_client"]["herd"]["per_instance"].as_f64();
    let every_client = requests["per_instance"].as_f64().unwrap_or(f64::NAN);
    let report = json!({
        "benchmark": "fleet_upgrade",
        "instances": args.instances,
        "from": args.from,
        "to": args.to,
        "canary": args.canary,
        "wave_size": args.wave_size,
        "machine": machine::facts(),
        "versions": {
            "kubernetes": cluster::server_version().await?,
            "kubectl": cluster::client_version().await?,
        },
        "herd": herd,
        "kubectl_script": script,
        "speedup": round(speedup),
        "targets": {
            "herd_apiserver_requests_per_instance_under_20": herds_own.map(|n| n < 20.0),
            "every_client_apiserver_requests_per_instance_under_20": every_client < 20.0,
        },
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// N instances ordered on `from` until they run, then one fleet upgrade to
/// `to`; measures the upgrade alone.
async fn herd_half(args: &UpgradeArgs, deadline: Duration) -> anyhow::Result<Value> {
    let herd = Installation::new(&args.installation)?;
    let token = herd.set_up(args.instances)?;
    let server = herd.serve("herd.log")?;
    let api = herd.api(token);
    api.ready(Duration::from_secs(60)).await?;
    let started = Instant::now();
    herd::order_all(&api, args.instances, &args.from, 16).await?;
    herd::wait_all_running(&api, args.instances, started, deadline).await?;
    eprintln!(
        "herd-bench: {} instances running on {}",
        args.instances, args.from
    );

    let before = Requests::now().await?;
    let started = Instant::now();
    let upgrade = api
        .call(
            api.request(Method::POST, "/api/v1/fleet/upgrades")
                .json(&json!({
                    "from": args.from,
                    "to": args.to,
                    "canary": args.canary,
                    "wave_size": args.wave_size,
                    "max_failure_ratio": 0.05,
                })),
            202,
        )
        .await?;
    let id = upgrade["id"].as_str().context("the upgrade has no id")?;
    let mut last_report = Instant::now();
    let finished = loop {
        let upgrade = api
            .call(
                api.request(Method::GET, &format!("/api/v1/fleet/upgrades/{id}")),
                200,
            )
            .await?;
        match upgrade["state"].as_str() {
            Some("completed") => break upgrade,
            Some("running") => {}
            other => bail!(
                "the fleet upgrade ended {other:?}: {}",
                upgrade["paused_reason"]
            ),
        }
        if started.elapsed() > deadline {
            bail!("the fleet upgrade took longer than {deadline:?}");
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "herd-bench: {:>4.0}s wave {}",
                started.elapsed().as_secs_f64(),
                upgrade["current_wave"]
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(POLL).await;
    };
    let seconds = started.elapsed().as_secs_f64();
    let after = Requests::now().await?;
    let peak_rss_mib = server.peak_rss_mib()?;
    drop(server);
    let failed: u64 = finished["waves"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|wave| wave["failed"].as_u64())
        .sum();
    eprintln!("herd-bench: fleet upgrade done after {seconds:.1}s");
    Ok(json!({
        "each_instance": "an export (backup), the pre-deploy migration Job, the rollout, the post-deploy migration Job",
        "seconds": round(seconds),
        "instances_per_second": round(args.instances as f64 / seconds),
        "failed": failed,
        "waves": finished["waves"].as_array().map_or(0, Vec::len),
        "peak_rss_mib": peak_rss_mib,
        "apiserver_requests": after.since(&before, args.instances)?,
    }))
}

/// The same N instances applied by the provisioning benchmark's loop on
/// `from`, then upgraded by the operator's script, a wave's worth at a time.
async fn script_half(args: &UpgradeArgs, deadline: Duration) -> anyhow::Result<Value> {
    let fleet: Vec<MastodonInstance> = (0..args.instances)
        .map(|index| baseline::instance(index, &args.from))
        .collect();
    // Only the upgrade is measured: the fleet may come up in parallel.
    baseline::run(
        &args.installation.work_dir,
        &fleet,
        SET_UP_PARALLEL,
        deadline,
    )
    .await?;

    let dir = args.installation.work_dir.join("kubectl-upgrade");
    let mut lines = String::new();
    for (index, instance) in fleet.iter().enumerate() {
        let files = dir.join(format!("{index:06}"));
        std::fs::create_dir_all(&files)?;
        let mut upgraded = instance.clone();
        upgraded.spec.instance.version = args.to.clone();
        let deployments = baseline::children(&upgraded)
            .into_iter()
            .filter(|child| child.resource.kind == "Deployment");
        std::fs::write(files.join("deployments.yaml"), baseline::yaml(deployments)?)?;
        let mut job_names = Vec::new();
        for phase in [MigrationPhase::PreDeploy, MigrationPhase::PostDeploy] {
            let run = MigrationRun {
                version: args.to.clone(),
                phase,
            };
            let name = herd_kube::manifests::migration_job_name(&run);
            let mut migrating = instance.clone();
            migrating.spec.instance.migration = Some(run);
            let job = baseline::children(&migrating)
                .into_iter()
                .filter(|child| child.name() == name);
            std::fs::write(
                files.join(format!("{}.yaml", phase.name())),
                baseline::yaml(job)?,
            )?;
            job_names.push(name);
        }
        lines.push_str(&format!(
            "{} {} {} {}\n",
            files.display(),
            herd_kube::children::namespace_name(&instance.spec.instance.instance_id),
            job_names[0],
            job_names[1],
        ));
    }
    let list = dir.join("instances.txt");
    std::fs::write(&list, lines)?;

    let before = Requests::now().await?;
    eprintln!(
        "herd-bench: upgrading {} instances with kubectl, {} at a time",
        args.instances, args.wave_size
    );
    let started = Instant::now();
    let command = format!(
        "xargs -P {} -L 1 bash -c '{}' upgrade < '{}'",
        args.wave_size,
        ONE_INSTANCE.replace('\'', r"'\''"),
        list.display()
    );
    let status = Command::new("bash")
        .args(["-c", &command])
        .status()
        .await
        .context("running the kubectl script")?;
    if !status.success() {
        bail!("the kubectl upgrade script failed: {status}");
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = Requests::now().await?;
    eprintln!("herd-bench: kubectl script done after {seconds:.1}s");
    Ok(json!({
        "each_instance": "the pre-deploy migration Job, the new images, the post-deploy migration Job, each awaited with kubectl; no backup",
        "script": ONE_INSTANCE,
        "concurrency": args.wave_size,
        "seconds": round(seconds),
        "instances_per_second": round(args.instances as f64 / seconds),
        "apiserver_requests": after.since(&before, args.instances)?,
    }))
}
