//! The measured half: a fresh Herd installation on the stack, N orders
//! through the API, and the wait until every instance is `running`.

use std::collections::HashMap;
use std::fs::File;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};

use crate::cluster::Requests;
use crate::{ProvisionArgs, machine, round};

const POLL: Duration = Duration::from_millis(500);

pub struct HerdResult {
    pub version: String,
    pub dependencies: Value,
    pub ordering_seconds: f64,
    pub seconds: f64,
    pub instances_per_second: f64,
    pub peak_rss_mib: f64,
    requests: Value,
}

impl HerdResult {
    pub fn json(&self, args: &ProvisionArgs) -> Value {
        json!({
            "workers": args.workers,
            "database_connections": args.database_connections,
            "concurrent_orders": args.concurrent_orders,
            "seconds_to_accept_all_orders": round(self.ordering_seconds),
            "seconds_until_all_running": round(self.seconds),
            "instances_per_second": round(self.instances_per_second),
            "peak_rss_mib": self.peak_rss_mib,
            "apiserver_requests": self.requests,
        })
    }
}

fn stack(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set: source the stack's env file"))
}

/// `herd` with the stack's settings, as an operator's shell would run it.
struct Herd<'a> {
    args: &'a ProvisionArgs,
    port: u16,
}

impl Herd<'_> {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.args.herd);
        command
            .args(args)
            .env("HERD_LISTEN_ADDR", format!("127.0.0.1:{}", self.port))
            .env("HERD_INSTALLATION", "bench")
            .env("HERD_WORKERS", self.args.workers.to_string())
            .env(
                "HERD_DATABASE_MAX_CONNECTIONS",
                self.args.database_connections.to_string(),
            );
        command
    }

    fn run(&self, args: &[&str], env: &[(&str, String)]) -> anyhow::Result<String> {
        let mut command = self.command(args);
        command.envs(env.iter().map(|(k, v)| (k, v)));
        let output = command.output().context("running herd")?;
        if !output.status.success() {
            bail!(
                "herd {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8(output.stdout)?.trim().to_owned())
    }

    /// Migrates, seeds and registers the stack's cluster, database server and
    /// object store with room for every instance; returns an operator token.
    fn set_up(&self) -> anyhow::Result<String> {
        let capacity = self.args.instances.to_string();
        self.run(&["migrate"], &[])?;
        self.run(&["seed"], &[])?;
        self.run(
            &[
                "fleet",
                "add-cluster",
                "--name",
                "local",
                "--capacity",
                &capacity,
                "--kubeconfig",
                &stack("KUBECONFIG")?,
            ],
            &[],
        )?;
        let admin_url = stack("HERD_PG_ADMIN_URL")?;
        let port = url::Url::parse(&admin_url)?
            .port()
            .context("the admin URL names no port")?
            .to_string();
        self.run(
            &[
                "fleet",
                "add-database-server",
                "--name",
                "local",
                "--capacity",
                &capacity,
                "--tenant-host",
                "127.0.0.1",
                "--tenant-port",
                &port,
            ],
            &[("HERD_FLEET_ADMIN_URL", admin_url)],
        )?;
        self.run(
            &[
                "fleet",
                "add-object-store",
                "--name",
                "local",
                "--s3-endpoint",
                &stack("HERD_S3_ENDPOINT")?,
                "--s3-region",
                &stack("HERD_S3_REGION")?,
                "--admin-endpoint",
                &stack("HERD_GARAGE_ADMIN_URL")?,
            ],
            &[("HERD_FLEET_ADMIN_TOKEN", stack("HERD_GARAGE_ADMIN_TOKEN")?)],
        )?;
        self.run(
            &[
                "token",
                "create",
                "--email",
                "bench@example.org",
                "--role",
                "operator",
            ],
            &[],
        )
    }

    fn serve(&self) -> anyhow::Result<Server> {
        let log = File::create(self.args.work_dir.join("herd.log"))?;
        let child = self
            .command(&["serve"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting herd serve")?;
        Ok(Server(child))
    }
}

/// `herd serve`, stopped when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn ready(&self, deadline: Duration) -> anyhow::Result<Value> {
        let started = Instant::now();
        loop {
            if let Ok(response) = self.http.get(format!("{}/readyz", self.base)).send().await
                && response.status().is_success()
            {
                return Ok(response.json().await?);
            }
            if started.elapsed() > deadline {
                bail!("herd serve was not ready within {deadline:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn order(&self, domain: String) -> anyhow::Result<()> {
        let response = self
            .http
            .post(format!("{}/api/v1/instances", self.base))
            .bearer_auth(&self.token)
            .json(&json!({"domain": domain, "plan": "small", "owner_email": "owner@example.org"}))
            .send()
            .await?;
        if response.status().as_u16() != 202 {
            bail!(
                "ordering {domain}: {} {}",
                response.status(),
                response.text().await?
            );
        }
        Ok(())
    }

    /// How many instances are in each state.
    async fn states(&self) -> anyhow::Result<HashMap<String, usize>> {
        let list: Value = self
            .http
            .get(format!("{}/api/v1/instances", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let mut states = HashMap::new();
        for instance in list["instances"].as_array().into_iter().flatten() {
            let state = instance["state"].as_str().unwrap_or("unknown").to_owned();
            *states.entry(state).or_insert(0) += 1;
        }
        Ok(states)
    }
}

pub async fn run(args: &ProvisionArgs, deadline: Duration) -> anyhow::Result<HerdResult> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let herd = Herd { args, port };
    let token = herd.set_up()?;
    let version = herd.run(&["--version"], &[])?;
    let server = herd.serve()?;
    let api = Api {
        http: reqwest::Client::new(),
        base: format!("http://127.0.0.1:{port}"),
        token,
    };
    let readiness = api.ready(Duration::from_secs(60)).await?;
    let before = Requests::now().await?;

    eprintln!("herd-bench: ordering {} instances", args.instances);
    let started = Instant::now();
    futures::stream::iter(0..args.instances)
        .map(|i| api.order(format!("b{i}.bench.example")))
        .buffer_unordered(args.concurrent_orders)
        .try_collect::<()>()
        .await?;
    let ordering_seconds = started.elapsed().as_secs_f64();

    let mut last_report = Instant::now();
    loop {
        let states = api.states().await?;
        let running = states.get("running").copied().unwrap_or(0);
        if running == args.instances {
            break;
        }
        if let Some(failed) = states.get("failed") {
            bail!("{failed} instances failed to provision; see herd.log");
        }
        if started.elapsed() > deadline {
            bail!(
                "only {running} of {} instances ran within {deadline:?}",
                args.instances
            );
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
    let seconds = started.elapsed().as_secs_f64();
    let after = Requests::now().await?;
    let peak_rss_mib = machine::peak_rss_mib(server.0.id()).context("reading herd's VmHWM")?;
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
        requests: after.since(&before, args.instances),
    })
}
