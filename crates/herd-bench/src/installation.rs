//! A fresh Herd installation on the stack, set up as an operator would, its
//! `herd serve` and a client of its API.

use std::fs::File;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};

use crate::{InstallationArgs, machine};

/// Fine enough for phases of tens of seconds, coarse enough not to load
/// the server being measured.
const OPERATION_POLL: Duration = Duration::from_millis(200);

pub fn stack(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set: source the stack's env file"))
}

/// `herd` with the stack's settings, as an operator's shell would run it.
pub struct Installation<'a> {
    args: &'a InstallationArgs,
    port: u16,
}

impl<'a> Installation<'a> {
    pub fn new(args: &'a InstallationArgs) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&args.work_dir)?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        Ok(Installation { args, port })
    }

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

    pub fn run(&self, args: &[&str], env: &[(&str, String)]) -> anyhow::Result<String> {
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
    /// object store with room for `capacity` instances; returns an operator
    /// token.
    pub fn set_up(&self, capacity: usize) -> anyhow::Result<String> {
        let capacity = capacity.to_string();
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

    /// Registers the stack's second cluster (`local-b`) and second database
    /// server (`local-2`), for instances to move to, and with `object_store`
    /// the stack's second Garage as the object store of that name.
    pub fn add_second_placement(
        &self,
        capacity: usize,
        object_store: Option<&str>,
    ) -> anyhow::Result<()> {
        if let Some(name) = object_store {
            self.run(
                &[
                    "fleet",
                    "add-object-store",
                    "--name",
                    name,
                    "--s3-endpoint",
                    &stack("HERD_S3_ENDPOINT_2")?,
                    "--s3-region",
                    &stack("HERD_S3_REGION_2")?,
                    "--admin-endpoint",
                    &stack("HERD_GARAGE_ADMIN_URL_2")?,
                ],
                &[(
                    "HERD_FLEET_ADMIN_TOKEN",
                    stack("HERD_GARAGE_ADMIN_TOKEN_2")?,
                )],
            )?;
        }
        let capacity = capacity.to_string();
        self.run(
            &[
                "fleet",
                "add-cluster",
                "--name",
                "local-b",
                "--capacity",
                &capacity,
                "--kubeconfig",
                &stack("HERD_KUBECONFIG_2")?,
            ],
            &[],
        )?;
        let admin_url = stack("HERD_PG2_ADMIN_URL")?;
        let port = url::Url::parse(&admin_url)?
            .port()
            .context("the admin URL names no port")?
            .to_string();
        self.run(
            &[
                "fleet",
                "add-database-server",
                "--name",
                "local-2",
                "--capacity",
                &capacity,
                "--tenant-host",
                "127.0.0.1",
                "--tenant-port",
                &port,
            ],
            &[("HERD_FLEET_ADMIN_URL", admin_url)],
        )?;
        Ok(())
    }

    /// Starts `herd serve` with its log in `log` under the work directory.
    /// Archives are staged under the work directory too, so they go with the
    /// throwaway stack.
    pub fn serve(&self, log: &str) -> anyhow::Result<Server> {
        let log = File::create(self.args.work_dir.join(log))?;
        let child = self
            .command(&["serve"])
            .env("HERD_SCRATCH_DIR", self.args.work_dir.join("scratch"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting herd serve")?;
        Ok(Server(child))
    }

    pub fn api(&self, token: String) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: format!("http://127.0.0.1:{}", self.port),
            token,
        }
    }
}

/// `herd serve`, stopped when dropped.
pub struct Server(Child);

impl Server {
    /// The most memory this process had resident so far.
    pub fn peak_rss_mib(&self) -> anyhow::Result<f64> {
        machine::peak_rss_mib(self.0.id()).context("reading herd's VmHWM")
    }

    /// The CPU seconds this process used so far.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        machine::cpu_seconds(self.0.id()).context("reading herd's CPU time")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    /// Waits for `/readyz` and returns what it says about the dependencies.
    pub async fn ready(&self, deadline: Duration) -> anyhow::Result<Value> {
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

    /// A request to `path` with the token.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// Sends a request and returns the JSON answer, which must have `status`.
    pub async fn call(&self, request: RequestBuilder, status: u16) -> anyhow::Result<Value> {
        let response = request.send().await?;
        let code = response.status().as_u16();
        let text = response.text().await?;
        if code != status {
            bail!("expected {status}, got {code}: {text}");
        }
        Ok(serde_json::from_str(&text)?)
    }

    /// Sends a request that starts an operation and waits up to `deadline`
    /// for it to succeed; returns the answer and the seconds from sending to
    /// success.
    pub async fn until_succeeded(
        &self,
        request: RequestBuilder,
        deadline: Duration,
    ) -> anyhow::Result<(Value, f64)> {
        let started = Instant::now();
        let answer = self.call(request, 202).await?;
        self.succeeded(&crate::portability::id_of(&answer["operation"])?, deadline)
            .await?;
        Ok((answer, started.elapsed().as_secs_f64()))
    }

    /// An order of a `small` instance of Mastodon `version` at `domain`.
    pub fn order(&self, domain: &str, version: &str) -> RequestBuilder {
        self.request(Method::POST, "/api/v1/instances")
            .json(&json!({
                "domain": domain,
                "plan": "small",
                "owner_email": "owner@example.org",
                "version": version,
            }))
    }

    /// Waits until the operation succeeded; fails when it failed or took
    /// longer than `deadline`.
    pub async fn succeeded(&self, operation: &str, deadline: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let request = self.request(Method::GET, &format!("/api/v1/operations/{operation}"));
            let answer = self.call(request, 200).await?;
            match answer["state"].as_str() {
                Some("succeeded") => return Ok(()),
                Some("failed") => bail!("operation {operation} failed: {answer}"),
                _ if started.elapsed() > deadline => {
                    bail!("operation {operation} did not end within {deadline:?}: {answer}")
                }
                _ => tokio::time::sleep(OPERATION_POLL).await,
            }
        }
    }
}
