//! The comparison: the objects Herd's reconciler creates for an instance,
//! rendered by the same builders into one file per instance, applied by a
//! shell loop of `kubectl apply --server-side`, then awaited until every
//! Deployment is Available. Only the cluster's part: no tenant database, bucket or key is made,
//! which flatters the loop.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use herd_core::plan::starter_plans;
use herd_core::spec::{DatabaseEndpoint, InstanceSpec, ObjectStoreEndpoint};
use herd_core::tenant::TenantNames;
use herd_kube::children::{Child, ClusterProfile, InstanceSecrets};
use herd_kube::crd::{MastodonInstance, MastodonInstanceSpec};
use herd_kube::manifests::desired_children;
use serde_json::{Value, json};
use tokio::process::Command;

use crate::cluster::{Requests, kubectl};
use crate::machine::StackCpu;
use crate::round;

/// Marks the loop's Deployments, so one list finds them all.
const LABEL: &str = "bench.herd.dev/baseline";

/// Listing thousands of Deployments is a load of its own: not too often.
const AVAILABLE_POLL: Duration = Duration::from_secs(2);

/// Applies the files of the directory `$1`, `$2` at a time (1: one after the
/// other, the loop an operator would write).
const LOOP: &str =
    r#"printf '%s\n' "$1"/*.yaml | xargs -P "$2" -n 1 kubectl apply --server-side -f >/dev/null"#;

pub struct BaselineResult {
    parallel: usize,
    apply_seconds: f64,
    seconds: f64,
    pub instances_per_second: f64,
    requests: Value,
    stack_cpu: Value,
}

impl BaselineResult {
    pub fn json(&self) -> Value {
        json!({
            "scope": "the instance's Kubernetes objects only: no tenant database, role, bucket or key",
            "command": format!("bash -c '{LOOP}' kubectl-loop DIR {}", self.parallel),
            "waits_for": "every Deployment Available, from one list every 2 s (Herd also waits for the setup Job to complete)",
            "seconds_applying": round(self.apply_seconds),
            "seconds_until_all_available": round(self.seconds),
            "instances_per_second": round(self.instances_per_second),
            "apiserver_requests": self.requests,
            "stack_cpu": self.stack_cpu,
        })
    }
}

/// One small instance of Mastodon `version` as Herd would describe it.
pub fn instance(index: usize, version: &str) -> MastodonInstance {
    let id = uuid::Uuid::now_v7().to_string();
    let names = TenantNames::for_instance(&id);
    let spec = InstanceSpec {
        instance_id: id.clone(),
        local_domain: format!("k{index}.bench.example"),
        web_domain: format!("k{index}.bench.example"),
        version: version.to_owned(),
        owner_email: "owner@example.org".into(),
        plan: starter_plans().remove(0),
        suspended: false,
        origin: Default::default(),
        database: DatabaseEndpoint {
            host: "127.0.0.1".into(),
            port: 5432,
            name: names.database,
            user: names.role,
        },
        object_store: ObjectStoreEndpoint {
            endpoint: "http://127.0.0.1:3900".into(),
            region: "garage".into(),
            bucket: names.bucket,
        },
        migration: None,
    };
    MastodonInstance::new(
        &herd_kube::children::namespace_name(&id),
        MastodonInstanceSpec { instance: spec },
    )
}

/// What Herd would put into the cluster for `instance`, with made-up secrets.
pub fn children(instance: &MastodonInstance) -> Vec<Child> {
    let env = herd_core::secrets::generate(&mut |buffer: &mut [u8]| buffer.fill(7));
    desired_children(
        instance,
        &InstanceSecrets { env },
        &ClusterProfile::default(),
    )
}

/// `children` as a multi-document YAML file, the Deployments marked so one
/// list finds them all.
pub fn yaml(children: impl IntoIterator<Item = Child>) -> anyhow::Result<String> {
    let mut yaml = String::new();
    for mut child in children {
        if child.resource.kind == "Deployment" {
            child
                .object
                .metadata
                .labels
                .get_or_insert_with(BTreeMap::new)
                .insert(LABEL.to_owned(), "true".to_owned());
        }
        yaml.push_str("---\n");
        yaml.push_str(&serde_yaml::to_string(&child.object)?);
    }
    Ok(yaml)
}

fn deployments_per_instance(instance: &MastodonInstance) -> usize {
    children(instance)
        .iter()
        .filter(|child| child.resource.kind == "Deployment")
        .count()
}

/// How many of the loop's Deployments are Available. One list for all of
/// them: `kubectl wait` over thousands of objects waits for one after the
/// other and takes longer than the rollouts themselves.
pub async fn available_deployments() -> anyhow::Result<usize> {
    let conditions = kubectl(&[
        "get", "deployments", "--all-namespaces", "--selector", &format!("{LABEL}=true"),
        "--output", r#"jsonpath={range .items[*]}{.status.conditions[?(@.type=="Available")].status}{"\n"}{end}"#,
    ])
    .await?;
    Ok(conditions
        .lines()
        .filter(|status| *status == "True")
        .count())
}

/// Applies `instances` with the loop, `parallel` at a time, and waits until
/// every Deployment is Available.
pub async fn run(
    work_dir: &Path,
    instances: &[MastodonInstance],
    parallel: usize,
    deadline: Duration,
) -> anyhow::Result<BaselineResult> {
    let dir = work_dir.join("kubectl-loop");
    std::fs::create_dir_all(&dir)?;
    for (index, instance) in instances.iter().enumerate() {
        std::fs::write(
            dir.join(format!("{index:06}.yaml")),
            yaml(children(instance))?,
        )?;
    }
    let before = Requests::now().await?;
    let stack_cpu_before = StackCpu::now()?;
    eprintln!(
        "herd-bench: applying {} instances with kubectl",
        instances.len()
    );
    let started = Instant::now();
    let status = Command::new("bash")
        .args(["-c", LOOP, "kubectl-loop"])
        .arg(&dir)
        .arg(parallel.to_string())
        .status()
        .await
        .context("running the kubectl loop")?;
    if !status.success() {
        bail!("the kubectl loop failed: {status}");
    }
    let apply_seconds = started.elapsed().as_secs_f64();
    eprintln!("herd-bench: applied in {apply_seconds:.1}s, waiting for the Deployments");
    let deployments = instances
        .iter()
        .map(deployments_per_instance)
        .sum::<usize>();
    loop {
        let available = available_deployments().await?;
        if available == deployments {
            break;
        }
        if started.elapsed() > deadline {
            bail!(
                "only {available} of {deployments} Deployments were Available within {deadline:?}"
            );
        }
        tokio::time::sleep(AVAILABLE_POLL).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = Requests::now().await?;
    let stack_cpu = StackCpu::now()?.since(&stack_cpu_before, instances.len());
    eprintln!("herd-bench: kubectl loop done after {seconds:.1}s");
    Ok(BaselineResult {
        parallel,
        apply_seconds,
        seconds,
        instances_per_second: instances.len() as f64 / seconds,
        requests: after.since(&before, instances.len())?,
        stack_cpu,
    })
}
