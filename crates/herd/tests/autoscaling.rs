//! Surge autoscaling through `herd serve` on the real local stack, with a
//! real Redis holding Sidekiq's queues: old jobs in a queue grow the
//! `default` group up to its maximum and no further, a drained queue brings
//! it back to its minimum one step at a time, and the replicas never flap.
//! Every change is in the audit trail and the outbox. Web gets a
//! HorizontalPodAutoscaler with its bounds, and neither its replicas nor the
//! autoscaled group's are reset when Herd applies the instance again.

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use reqwest::Method;
use serde_json::json;
use support::{Api, Installation, free_port, unique};

const DEADLINE: Duration = Duration::from_secs(120);
/// Shortened so the test runs in well under a minute; production waits longer.
const SETTINGS: [(&str, &str); 5] = [
    ("HERD_AUTOSCALE_INTERVAL_SECONDS", "1"),
    ("HERD_AUTOSCALE_UP_LATENCY_SECONDS", "3"),
    ("HERD_AUTOSCALE_DOWN_LATENCY_SECONDS", "1"),
    ("HERD_AUTOSCALE_UP_COOLDOWN_SECONDS", "2"),
    ("HERD_AUTOSCALE_DOWN_WINDOW_SECONDS", "4"),
];
const GROUP_MAX: i32 = 4;

/// A Redis server of the test's own on a free port, without persistence,
/// stopped when dropped.
struct TestRedis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl TestRedis {
    async fn start() -> TestRedis {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server runs: `deploy/stack.sh install` installs it");
        let redis = TestRedis {
            child,
            port,
            _dir: dir,
        };
        let started = Instant::now();
        while redis.connection(None).await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "Redis never answered"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    async fn connection(
        &self,
        password: Option<&str>,
    ) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let url = match password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}/0", self.port),
            None => self.url(),
        };
        redis::Client::open(url)?
            .get_multiplexed_async_connection()
            .await
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn namespace(instance: &str) -> String {
    herd_kube::children::namespace_name(instance)
}

async fn client() -> kube::Client {
    herd_kube::client(None).await.unwrap()
}

async fn deployments(instance: &str) -> kube::Api<Deployment> {
    kube::Api::namespaced(client().await, &namespace(instance))
}

async fn replicas(instance: &str, name: &str) -> Option<i32> {
    deployments(instance)
        .await
        .get(name)
        .await
        .unwrap()
        .spec
        .replicas
}

fn db_pool(deployment: &Deployment) -> Option<String> {
    deployment.spec.template.spec.as_ref()?.containers[0]
        .env
        .as_ref()?
        .iter()
        .find(|var| var.name == "DB_POOL")?
        .value
        .clone()
}

/// A job as Sidekiq 7 serialises it: `enqueued_at` in float seconds.
fn sidekiq_7_job(age: Duration) -> String {
    let enqueued = SystemTime::now() - age;
    json!({
        "class": "ActivityPub::DeliveryWorker",
        "queue": "default",
        "jid": unique(""),
        "enqueued_at": enqueued.duration_since(UNIX_EPOCH).unwrap().as_secs_f64(),
    })
    .to_string()
}

/// A job as Sidekiq 8 serialises it: `enqueued_at` in integer milliseconds.
fn sidekiq_8_job(age: Duration) -> String {
    let enqueued = SystemTime::now() - age;
    json!({
        "class": "Web::PushNotificationWorker",
        "queue": "push",
        "jid": unique(""),
        "enqueued_at": enqueued.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64,
    })
    .to_string()
}

/// Waits until `check` holds of the replicas `name` asks for.
async fn wait_for_replicas(instance: &str, name: &str, check: impl Fn(Option<i32>) -> bool) {
    let started = Instant::now();
    loop {
        let current = replicas(instance, name).await;
        if check(current) {
            return;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{name} stayed at {current:?} replicas"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every replica count `name` asks for, as the watch reports them.
fn record_replicas(instance: &str, name: &str) -> Arc<Mutex<Vec<i32>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (instance, name, record) = (instance.to_owned(), name.to_owned(), seen.clone());
    tokio::spawn(async move {
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut events = watcher(deployments(&instance).await, config)
            .applied_objects()
            .boxed();
        while let Some(Ok(deployment)) = events.next().await {
            let Some(replicas) = deployment.spec.replicas else {
                continue;
            };
            let mut seen = record.lock().unwrap();
            if seen.last() != Some(&replicas) {
                seen.push(replicas);
            }
        }
    });
    seen
}

async fn scale(operator: &Api, instance: &str, scaling: serde_json::Value) {
    let path = format!("/api/v1/instances/{instance}");
    let (status, body) = operator
        .call(Method::PATCH, &path, Some(json!({ "scaling": scaling })))
        .await;
    assert_eq!(status, 202, "{body}");
    operator
        .assert_succeeds(body["operation"]["id"].as_str().unwrap(), DEADLINE)
        .await;
}

/// The tenant's Redis password, as the instance's Secret holds it.
async fn redis_password(instance: &str) -> String {
    let secrets: kube::Api<Secret> = kube::Api::namespaced(client().await, &namespace(instance));
    let secret = secrets.get("mastodon-env").await.unwrap();
    let value = &secret.data.unwrap()["REDIS_PASSWORD"];
    String::from_utf8(value.0.clone()).unwrap()
}

fn json_column(row: &tokio_postgres::Row) -> serde_json::Value {
    serde_json::from_str(row.get(1)).unwrap()
}

#[tokio::test]
async fn queue_latency_scales_sidekiq_within_bounds_without_flapping() {
    let redis = TestRedis::start().await;
    let installation = Installation::new().await;
    installation.set_up_fleet();
    let mut env: Vec<(&str, &str)> = SETTINGS.to_vec();
    let redis_url = redis.url();
    env.push(("HERD_TENANT_REDIS_URL", &redis_url));
    let _server = installation.serve_with(&env, None);
    let customer = installation.api(&format!("{}@example.com", unique("surge-")), "customer");
    customer.wait_until_serving().await;
    let (instance, operation) = customer
        .order(&format!("{}.example.social", unique("surge-")))
        .await;
    customer.assert_succeeds(&operation, DEADLINE).await;

    // The test's Redis stands in for the tenant's and asks for its password,
    // as the tenant's does.
    let password = redis_password(&instance).await;
    let mut admin = redis.connection(None).await.unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg(&password)
        .query_async(&mut admin)
        .await
        .unwrap();
    let mut queues = redis.connection(Some(&password)).await.unwrap();

    let operator = installation.api(&format!("{}@example.com", unique("op-")), "operator");
    scale(
        &operator,
        &instance,
        json!({"web_max_replicas": 3, "sidekiq": {"default": {"min_replicas": 1, "max_replicas": GROUP_MAX}}}),
    )
    .await;
    let autoscaler: kube::Api<HorizontalPodAutoscaler> =
        kube::Api::namespaced(client().await, &namespace(&instance));
    let started = Instant::now();
    let web_autoscaler = loop {
        if let Some(found) = autoscaler.get_opt("web").await.unwrap() {
            break found.spec;
        }
        assert!(started.elapsed() < DEADLINE, "no autoscaler for web");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        (web_autoscaler.min_replicas, web_autoscaler.max_replicas),
        (Some(1), 3)
    );
    assert_eq!(web_autoscaler.scale_target_ref.name, "web");
    wait_for_replicas(&instance, "sidekiq-default", |r| r == Some(1)).await;
    let seen = record_replicas(&instance, "sidekiq-default");

    // A surge: the oldest jobs waited longer than the upper threshold, and
    // keep waiting, as nothing consumes them.
    let _: () = redis::cmd("LPUSH")
        .arg("queue:default")
        .arg(sidekiq_7_job(Duration::from_secs(10)))
        .query_async(&mut queues)
        .await
        .unwrap();
    let _: () = redis::cmd("LPUSH")
        .arg("queue:push")
        .arg(sidekiq_8_job(Duration::from_secs(20)))
        .query_async(&mut queues)
        .await
        .unwrap();
    let _: () = redis::cmd("LPUSH")
        .arg("queue:default")
        .arg(sidekiq_7_job(Duration::ZERO))
        .query_async(&mut queues)
        .await
        .unwrap();
    wait_for_replicas(&instance, "sidekiq-default", |r| r == Some(GROUP_MAX)).await;
    assert_eq!(
        replicas(&instance, "sidekiq-scheduler").await,
        Some(1),
        "the scheduler group is never autoscaled"
    );

    // Herd applies the instance again, as it does after any change; the
    // replicas autoscalers own are not reset. Web is scaled as its
    // HorizontalPodAutoscaler would, through the scale subresource.
    let deployments = deployments(&instance).await;
    deployments
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .unwrap();
    scale(
        &operator,
        &instance,
        json!({"sidekiq": {"default": {"threads": 12}}}),
    )
    .await;
    let started = Instant::now();
    while db_pool(&deployments.get("sidekiq-default").await.unwrap()).as_deref() != Some("12") {
        assert!(
            started.elapsed() < DEADLINE,
            "the new threads never arrived"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(replicas(&instance, "web").await, Some(2), "web was reset");
    assert_eq!(
        replicas(&instance, "sidekiq-default").await,
        Some(GROUP_MAX),
        "sidekiq-default was reset"
    );

    // Drained: back to the minimum, one step per calm window.
    let _: () = redis::cmd("DEL")
        .arg("queue:default")
        .arg("queue:push")
        .query_async(&mut queues)
        .await
        .unwrap();
    wait_for_replicas(&instance, "sidekiq-default", |r| r == Some(1)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let seen = seen.lock().unwrap().clone();
    let peak = seen.iter().position(|&r| r == GROUP_MAX).expect("the peak");
    assert!(
        seen[..=peak].windows(2).all(|w| w[0] < w[1])
            && seen[peak..].windows(2).all(|w| w[0] == w[1] + 1),
        "up, then down one step at a time, never back: {seen:?}"
    );
    assert_eq!(
        (seen.first(), seen.last()),
        (Some(&1), Some(&1)),
        "{seen:?}"
    );
    assert!(seen.iter().all(|&r| r <= GROUP_MAX), "{seen:?}");
    let changes = seen.len() as i64 - 1;

    let sql = installation.sql().await;
    let audited = sql
        .query(
            "SELECT actor, details::text FROM audit_log WHERE action = 'instance.autoscale' \
             AND object_id = $1 ORDER BY id",
            &[&instance],
        )
        .await
        .unwrap();
    assert_eq!(audited.len() as i64, changes, "one entry per change");
    for row in &audited {
        assert_eq!(row.get::<_, String>(0), "autoscaler");
        let details = json_column(row);
        assert_eq!(details["details"]["group"], "default", "{details}");
    }
    let first = json_column(&audited[0]);
    assert_eq!(
        (
            &first["details"]["from"],
            &first["details"]["to"],
            &first["details"]["reason"]
        ),
        (&json!(1), &json!(2), &json!("surge"))
    );
    let last = json_column(&audited[audited.len() - 1]);
    assert_eq!(last["details"]["reason"], "calm");
    let events: i64 = sql
        .query_one(
            "SELECT count(*) FROM outbox WHERE topic = 'instance.autoscaled' \
             AND payload->>'instance_id' = $1",
            &[&instance],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, changes);

    // A higher minimum is reached at once. Suspended, Herd takes the
    // replicas over (zero) and web loses its autoscaler; resumed, Herd lets
    // go, and the autoscalers bring the replicas back to their minimum.
    scale(
        &operator,
        &instance,
        json!({"web_replicas": 2, "sidekiq": {"default": {"min_replicas": 2}}}),
    )
    .await;
    wait_for_replicas(&instance, "sidekiq-default", |r| r == Some(2)).await;
    change_state(&operator, &instance, "suspend").await;
    for name in ["web", "sidekiq-default", "sidekiq-scheduler"] {
        wait_for_replicas(&instance, name, |r| r == Some(0)).await;
    }
    let started = Instant::now();
    while autoscaler.get_opt("web").await.unwrap().is_some() {
        assert!(started.elapsed() < DEADLINE, "web kept its autoscaler");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        replicas(&instance, "sidekiq-default").await,
        Some(0),
        "the autoscaler leaves a suspended instance alone"
    );
    change_state(&operator, &instance, "resume").await;
    wait_for_replicas(&instance, "sidekiq-default", |r| r == Some(2)).await;
    wait_for_replicas(&instance, "sidekiq-scheduler", |r| r == Some(1)).await;
    let started = Instant::now();
    while autoscaler.get_opt("web").await.unwrap().is_none() {
        assert!(started.elapsed() < DEADLINE, "web got no autoscaler back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // From the API server's default of one, the HorizontalPodAutoscaler
    // raises it to its minimum, which needs no CPU metrics.
    wait_for_replicas(&instance, "web", |r| r == Some(2)).await;
    installation.drop_database().await;
}

async fn change_state(operator: &Api, instance: &str, action: &str) {
    let (status, body) = operator
        .call(
            Method::POST,
            &format!("/api/v1/instances/{instance}/{action}"),
            None,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    operator
        .assert_succeeds(body["operation"]["id"].as_str().unwrap(), DEADLINE)
        .await;
}
