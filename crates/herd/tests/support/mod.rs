//! Runs the `herd` binary against the real local stack that `deploy/test.sh`
//! starts: each `Installation` has a database and an installation label of its
//! own, so tests run side by side on one stack without seeing each other.

#![allow(dead_code)] // each test binary uses its own part of the harness

pub mod stages;
pub mod tenant;

use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn stack_setting(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run these tests through `deploy/test.sh`, which starts the local stack")
    })
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}{}", &id[..10])
}

/// One Herd installation: its own database, sealing key and label.
pub struct Installation {
    pub name: String,
    pub database_url: String,
    pub secret_key: String,
    pub port: u16,
    pub job_lease_seconds: u32,
    database: String,
}

impl Installation {
    pub async fn new() -> Installation {
        let name = unique("t-");
        let database = name.replace('-', "_");
        let admin_url = stack_setting("HERD_PG_ADMIN_URL");
        let (client, connection) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
            .await
            .expect("admin connection");
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {database}"))
            .await
            .expect("create database");
        let mut url = url::Url::parse(&admin_url).unwrap();
        url.set_path(&database);
        let secret_key = herd_db::Sealer::generate_key().unwrap();
        Installation {
            name,
            database_url: url.to_string(),
            secret_key,
            port: free_port(),
            job_lease_seconds: 3,
            database,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_herd"));
        command
            .args(args)
            .env("DATABASE_URL", &self.database_url)
            .env("HERD_SECRET_KEY", &self.secret_key)
            .env("HERD_INSTALLATION", &self.name)
            .env("HERD_LISTEN_ADDR", format!("127.0.0.1:{}", self.port))
            .env("HERD_JOB_LEASE_SECONDS", self.job_lease_seconds.to_string())
            .env("KUBECONFIG", stack_setting("KUBECONFIG"))
            // Archives are fetched from the stack's own object store, on loopback.
            .env("HERD_IMPORT_FROM_PRIVATE_ADDRESSES", "true")
            // Warnings and injected crashes only: the tests' own output stays readable.
            .env("HERD_LOG", "warn")
            .env_remove("HERD_KUBECONFIG")
            .env_remove("HERD_BILLING")
            .env_remove("HERD_FAULT_CRASH");
        command
    }

    /// Runs a one-shot subcommand and returns its stdout; panics with its stderr on failure.
    pub fn run(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let mut command = self.command(args);
        for (name, value) in env {
            command.env(name, value);
        }
        let Output {
            status,
            stdout,
            stderr,
        } = command.output().expect("herd runs");
        assert!(
            status.success(),
            "herd {args:?} failed: {}",
            String::from_utf8_lossy(&stderr)
        );
        String::from_utf8(stdout).unwrap().trim().to_owned()
    }

    /// Migrates, seeds the plans and registers the stack's cluster, both its
    /// database servers and its object store, as an operator sets up a new
    /// installation. Instances are spread over the two servers.
    pub fn set_up_fleet(&self) {
        self.set_up_fleet_reaching_cluster_by(&stack_setting("KUBECONFIG"));
    }

    /// `set_up_fleet`, with the stack's cluster registered under `kubeconfig`
    /// rather than as its administrator.
    pub fn set_up_fleet_reaching_cluster_by(&self, kubeconfig: &str) {
        self.run(&["migrate"], &[]);
        self.run(&["seed"], &[]);
        self.run(
            &[
                "fleet",
                "add-cluster",
                "--name",
                "local",
                "--kubeconfig",
                kubeconfig,
            ],
            &[],
        );
        for (name, setting) in [
            ("local", "HERD_PG_ADMIN_URL"),
            ("local-2", "HERD_PG2_ADMIN_URL"),
        ] {
            let admin_url = stack_setting(setting);
            let port = url::Url::parse(&admin_url)
                .unwrap()
                .port()
                .unwrap()
                .to_string();
            self.run(
                &[
                    "fleet",
                    "add-database-server",
                    "--name",
                    name,
                    "--tenant-host",
                    "127.0.0.1",
                    "--tenant-port",
                    &port,
                ],
                &[("HERD_FLEET_ADMIN_URL", &admin_url)],
            );
        }
        self.add_object_store("local", "");
    }

    /// Registers the stack's Garage whose settings end in `suffix` as the
    /// object store `name`.
    fn add_object_store(&self, name: &str, suffix: &str) {
        let setting = |base: &str| stack_setting(&format!("{base}{suffix}"));
        let token = setting("HERD_GARAGE_ADMIN_TOKEN");
        self.run(
            &[
                "fleet",
                "add-object-store",
                "--name",
                name,
                "--s3-endpoint",
                &setting("HERD_S3_ENDPOINT"),
                "--s3-region",
                &setting("HERD_S3_REGION"),
                "--admin-endpoint",
                &setting("HERD_GARAGE_ADMIN_URL"),
            ],
            &[("HERD_FLEET_ADMIN_TOKEN", &token)],
        );
    }

    /// Registers the stack's second cluster as `local-b`, to move instances
    /// to, and its second Garage as the object store `local-b`.
    pub fn add_second_cluster(&self) {
        self.add_object_store("local-b", "_2");
        self.run(
            &[
                "fleet",
                "add-cluster",
                "--name",
                "local-b",
                "--kubeconfig",
                &stack_setting("HERD_KUBECONFIG_2"),
            ],
            &[],
        );
    }

    /// The database server an instance was placed on, `None` before
    /// placement. Its tenant database is there and nowhere else.
    pub async fn database_server_of(&self, instance_id: &str) -> Option<PlacedDatabaseServer> {
        let pool = herd_db::connect(&self.database_url, 1);
        let mut conn = pool.get().await.expect("connection");
        let instance = herd_db::instances::load_instance(&mut conn, instance_id.parse().unwrap())
            .await
            .expect("instance")
            .expect("the instance exists");
        let id = instance.database_server_id?;
        let sealer = herd_db::Sealer::new(&self.secret_key, &[]).expect("sealer");
        let access = herd_db::fleet::database_server_access(&mut conn, &sealer, id)
            .await
            .expect("database server");
        Some(PlacedDatabaseServer {
            id,
            admin_url: access.admin_url,
        })
    }

    /// A connection to the installation's own database, for checks of what Herd recorded.
    pub async fn sql(&self) -> tokio_postgres::Client {
        let (client, connection) =
            tokio_postgres::connect(&self.database_url, tokio_postgres::NoTls)
                .await
                .expect("connection to the installation's database");
        tokio::spawn(connection);
        client
    }

    pub fn token(&self, email: &str, role: &str) -> String {
        self.run(&["token", "create", "--email", email, "--role", role], &[])
    }

    /// A client of this installation's API acting as a new account.
    pub fn api(&self, email: &str, role: &str) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: self.base_url(),
            token: self.token(email, role),
        }
    }

    /// Starts `herd serve`; `crash_at` arms an injected crash point.
    pub fn serve(&self, crash_at: Option<&str>) -> Server {
        let env: Vec<(&str, &str)> = crash_at
            .map(|point| ("HERD_FAULT_CRASH", point))
            .into_iter()
            .collect();
        self.serve_with(&env, None)
    }

    /// Starts `herd serve` with more settings, its log going to `log` when given.
    pub fn serve_with(&self, env: &[(&str, &str)], log: Option<&std::path::Path>) -> Server {
        let mut command = self.command(&["serve"]);
        command.envs(env.iter().copied());
        let stderr = match log {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("log file")),
            None => Stdio::inherit(),
        };
        command.stdout(Stdio::null()).stderr(stderr);
        Server {
            child: command.spawn().expect("herd serve starts"),
            base: self.base_url(),
        }
    }

    pub async fn drop_database(&self) {
        let (client, connection) =
            tokio_postgres::connect(&stack_setting("HERD_PG_ADMIN_URL"), tokio_postgres::NoTls)
                .await
                .unwrap();
        tokio::spawn(connection);
        client
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.database
            ))
            .await
            .unwrap();
    }
}

/// A database server of the fleet, with the superuser URL the installation
/// administers it with.
pub struct PlacedDatabaseServer {
    pub id: uuid::Uuid,
    pub admin_url: String,
}

pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Server {
    /// Waits for the process to end by itself (an injected crash) and returns whether it crashed.
    pub fn wait_for_exit(&mut self, deadline: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < deadline,
                "herd did not stop within {deadline:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client speaking to one installation with one token.
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl Api {
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Polls until the server answers `/healthz`.
    pub async fn wait_until_serving(&self) {
        let started = Instant::now();
        while self
            .http
            .get(format!("{}/healthz", self.base))
            .send()
            .await
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "herd never served"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls an operation until it ends, returning it.
    pub async fn wait_for_operation(&self, id: &str, deadline: Duration) -> Value {
        let started = Instant::now();
        loop {
            let (status, operation) = self
                .call(
                    reqwest::Method::GET,
                    &format!("/api/v1/operations/{id}"),
                    None,
                )
                .await;
            if status == 200 && matches!(operation["state"].as_str(), Some("succeeded" | "failed"))
            {
                return operation;
            }
            assert!(
                started.elapsed() < deadline,
                "operation {id} did not end within {deadline:?}: {operation}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Orders an instance on the small plan; returns its id and its operation's id.
    pub async fn order(&self, domain: &str) -> (String, String) {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/api/v1/instances",
                Some(serde_json::json!({"domain": domain, "plan": "small", "owner_email": "owner@example.org"})),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        let id = |value: &Value| value.as_str().expect("an id").to_owned();
        (id(&body["instance"]["id"]), id(&body["operation"]["id"]))
    }

    /// Waits for an operation to end and checks that it succeeded.
    pub async fn assert_succeeds(&self, operation_id: &str, deadline: Duration) {
        let operation = self.wait_for_operation(operation_id, deadline).await;
        assert_eq!(operation["state"], "succeeded", "{operation}");
    }
}
