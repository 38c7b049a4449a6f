//! Fleet upgrades in waves through `herd serve` on the real local stack: an
//! upgrade whose wave fails past the bound pauses by itself with the
//! reason; once the cause is gone, resuming retries the failed members and
//! finishes every wave; pause and abort by hand stop a second upgrade; each
//! step is in the audit trail; customers are refused (`403 operators_only`).

mod support;

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use support::stages::NeverReady;
use support::{Api, Installation, unique};

const FROM: &str = "4.4.8";
const TO: &str = "4.5.2";
const PROVISIONING: Duration = Duration::from_secs(240);
const UPGRADING: Duration = Duration::from_secs(420);

async fn order(customer: &Api, version: &str) -> (String, String) {
    let domain = format!("{}.example.social", unique("wave-"));
    let (status, body) = customer
        .call(
            Method::POST,
            "/api/v1/instances",
            Some(json!({"domain": domain, "plan": "small",
                        "owner_email": "owner@example.org", "version": version})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = |value: &Value| value.as_str().unwrap().to_owned();
    (id(&body["instance"]["id"]), id(&body["operation"]["id"]))
}

/// Polls the upgrade until `done` holds, returning it.
async fn wait_for(operator: &Api, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let (status, upgrade) = operator
            .call(Method::GET, &format!("/api/v1/fleet/upgrades/{id}"), None)
            .await;
        assert_eq!(status, 200, "{upgrade}");
        if done(&upgrade) {
            return upgrade;
        }
        assert!(
            started.elapsed() < UPGRADING,
            "the upgrade never {what}: {upgrade:#}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn members_in(upgrade: &Value, state: &str) -> Vec<String> {
    upgrade["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|member| member["state"] == state)
        .map(|member| member["instance_id"].as_str().unwrap().to_owned())
        .collect()
}

fn wave_counts(upgrade: &Value) -> Vec<[u64; 5]> {
    upgrade["waves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|wave| {
            ["pending", "upgrading", "succeeded", "failed", "skipped"]
                .map(|state| wave[state].as_u64().unwrap())
        })
        .collect()
}

async fn version_of(operator: &Api, instance: &str) -> (String, String) {
    let (_, body) = operator
        .call(Method::GET, &format!("/api/v1/instances/{instance}"), None)
        .await;
    (
        body["state"].as_str().unwrap().to_owned(),
        body["version"].as_str().unwrap().to_owned(),
    )
}

async fn audit_trail(installation: &Installation, upgrade: &str) -> Vec<(String, String)> {
    let client = installation.sql().await;
    client
        .query(
            "SELECT action, actor FROM audit_log
              WHERE object_kind = 'fleet_upgrade' AND object_id = $1 ORDER BY id",
            &[&upgrade],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

#[tokio::test]
async fn a_wave_past_the_failure_bound_pauses_and_resuming_finishes_the_upgrade() {
    let installation = Installation::new().await;
    installation.set_up_fleet();
    let _server = installation.serve(None);
    let customer = installation.api(&format!("{}@example.com", unique("tenant-")), "customer");
    customer.wait_until_serving().await;
    let operator = installation.api(&format!("{}@example.com", unique("op-")), "operator");

    let (status, problem) = customer
        .call(Method::GET, "/api/v1/fleet/upgrades", None)
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (403, Some("operators_only")),
        "the fleet is no customer's business"
    );

    let mut instances = Vec::new();
    let mut operations = Vec::new();
    for _ in 0..6 {
        let (instance, operation) = order(&customer, FROM).await;
        instances.push(instance);
        operations.push(operation);
    }
    let (newer, newer_operation) = order(&customer, TO).await;
    for operation in operations.iter().chain([&newer_operation]) {
        customer.assert_succeeds(operation, PROVISIONING).await;
    }

    let refused = [
        (
            json!({"from": "4.3.0", "to": TO, "wave_size": 2, "max_failure_ratio": 0.25}),
            "upgrade_refused",
        ),
        (
            json!({"from": FROM, "to": TO, "wave_size": 0, "max_failure_ratio": 0.25}),
            "invalid_waves",
        ),
        (
            json!({"from": FROM, "to": TO, "wave_size": 2, "max_failure_ratio": 1.5}),
            "invalid_waves",
        ),
        (
            json!({"from": FROM, "to": TO, "wave_size": 2, "max_failure_ratio": 0.25,
                   "rollout_timeout_seconds": 1}),
            "invalid_rollout_timeout",
        ),
        (
            json!({"from": "4.4.7", "to": TO, "wave_size": 2, "max_failure_ratio": 0.25}),
            "no_instances",
        ),
    ];
    for (request, code) in refused {
        let (status, problem) = operator
            .call(Method::POST, "/api/v1/fleet/upgrades", Some(request))
            .await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (422, Some(code)),
            "{problem}"
        );
    }

    // The canary goes alone; wave 1 holds the second and third instance,
    // both made to fail: 2 of 3 finished upgrades failed, past 25%.
    let failing: Vec<String> = instances[1..3].to_vec();
    let new_image = [format!("ghcr.io/mastodon/mastodon:v{TO}")];
    let mut stages = Vec::new();
    for instance in &failing {
        let namespace = herd_kube::children::namespace_name(instance);
        stages.push(NeverReady::create(&namespace, &new_image).await);
    }
    let request = json!({"from": FROM, "to": TO, "canary": 1, "wave_size": 2,
                         "max_failure_ratio": 0.25, "rollout_timeout_seconds": 15});
    let (status, upgrade) = operator
        .call(
            Method::POST,
            "/api/v1/fleet/upgrades",
            Some(request.clone()),
        )
        .await;
    assert_eq!(status, 202, "{upgrade}");
    let id = upgrade["id"].as_str().unwrap().to_owned();
    let planned: Vec<String> = upgrade["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|member| member["instance_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        planned, instances,
        "members are the instances on {FROM}, oldest first"
    );
    assert!(!planned.contains(&newer));
    assert_eq!(
        wave_counts(&upgrade)
            .iter()
            .map(|wave| wave.iter().sum())
            .collect::<Vec<u64>>(),
        vec![1, 2, 2, 1]
    );
    let (status, problem) = operator
        .call(Method::POST, "/api/v1/fleet/upgrades", Some(request))
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (409, Some("upgrade_in_progress"))
    );
    let (status, problem) = customer
        .call(
            Method::POST,
            &format!("/api/v1/fleet/upgrades/{id}/abort"),
            None,
        )
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (403, Some("operators_only"))
    );

    let paused = wait_for(&operator, &id, "paused", |upgrade| {
        upgrade["state"] == "paused"
    })
    .await;
    assert_eq!(
        paused["paused_reason"],
        "2 of 3 upgraded instances failed (67%), more than the bound of 25%"
    );
    assert_eq!(
        wave_counts(&paused),
        vec![
            [0, 0, 1, 0, 0],
            [0, 0, 0, 2, 0],
            [2, 0, 0, 0, 0],
            [1, 0, 0, 0, 0]
        ],
        "{paused:#}"
    );
    assert_eq!(paused["current_wave"], 2, "the next wave to start");
    let mut failed = members_in(&paused, "failed");
    failed.sort();
    let mut expected = failing.clone();
    expected.sort();
    assert_eq!(failed, expected);
    for member in paused["members"].as_array().unwrap() {
        let instance = member["instance_id"].as_str().unwrap();
        let (state, version) = version_of(&operator, instance).await;
        match member["state"].as_str().unwrap() {
            "failed" => {
                assert_eq!((state.as_str(), version.as_str()), ("running", FROM));
                let operation = operator
                    .wait_for_operation(member["operation_id"].as_str().unwrap(), UPGRADING)
                    .await;
                assert!(
                    operation["error"]
                        .as_str()
                        .unwrap()
                        .starts_with("rolled back:"),
                    "{operation}"
                );
            }
            "succeeded" => assert_eq!((state.as_str(), version.as_str()), ("running", TO)),
            _ => assert_eq!((state.as_str(), version.as_str()), ("running", FROM)),
        }
    }
    let (status, problem) = operator
        .call(
            Method::POST,
            &format!("/api/v1/fleet/upgrades/{id}/pause"),
            None,
        )
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (409, Some("invalid_state"))
    );

    for stage in stages {
        stage.delete().await;
    }
    let (status, resumed) = operator
        .call(
            Method::POST,
            &format!("/api/v1/fleet/upgrades/{id}/resume"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{resumed}");
    assert_eq!(resumed["state"], "running");
    assert_eq!(
        members_in(&resumed, "failed"),
        Vec::<String>::new(),
        "failed members are retried"
    );
    let completed = wait_for(&operator, &id, "completed", |upgrade| {
        upgrade["state"] != "running"
    })
    .await;
    assert_eq!(completed["state"], "completed", "{completed:#}");
    assert_eq!(members_in(&completed, "succeeded").len(), 6);
    assert!(completed["finished_at"].is_string());
    for instance in &instances {
        assert_eq!(
            version_of(&operator, instance).await,
            ("running".to_owned(), TO.to_owned())
        );
    }

    let trail = audit_trail(&installation, &id).await;
    let actions: Vec<&str> = trail.iter().map(|(action, _)| action.as_str()).collect();
    for action in [
        "fleet_upgrade.start",
        "fleet_upgrade.wave_start",
        "fleet_upgrade.wave_finish",
        "fleet_upgrade.pause",
        "fleet_upgrade.resume",
        "fleet_upgrade.complete",
    ] {
        assert!(actions.contains(&action), "{action} missing from {trail:?}");
    }
    let actor = |wanted: &str| {
        trail
            .iter()
            .find(|(action, _)| action == wanted)
            .map(|(_, actor)| actor.as_str())
    };
    assert_eq!(
        actor("fleet_upgrade.pause"),
        Some("fleet-upgrade"),
        "paused by itself"
    );
    assert_eq!(actor("fleet_upgrade.resume"), Some("account"));
    // Waves: the canary, wave 1, wave 1 again (its retries), 2 and 3.
    assert_eq!(
        actions
            .iter()
            .filter(|a| **a == "fleet_upgrade.wave_start")
            .count(),
        5
    );
    let client = installation.sql().await;
    let upgraded: i64 = client
        .query_one(
            "SELECT count(*) FROM audit_log WHERE action = 'instance.upgrade' AND actor = 'fleet-upgrade'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        upgraded, 8,
        "six upgrades and two retries, each audited on its instance"
    );

    // A second upgrade, paused and then aborted by hand.
    let request = json!({"from": TO, "to": "4.5.3", "canary": 0, "wave_size": 1,
                         "max_failure_ratio": 0.0, "rollout_timeout_seconds": 15});
    let (status, second) = operator
        .call(Method::POST, "/api/v1/fleet/upgrades", Some(request))
        .await;
    assert_eq!(status, 202, "{second}");
    let second_id = second["id"].as_str().unwrap().to_owned();
    assert_eq!(
        second["members"].as_array().unwrap().len(),
        7,
        "with the instance ordered on {TO}"
    );
    let (status, paused) = operator
        .call(
            Method::POST,
            &format!("/api/v1/fleet/upgrades/{second_id}/pause"),
            None,
        )
        .await;
    assert_eq!(
        (status, paused["state"].as_str()),
        (200, Some("paused")),
        "{paused}"
    );
    assert_eq!(paused["paused_reason"], "paused by an operator");
    let (status, aborted) = operator
        .call(
            Method::POST,
            &format!("/api/v1/fleet/upgrades/{second_id}/abort"),
            None,
        )
        .await;
    assert_eq!(
        (status, aborted["state"].as_str()),
        (200, Some("aborted")),
        "{aborted}"
    );
    let settled = wait_for(&operator, &second_id, "settled", |upgrade| {
        members_in(upgrade, "upgrading").is_empty() && members_in(upgrade, "pending").is_empty()
    })
    .await;
    assert_eq!(settled["state"], "aborted");
    let upgraded = members_in(&settled, "succeeded");
    assert!(
        members_in(&settled, "skipped").len() >= 6,
        "at most the first wave started before the pause: {settled:#}"
    );
    for instance in instances.iter().chain([&newer]) {
        let expected = if upgraded.contains(instance) {
            "4.5.3"
        } else {
            TO
        };
        let (_, version) = version_of(&operator, instance).await;
        assert_eq!(version, expected);
    }
    let (status, problem) = operator
        .call(
            Method::POST,
            &format!("/api/v1/fleet/upgrades/{second_id}/resume"),
            None,
        )
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (409, Some("invalid_state"))
    );
    let actions: Vec<String> = audit_trail(&installation, &second_id)
        .await
        .into_iter()
        .map(|(action, _)| action)
        .collect();
    for action in [
        "fleet_upgrade.start",
        "fleet_upgrade.pause",
        "fleet_upgrade.abort",
    ] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} missing from {actions:?}"
        );
    }

    let (status, list) = operator
        .call(Method::GET, "/api/v1/fleet/upgrades", None)
        .await;
    assert_eq!(status, 200);
    let listed: Vec<&str> = list["upgrades"]
        .as_array()
        .unwrap()
        .iter()
        .map(|upgrade| upgrade["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        vec![second_id.as_str(), id.as_str()],
        "newest first"
    );
    installation.drop_database().await;
}

#[tokio::test]
async fn a_driver_killed_around_a_wave_start_starts_no_member_twice() {
    let installation = Installation::new().await;
    installation.set_up_fleet();
    let customer = installation.api(&format!("{}@example.com", unique("tenant-")), "customer");
    let operator = installation.api(&format!("{}@example.com", unique("op-")), "operator");
    let mut instances = Vec::new();
    {
        let _server = installation.serve(None);
        customer.wait_until_serving().await;
        let mut operations = Vec::new();
        for _ in 0..3 {
            let (instance, operation) = order(&customer, FROM).await;
            instances.push(instance);
            operations.push(operation);
        }
        for operation in &operations {
            customer.assert_succeeds(operation, PROVISIONING).await;
        }
    }

    let mut upgrade_id = None;
    for point in [
        "fleet_upgrade/wave_start/before-checkpoint",
        "fleet_upgrade/wave_start/after-checkpoint",
    ] {
        let mut server = installation.serve(Some(point));
        operator.wait_until_serving().await;
        if upgrade_id.is_none() {
            let request = json!({"from": FROM, "to": TO, "canary": 1, "wave_size": 2,
                                 "max_failure_ratio": 0.0, "rollout_timeout_seconds": 60});
            let (status, upgrade) = operator
                .call(Method::POST, "/api/v1/fleet/upgrades", Some(request))
                .await;
            assert_eq!(status, 202, "{upgrade}");
            upgrade_id = Some(upgrade["id"].as_str().unwrap().to_owned());
        }
        let status = server.wait_for_exit(Duration::from_secs(90));
        assert!(
            !status.success(),
            "herd was to crash at {point} but exited with {status}"
        );
    }

    let id = upgrade_id.unwrap();
    let _server = installation.serve(None);
    operator.wait_until_serving().await;
    let done = wait_for(&operator, &id, "ended", |upgrade| {
        upgrade["state"] != "running"
    })
    .await;
    assert_eq!(done["state"], "completed", "{done:#}");
    assert_eq!(members_in(&done, "succeeded").len(), 3);
    let client = installation.sql().await;
    for instance in &instances {
        assert_eq!(
            version_of(&operator, instance).await,
            ("running".to_owned(), TO.to_owned())
        );
        let started: i64 = client
            .query_one(
                "SELECT count(*) FROM audit_log WHERE action = 'instance.upgrade' AND object_id = $1",
                &[instance],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(started, 1, "the upgrade of {instance} started once");
    }
    let wave_starts = audit_trail(&installation, &id)
        .await
        .into_iter()
        .filter(|(action, _)| action == "fleet_upgrade.wave_start")
        .count();
    assert_eq!(wave_starts, 2, "the canary and one wave");
    installation.drop_database().await;
}
