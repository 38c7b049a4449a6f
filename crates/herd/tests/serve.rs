//! `herd serve` as a process, against the real local stack that `deploy/test.sh`
//! starts: liveness always answers, readiness names the dependency that fails.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{free_port, stack_setting};

struct Herd {
    child: Child,
    base: String,
}

impl Drop for Herd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `herd serve` with the stack's settings, some of them overridden.
fn start_herd(overrides: &[(&str, String)]) -> Herd {
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_herd"));
    command
        .arg("serve")
        .env("DATABASE_URL", stack_setting("DATABASE_URL"))
        .env("KUBECONFIG", stack_setting("KUBECONFIG"))
        .env("HERD_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        // Only the HTTP side is under test here.
        .env("HERD_WORKERS", "0")
        .env("HERD_RECONCILE", "false")
        .env("HERD_LOG", "warn")
        .env("HERD_SECRET_KEY", herd_db::Sealer::generate_key().unwrap())
        .env_remove("HERD_KUBECONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (name, value) in overrides {
        command.env(name, value);
    }
    let child = command.spawn().expect("herd starts");
    Herd {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

/// Polls `path` until its status is `expected`, returning the last body.
async fn wait_for_status(herd: &Herd, path: &str, expected: u16) -> (String, Value) {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut last = String::from("no answer");
    while started.elapsed() < Duration::from_secs(60) {
        if let Ok(response) = client.get(format!("{}{path}", herd.base)).send().await {
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let body = response.text().await.unwrap_or_default();
            if status == expected {
                return (
                    content_type,
                    serde_json::from_str(&body).unwrap_or(Value::String(body)),
                );
            }
            last = format!("{status} {body}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{path} never answered {expected}; last answer: {last}");
}

#[tokio::test]
async fn ready_when_database_and_kubernetes_answer() {
    let herd = start_herd(&[]);
    let (_, health) = wait_for_status(&herd, "/healthz", 200).await;
    assert_eq!(health, Value::String("ok".into()));

    let (_, readiness) = wait_for_status(&herd, "/readyz", 200).await;
    assert_eq!(readiness["ready"], true);
    let names: Vec<&str> = readiness["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["dependency"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["database", "kubernetes"]);
}

#[tokio::test]
async fn unreachable_database_is_named_and_liveness_still_answers() {
    let closed = free_port();
    let herd = start_herd(&[(
        "DATABASE_URL",
        format!("postgres://herd:wrong@127.0.0.1:{closed}/herd"),
    )]);
    wait_for_status(&herd, "/healthz", 200).await;

    let (content_type, problem) = wait_for_status(&herd, "/readyz", 503).await;
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(problem["code"], "dependency_unreachable");
    assert_eq!(problem["failing"], serde_json::json!(["database"]));
    assert!(
        !problem.to_string().contains("wrong"),
        "the password leaked: {problem}"
    );
}

#[tokio::test]
async fn unreachable_kubernetes_is_named() {
    // The same credentials, but an API server address where nothing listens.
    let mut kubeconfig =
        kube::config::Kubeconfig::read_from(stack_setting("KUBECONFIG")).expect("kubeconfig");
    let closed = free_port();
    for cluster in &mut kubeconfig.clusters {
        if let Some(cluster) = cluster.cluster.as_mut() {
            cluster.server = Some(format!("https://127.0.0.1:{closed}"));
        }
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    // JSON is YAML, which is what a kubeconfig is.
    serde_json::to_writer(&file, &kubeconfig).unwrap();

    let herd = start_herd(&[("HERD_KUBECONFIG", file.path().display().to_string())]);
    // The database counts as failing too until this process finds the schema
    // current, which a stack's first start takes a moment to be.
    let started = Instant::now();
    loop {
        let (content_type, problem) = wait_for_status(&herd, "/readyz", 503).await;
        assert_eq!(content_type, "application/problem+json");
        if problem["failing"] == serde_json::json!(["kubernetes"]) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "only Kubernetes should fail: {problem}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
