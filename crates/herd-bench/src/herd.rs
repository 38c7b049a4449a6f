//! The measured half of the provisioning benchmark: a fresh Herd
//! installation on the stack, N orders through the API, and the wait until
//! every instance is `running`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::bail;
use futures::{StreamExt, TryStreamExt};
use reqwest::Method;
use serde_json::{Value, json};

use crate::cluster::Requests;
use crate::installation::{Api, Installation};
use crate::machine::StackCpu;
use crate::{ProvisionArgs, round};

/// Listing a thousand instances is itself load; once a second is enough.
const POLL: Duration = Duration::from_secs(1);

pub struct HerdResult {
    pub version: String,
    pub dependencies: Value,
    pub ordering_seconds: f64,
    pub seconds: f64,
    pub instances_per_second: f64,
    pub peak_rss_mib: f64,
    /// Polls answered 503 while the instances were provisioned.
    pub unavailable_answers: u32,
    requests: Value,
    herd_cpu_seconds: f64,
    stack_cpu: Value,
}

impl HerdResult {
    pub fn json(&self, args: &ProvisionArgs) -> Value {
        json!({
            "workers": args.installation.workers,
            "database_connections": args.installation.database_connections,
            "concurrent_orders": args.concurrent_orders,
            "seconds_to_accept_all_orders": round(self.ordering_seconds),
            "seconds_until_all_running": round(self.seconds),
            "instances_per_second": round(self.instances_per_second),
            "peak_rss_mib": self.peak_rss_mib,
            "unavailable_answers": self.unavailable_answers,
            "apiserver_requests": self.requests,
            "herd_cpu_seconds": round(self.herd_cpu_seconds),
            "stack_cpu": self.stack_cpu,
        })
    }
}

/// How many instances are in each state; `None` when Herd answered 503 (a
/// moment without a free database connection), which a poller simply retries.
async fn states(api: &Api) -> anyhow::Result<Option<HashMap<String, usize>>> {
    let response = api.request(Method::GET, "/api/v1/instances").send().await?;
    if response.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
        return Ok(None);
    }
    let code = response.status().as_u16();
    let text = response.text().await?;
    if code != 200 {
        bail!("expected 200, got {code}: {text}");
    }
    let list: Value = serde_json::from_str(&text)?;
    let mut states = HashMap::new();
    for instance in list["instances"].as_array().into_iter().flatten() {
        let state = instance["state"].as_str().unwrap_or("unknown").to_owned();
        *states.entry(state).or_insert(0) += 1;
    }
    Ok(Some(states))
}

/// Orders `instances` small instances of Mastodon `version`, `concurrent` at a time.
pub async fn order_all(
    api: &Api,
    instances: usize,
    version: &str,
    concurrent: usize,
) -> anyhow::Result<()> {
    eprintln!("herd-bench: ordering {instances} instances");
    futures::stream::iter(0..instances)
        .map(|i| async move {
            api.call(api.order(&format!("b{i}.bench.example"), version), 202)
                .await
                .map(drop)
        })
        .buffer_unordered(concurrent)
        .try_collect::<()>()
        .await
}

/// Waits until all `instances` are running; returns how many polls were
/// answered 503 meanwhile.
pub async fn wait_all_running(
    api: &Api,
    instances: usize,
    started: Instant,
    deadline: Duration,
) -> anyhow::Result<u32> {
    let mut last_report = Instant::now();
    let mut unavailable_answers = 0;
    loop {
        let Some(states) = states(api).await? else {
            unavailable_answers += 1;
            tokio::time::sleep(POLL).await;
            continue;
        };
        let running = states.get("running").copied().unwrap_or(0);
        if running == instances {
            return Ok(unavailable_answers);
        }
        if let Some(failed) = states.get("failed") {
            bail!("{failed} instances failed to provision; see herd.log");
        }
        if started.elapsed() > deadline {
            bail!("only {running} of {instances} instances ran within {deadline:?}");
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "herd-bench: {:>4.0}s {states:?}",
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(POLL).await;
    }
}

pub async fn run(args: &ProvisionArgs, deadline: Duration) -> anyhow::Result<HerdResult> {
    let herd = Installation::new(&args.installation)?;
    let token = herd.set_up(args.instances)?;
    let version = herd.run(&["--version"], &[])?;
    let server = herd.serve("herd.log")?;
    let api = herd.api(token);
    let readiness = api.ready(Duration::from_secs(60)).await?;
    let before = Requests::now().await?;
    let stack_cpu_before = StackCpu::now()?;
    let herd_cpu_before = server.cpu_seconds()?;

    let started = Instant::now();
    order_all(
        &api,
        args.instances,
        &herd_core::version::DEFAULT_VERSION.to_string(),
        args.concurrent_orders,
    )
    .await?;
    let ordering_seconds = started.elapsed().as_secs_f64();
    let unavailable_answers = wait_all_running(&api, args.instances, started, deadline).await?;
    let seconds = started.elapsed().as_secs_f64();
    let after = Requests::now().await?;
    let stack_cpu = StackCpu::now()?.since(&stack_cpu_before, args.instances);
    let herd_cpu_seconds = server.cpu_seconds()? - herd_cpu_before;
    let peak_rss_mib = server.peak_rss_mib()?;
    drop(server);
    eprintln!(
        "herd-bench: {} instances running after {seconds:.1}s",
        args.instances
    );

    Ok(HerdResult {
        version,
        dependencies: readiness,
        ordering_seconds,
        seconds,
        instances_per_second: args.instances as f64 / seconds,
        peak_rss_mib,
        unavailable_answers,
        requests: after.since(&before, args.instances)?,
        herd_cpu_seconds,
        stack_cpu,
    })
}
