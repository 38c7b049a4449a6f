//! Moves of instances between the two clusters of the real local stack.
//!
//! A tenant filled with the Mastodon-like fixture moves from cluster `local`
//! to `local-b`, its database to the other server: on the target it holds
//! the same tables, media and secrets (the checks of the export round trip),
//! nothing of it is left on the source cluster or server, and the operation
//! reports the write freeze. A process killed inside the freeze finishes the
//! move after a restart. A drain moves every instance off a cluster, a
//! bounded number at a time. A move that also changes the object store
//! copies the media to the second Garage and leaves no bucket on the first.

mod support;

use std::time::{Duration, Instant};

use herd_core::tenant::TenantNames;
use herd_kube::crd::MastodonInstance;
use herd_tenancy::{DatabaseServer, GarageAdmin};
use k8s_openapi::api::core::v1::Namespace;
use reqwest::Method;
use serde_json::{Value, json};
use support::tenant::{
    Filled, carried_secrets, filled_instance, running_instance, secrets_of, tenant,
};
use support::{Api, Installation, PlacedDatabaseServer, stack_setting, unique};

const MOVE_DEADLINE: Duration = Duration::from_secs(180);

async fn cluster_a() -> kube::Client {
    herd_kube::client(None).await.unwrap()
}

async fn cluster_b() -> kube::Client {
    let kubeconfig = std::fs::read_to_string(stack_setting("HERD_KUBECONFIG_2")).unwrap();
    herd_jobs::client_from_kubeconfig(&kubeconfig)
        .await
        .unwrap()
}

/// The name of the cluster an instance is placed on, as Herd recorded it.
async fn cluster_of(installation: &Installation, instance: &str) -> String {
    installation
        .sql()
        .await
        .query_one(
            "SELECT c.name FROM instances i JOIN clusters c ON c.id = i.cluster_id WHERE i.id::text = $1",
            &[&instance],
        )
        .await
        .unwrap()
        .get(0)
}

async fn migrate(operator: &Api, instance: &str, request: Value) -> Value {
    let (status, body) = operator
        .call(
            Method::POST,
            &format!("/api/v1/instances/{instance}/migrate"),
            Some(request),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["operation"]["kind"], "migrate");
    assert_eq!(body["instance"]["state"], "updating");
    body
}

/// The instance runs on `local-b` with the data it had on `local`, and its
/// database server is no longer `source`.
async fn assert_moved(
    installation: &Installation,
    operator: &Api,
    filled: &Filled,
    source: &PlacedDatabaseServer,
) {
    let instance = &filled.instance;
    assert_eq!(cluster_of(installation, instance).await, "local-b");
    let (_, shown) = operator
        .call(Method::GET, &format!("/api/v1/instances/{instance}"), None)
        .await;
    assert_eq!(shown["state"], "running", "{shown}");
    let target = installation.database_server_of(instance).await.unwrap();
    assert_ne!(
        target.id, source.id,
        "the database moved to the other server"
    );

    let moved = tenant(installation, instance).await;
    assert_eq!(
        herd_fixture::database_fingerprint(&moved.credentials.database_url())
            .await
            .unwrap(),
        filled.database,
        "the moved database differs"
    );
    assert_eq!(
        herd_fixture::bucket_fingerprint(&moved.media, None)
            .await
            .unwrap(),
        filled.media,
        "the media differ"
    );
    let secrets = secrets_of(installation, instance).await;
    assert_eq!(carried_secrets(&secrets), carried_secrets(&filled.secrets));

    let resources: kube::Api<MastodonInstance> = kube::Api::all(cluster_b().await);
    let name = herd_kube::children::namespace_name(instance);
    assert!(resources.get_opt(&name).await.unwrap().is_some());
    nothing_left_on(cluster_a().await, instance, source).await;
}

/// Neither the resource nor the namespace is on `cluster`, nor the database
/// and role on `server`.
async fn nothing_left_on(cluster: kube::Client, instance: &str, server: &PlacedDatabaseServer) {
    let name = herd_kube::children::namespace_name(instance);
    let resources: kube::Api<MastodonInstance> = kube::Api::all(cluster.clone());
    let namespaces: kube::Api<Namespace> = kube::Api::all(cluster);
    let started = Instant::now();
    while resources.get_opt(&name).await.unwrap().is_some()
        || namespaces.get_opt(&name).await.unwrap().is_some()
    {
        assert!(
            started.elapsed() < MOVE_DEADLINE,
            "{name} stays on the cluster"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let names = TenantNames::for_instance(instance);
    let state = DatabaseServer::new(&server.admin_url)
        .unwrap()
        .inspect_tenant(&names.database, &names.role)
        .await
        .unwrap();
    assert!(
        state.database.is_none() && state.role.is_none(),
        "left on the database server: {state:?}"
    );
}

/// The answer to a request refused because the operation `operation_id` is
/// under way on the instance.
fn assert_waits_for(answer: (u16, Value), operation_id: &str) {
    let (status, problem) = answer;
    assert_eq!(
        (status, problem["code"].as_str()),
        (409, Some("operation_in_progress")),
        "{problem}"
    );
    assert_eq!(problem["operation_id"], operation_id, "{problem}");
}

async fn published(installation: &Installation, topic: &str, instance: &str) -> i64 {
    installation
        .sql()
        .await
        .query_one(
            "SELECT count(*) FROM outbox WHERE topic = $1 AND payload ->> 'instance_id' = $2",
            &[&topic, &instance],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn an_instance_moves_to_another_cluster_with_its_data_and_leaves_nothing_behind() {
    let installation = Installation::new().await;
    installation.set_up_fleet();
    let _server = installation.serve(None);
    let customer = installation.api(&format!("{}@example.com", unique("mover-")), "customer");
    let operator = installation.api(&format!("{}@example.com", unique("op-")), "operator");
    customer.wait_until_serving().await;
    let domain = format!("{}.example", unique("move-"));
    let filled = filled_instance(&installation, &customer, &domain, 11).await;
    assert_eq!(cluster_of(&installation, &filled.instance).await, "local");
    let source = installation
        .database_server_of(&filled.instance)
        .await
        .unwrap();
    installation.add_second_cluster();

    let path = format!("/api/v1/instances/{}/migrate", filled.instance);
    let (status, problem) = customer
        .call(Method::POST, &path, Some(json!({"cluster": "local-b"})))
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (403, Some("operators_only"))
    );
    // Another tenant learns nothing of the instance: not even that its id exists.
    let stranger = installation.api(&format!("{}@example.com", unique("other-")), "customer");
    let (status, problem) = stranger
        .call(Method::POST, &path, Some(json!({"cluster": "local-b"})))
        .await;
    assert_eq!((status, problem["code"].as_str()), (404, Some("not_found")));
    let (status, problem) = stranger
        .call(
            Method::POST,
            &format!("/api/v1/instances/{}/suspend", filled.instance),
            None,
        )
        .await;
    assert_eq!((status, problem["code"].as_str()), (404, Some("not_found")));
    let (status, problem) = operator
        .call(Method::POST, &path, Some(json!({"cluster": "nowhere"})))
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (422, Some("unknown_target"))
    );
    let (status, problem) = operator
        .call(Method::POST, &path, Some(json!({"cluster": "local"})))
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (409, Some("invalid_target"))
    );

    let body = migrate(&operator, &filled.instance, json!({"cluster": "local-b"})).await;
    let operation_id = body["operation"]["id"].as_str().unwrap();
    let operation = operator
        .wait_for_operation(operation_id, MOVE_DEADLINE)
        .await;
    assert_eq!(operation["state"], "succeeded", "{operation}");
    let freeze = operation["details"]["freeze_seconds"].as_f64().unwrap();
    assert!(freeze > 0.0 && freeze < 60.0, "{operation}");
    assert!(operation["details"]["database_bytes"].as_u64().unwrap() > 0);
    assert_eq!(
        operation["details"]["to_database_server"],
        json!(
            installation
                .database_server_of(&filled.instance)
                .await
                .unwrap()
                .id
        )
    );

    assert_moved(&installation, &operator, &filled, &source).await;
    assert_eq!(
        published(&installation, "instance.migrated", &filled.instance).await,
        1
    );

    // The customer's own view: the same server, running, nothing to do.
    let (status, shown) = customer
        .call(
            Method::GET,
            &format!("/api/v1/instances/{}", filled.instance),
            None,
        )
        .await;
    assert_eq!((status, shown["state"].as_str()), (200, Some("running")));
    installation.drop_database().await;
}

#[tokio::test]
async fn a_moving_instance_refuses_other_changes_and_its_deletion_until_the_move_ends() {
    let installation = Installation::new().await;
    installation.set_up_fleet();
    let _server = installation.serve(None);
    let customer = installation.api(&format!("{}@example.com", unique("mover-")), "customer");
    let operator = installation.api(&format!("{}@example.com", unique("op-")), "operator");
    customer.wait_until_serving().await;
    let instance = running_instance(&customer, &format!("{}.example", unique("busy-"))).await;
    let source = installation.database_server_of(&instance).await.unwrap();
    installation.add_second_cluster();

    let body = migrate(&operator, &instance, json!({"cluster": "local-b"})).await;
    let moving = body["operation"]["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/instances/{instance}");
    // Each of these would fight the move, or (the deletion) leave one side
    // of it behind: each is refused, naming the move, and changes nothing.
    assert_waits_for(customer.call(Method::DELETE, &path, None).await, &moving);
    for action in ["suspend", "resume"] {
        let answer = operator
            .call(Method::POST, &format!("{path}/{action}"), None)
            .await;
        assert_waits_for(answer, &moving);
    }
    let answer = operator
        .call(
            Method::PATCH,
            &path,
            Some(json!({"scaling": {"web_replicas": 2}})),
        )
        .await;
    assert_waits_for(answer, &moving);
    let answer = operator
        .call(
            Method::POST,
            &format!("{path}/migrate"),
            Some(json!({"cluster": "local"})),
        )
        .await;
    assert_waits_for(answer, &moving);
    let operations: i64 = installation
        .sql()
        .await
        .query_one(
            "SELECT count(*) FROM operations WHERE instance_id::text = $1",
            &[&instance],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(operations, 2, "the provisioning and the move only");
    let (_, shown) = operator.call(Method::GET, &path, None).await;
    assert_eq!(shown["state"], "updating", "{shown}");

    operator.assert_succeeds(&moving, MOVE_DEADLINE).await;
    assert_eq!(cluster_of(&installation, &instance).await, "local-b");
    let target = installation.database_server_of(&instance).await.unwrap();

    // Once moved, the deletion goes through and leaves nothing on either side.
    let (status, body) = customer.call(Method::DELETE, &path, None).await;
    assert_eq!(status, 202, "{body}");
    customer
        .assert_succeeds(body["operation"]["id"].as_str().unwrap(), MOVE_DEADLINE)
        .await;
    nothing_left_on(cluster_a().await, &instance, &source).await;
    nothing_left_on(cluster_b().await, &instance, &target).await;
    installation.drop_database().await;
}

#[tokio::test]
async fn a_move_to_another_object_store_copies_the_media_and_empties_the_old_bucket() {
    let installation = Installation::new().await;
    installation.set_up_fleet();
    let _server = installation.serve(None);
    let customer = installation.api(&format!("{}@example.com", unique("mover-")), "customer");
    let operator = installation.api(&format!("{}@example.com", unique("op-")), "operator");
    customer.wait_until_serving().await;
    let domain = format!("{}.example", unique("media-"));
    let filled = filled_instance(&installation, &customer, &domain, 13).await;
    let source = installation
        .database_server_of(&filled.instance)
        .await
        .unwrap();
    let other_server: String = installation
        .sql()
        .await
        .query_one(
            "SELECT name FROM database_servers WHERE id::text <> $1 ORDER BY name LIMIT 1",
            &[&source.id.to_string()],
        )
        .await
        .unwrap()
        .get(0);
    installation.add_second_cluster();

    let body = migrate(
        &operator,
        &filled.instance,
        json!({"cluster": "local-b", "database_server": other_server, "object_store": "local-b"}),
    )
    .await;
    let operation = operator
        .wait_for_operation(body["operation"]["id"].as_str().unwrap(), MOVE_DEADLINE)
        .await;
    assert_eq!(operation["state"], "succeeded", "{operation}");
    let details = &operation["details"];
    assert!(
        details["freeze_seconds"].as_f64().unwrap() > 0.0,
        "{details}"
    );
    assert!(
        details["media_objects_copied"].as_u64().unwrap() > 0,
        "{details}"
    );
    assert!(
        details["media_bytes_copied"].as_u64().unwrap() > 0,
        "{details}"
    );
    // Nothing wrote during the freeze: the delta finds nothing to copy.
    assert_eq!(details["media_delta_objects_copied"], 0, "{details}");

    let store: String = installation
        .sql()
        .await
        .query_one(
            "SELECT s.name FROM instances i JOIN object_stores s ON s.id = i.object_store_id \
             WHERE i.id::text = $1",
            &[&filled.instance],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(store, "local-b");
    // The media are checked on the new store's bucket.
    assert_moved(&installation, &operator, &filled, &source).await;
    let old_store = GarageAdmin::new(
        &stack_setting("HERD_GARAGE_ADMIN_URL"),
        stack_setting("HERD_GARAGE_ADMIN_TOKEN"),
    )
    .unwrap();
    let bucket = TenantNames::for_instance(&filled.instance).bucket;
    assert_eq!(old_store.find_bucket(&bucket).await.unwrap(), None);
    installation.drop_database().await;
}

#[tokio::test]
async fn a_move_killed_inside_the_write_freeze_completes_after_a_restart() {
    let installation = Installation::new().await;
    installation.set_up_fleet();
    let customer = installation.api(&format!("{}@example.com", unique("mover-")), "customer");
    let operator = installation.api(&format!("{}@example.com", unique("op-")), "operator");
    let filled = {
        let _server = installation.serve(None);
        customer.wait_until_serving().await;
        let domain = format!("{}.example", unique("crash-"));
        filled_instance(&installation, &customer, &domain, 12).await
    };
    let source = installation
        .database_server_of(&filled.instance)
        .await
        .unwrap();
    installation.add_second_cluster();

    let mut crashing = installation.serve(Some("migrate_instance/database/after-checkpoint"));
    operator.wait_until_serving().await;
    let body = migrate(&operator, &filled.instance, json!({"cluster": "local-b"})).await;
    let status = crashing.wait_for_exit(MOVE_DEADLINE);
    assert!(!status.success(), "the injected crash ended the process");
    drop(crashing);
    assert_eq!(cluster_of(&installation, &filled.instance).await, "local");

    let _server = installation.serve(None);
    operator.wait_until_serving().await;
    let operation = operator
        .wait_for_operation(body["operation"]["id"].as_str().unwrap(), MOVE_DEADLINE)
        .await;
    assert_eq!(operation["state"], "succeeded", "{operation}");
    assert!(operation["details"]["freeze_seconds"].as_f64().unwrap() > 0.0);
    assert_moved(&installation, &operator, &filled, &source).await;
    installation.drop_database().await;
}

#[tokio::test]
async fn a_drain_moves_every_instance_off_the_cluster_two_at_a_time() {
    let installation = Installation::new().await;
    installation.set_up_fleet();
    let _server = installation.serve(None);
    let customer = installation.api(&format!("{}@example.com", unique("drained-")), "customer");
    let operator = installation.api(&format!("{}@example.com", unique("op-")), "operator");
    customer.wait_until_serving().await;
    let mut instances = Vec::new();
    for _ in 0..3 {
        let domain = format!("{}.example", unique("drain-"));
        instances.push(running_instance(&customer, &domain).await);
    }
    installation.add_second_cluster();

    let (status, problem) = operator
        .call(
            Method::POST,
            "/api/v1/clusters/local/drain",
            Some(json!({"concurrency": 0})),
        )
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (422, Some("invalid_concurrency"))
    );
    let (status, drain) = operator
        .call(
            Method::POST,
            "/api/v1/clusters/local/drain",
            Some(json!({"concurrency": 2})),
        )
        .await;
    assert_eq!(status, 202, "{drain}");
    assert_eq!(drain["cluster"], "local");
    let (status, problem) = operator
        .call(
            Method::POST,
            "/api/v1/clusters/local/drain",
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (409, Some("invalid_target"))
    );

    // Nothing new lands on a cluster being drained.
    let newcomer = running_instance(&customer, &format!("{}.example", unique("new-"))).await;
    assert_eq!(cluster_of(&installation, &newcomer).await, "local-b");

    let path = format!("/api/v1/drains/{}", drain["id"].as_str().unwrap());
    let (status, problem) = customer.call(Method::GET, &path, None).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (403, Some("operators_only"))
    );
    let (status, problem) = customer
        .call(
            Method::POST,
            "/api/v1/clusters/local/drain",
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (403, Some("operators_only"))
    );
    let started = Instant::now();
    let mut most_at_once = 0;
    let drain = loop {
        let (status, drain) = operator.call(Method::GET, &path, None).await;
        assert_eq!(status, 200, "{drain}");
        most_at_once = most_at_once.max(drain["moves_running"].as_i64().unwrap());
        if drain["state"] != "running" {
            break drain;
        }
        assert!(started.elapsed() < MOVE_DEADLINE * 2, "{drain}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(drain["state"], "succeeded", "{drain}");
    assert_eq!(drain["instances_left"], 0);
    assert_eq!(drain["moves_done"], 3);
    assert!(most_at_once <= 2, "{most_at_once} moves at once");
    for instance in &instances {
        assert_eq!(cluster_of(&installation, instance).await, "local-b");
        let (_, shown) = operator
            .call(Method::GET, &format!("/api/v1/instances/{instance}"), None)
            .await;
        assert_eq!(shown["state"], "running", "{shown}");
    }
    let namespaces: kube::Api<Namespace> = kube::Api::all(cluster_a().await);
    for instance in &instances {
        let name = herd_kube::children::namespace_name(instance);
        let started = Instant::now();
        while namespaces.get_opt(&name).await.unwrap().is_some() {
            assert!(started.elapsed() < MOVE_DEADLINE, "{name} stays on local");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    installation.drop_database().await;
}
