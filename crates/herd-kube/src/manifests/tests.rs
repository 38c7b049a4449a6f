use std::collections::{BTreeMap, BTreeSet};

use herd_core::plan::{Plan, starter_plans};
use herd_core::spec::{DatabaseEndpoint, InstanceSpec, ObjectStoreEndpoint};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PodSpec, ResourceQuota, Secret};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Resource;
use serde::de::DeserializeOwned;

use super::*;
use crate::children::LABEL_COMPONENT;
use crate::crd::MastodonInstanceSpec;

const OWNER_EMAIL: &str = "alice+admin@example.org";

fn plan(name: &str) -> Plan {
    starter_plans()
        .into_iter()
        .find(|plan| plan.name == name)
        .expect("a starter plan")
}

fn instance(plan_name: &str) -> MastodonInstance {
    let mut instance = MastodonInstance::new(
        "0193a5c2-7f1e-7c3a-9d2e-4b5f6a7b8c9d",
        MastodonInstanceSpec {
            instance: InstanceSpec {
                instance_id: "0193a5c27f1e".into(),
                local_domain: "example.social".into(),
                web_domain: "social.example.social".into(),
                version: "4.5.2".into(),
                owner_email: OWNER_EMAIL.into(),
                plan: plan(plan_name),
                suspended: false,
                origin: Default::default(),
                database: DatabaseEndpoint {
                    host: "10.20.0.5".into(),
                    port: 5432,
                    name: "mi_0193a5c27f1e".into(),
                    user: "mi_0193a5c27f1e".into(),
                },
                object_store: ObjectStoreEndpoint {
                    endpoint: "https://s3.fleet.example.net:3900".into(),
                    region: "garage".into(),
                    bucket: "mi-0193a5c27f1e-media".into(),
                },
                migration: None,
            },
        },
    );
    instance.metadata.uid = Some("5a1d7c0e-2b3f-4e8a-9c6d-1f2e3a4b5c6d".into());
    instance
}

fn secrets() -> InstanceSecrets {
    InstanceSecrets {
        env: [
            ("SECRET_KEY_BASE", "c2VjcmV0LWtleS1iYXNlLXZhbHVl"),
            ("VAPID_PRIVATE_KEY", "vapid-private-value"),
            ("VAPID_PUBLIC_KEY", "vapid-public-value"),
            ("ACTIVE_RECORD_ENCRYPTION_PRIMARY_KEY", "ar-primary-value"),
            ("DB_PASS", "database-password-value"),
            ("AWS_ACCESS_KEY_ID", "GK0123456789abcdef"),
            ("AWS_SECRET_ACCESS_KEY", "s3-secret-access-value"),
            ("REDIS_PASSWORD", "redis-password-value"),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect(),
    }
}

fn children_of(instance: &MastodonInstance) -> Vec<Child> {
    desired_children(instance, &secrets(), &ClusterProfile::default())
}

fn typed<K: Resource<DynamicType = ()> + DeserializeOwned>(children: &[Child]) -> Vec<K> {
    children
        .iter()
        .filter(|child| child.resource.kind == K::kind(&()))
        .map(|child| {
            serde_json::from_value(serde_json::to_value(&child.object).unwrap())
                .expect("a child parses as its kind")
        })
        .collect()
}

fn named<K: Resource<DynamicType = ()> + DeserializeOwned>(children: &[Child], name: &str) -> K {
    typed::<K>(children)
        .into_iter()
        .find(|object| object.meta().name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no {} named {name}", K::kind(&())))
}

/// Every pod the builders define, with the name of what defines it.
fn pod_specs(children: &[Child]) -> Vec<(String, PodSpec)> {
    let deployments = typed::<Deployment>(children)
        .into_iter()
        .map(|d| (d.metadata.name.unwrap(), d.spec.template.spec.unwrap()));
    let jobs = typed::<Job>(children).into_iter().map(|j| {
        (
            j.metadata.name.unwrap(),
            j.spec.unwrap().template.spec.unwrap(),
        )
    });
    deployments.chain(jobs).collect()
}

fn env_value(pod: &PodSpec, name: &str) -> Option<String> {
    pod.containers[0]
        .env
        .iter()
        .flatten()
        .find(|var| var.name == name)
        .and_then(|var| var.value.clone())
}

fn assert_hardened(name: &str, pod: &PodSpec) {
    let context = pod.security_context.as_ref().expect(name);
    assert_eq!(context.run_as_non_root, Some(true), "{name}");
    assert!(context.run_as_user.is_some_and(|uid| uid > 0), "{name}");
    assert_eq!(
        context.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
        Some("RuntimeDefault"),
        "{name}"
    );
    assert_eq!(pod.automount_service_account_token, Some(false), "{name}");
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("mastodon"),
        "{name}"
    );
    assert!(pod.tolerations.is_none(), "{name}");
    let mounted: BTreeSet<&str> = pod
        .volumes
        .iter()
        .flatten()
        .map(|volume| {
            assert!(volume.empty_dir.is_some(), "{name}: only emptyDirs");
            volume.name.as_str()
        })
        .collect();
    for container in pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
    {
        let what = format!("{name}/{}", container.name);
        let security = container.security_context.as_ref().expect(&what);
        assert_eq!(security.allow_privilege_escalation, Some(false), "{what}");
        assert_eq!(security.run_as_non_root, Some(true), "{what}");
        assert_eq!(security.read_only_root_filesystem, Some(true), "{what}");
        assert!(security.privileged.is_none(), "{what}");
        let capabilities = security.capabilities.as_ref().expect(&what);
        assert_eq!(
            capabilities.drop.as_deref(),
            Some(&["ALL".to_owned()][..]),
            "{what}"
        );
        assert!(capabilities.add.is_none(), "{what}");
        let resources = container.resources.as_ref().expect(&what);
        let requests = resources.requests.as_ref().expect(&what);
        assert!(
            requests.contains_key("cpu") && requests.contains_key("memory"),
            "{what}"
        );
        assert_eq!(resources.requests, resources.limits, "{what}");
        let tmp = container
            .volume_mounts
            .iter()
            .flatten()
            .find(|mount| mount.mount_path == "/tmp")
            .unwrap_or_else(|| panic!("{what}: /tmp is writable"));
        assert!(mounted.contains(tmp.name.as_str()), "{what}");
    }
}

#[test]
fn namespace_enforces_restricted_and_is_owned_by_the_instance() {
    let instance = instance("small");
    let children = children_of(&instance);
    assert_eq!(children[0].resource.kind, "Namespace", "applied first");
    let namespace = named::<Namespace>(&children, "mi-0193a5c27f1e");
    let labels = namespace.metadata.labels.unwrap();
    for mode in ["enforce", "audit", "warn"] {
        assert_eq!(
            labels[&format!("pod-security.kubernetes.io/{mode}")],
            "restricted"
        );
    }
    let owners = namespace.metadata.owner_references.unwrap();
    assert_eq!(owners, [owner_reference(&instance)]);
    assert_eq!(owners[0].kind, "MastodonInstance");
    assert_eq!(owners[0].api_version, "hosting.herd.dev/v1alpha1");
    assert_eq!(owners[0].uid, "5a1d7c0e-2b3f-4e8a-9c6d-1f2e3a4b5c6d");
    assert_eq!(owners[0].controller, Some(true));

    let mut unsaved = instance.clone();
    unsaved.metadata.uid = None;
    let namespace = named::<Namespace>(&children_of(&unsaved), "mi-0193a5c27f1e");
    assert!(namespace.metadata.owner_references.is_none());
}

#[test]
fn quota_matches_the_plan() {
    for plan in starter_plans() {
        let children = children_of(&instance(&plan.name));
        let quota = named::<ResourceQuota>(&children, "quota");
        let hard = quota.spec.unwrap().hard.unwrap();
        let get = |key: &str| hard[key].0.clone();
        let expected = plan.quota();
        assert_eq!(get("requests.cpu"), format!("{}m", expected.cpu_millis));
        assert_eq!(get("limits.cpu"), format!("{}m", expected.cpu_millis));
        assert_eq!(get("requests.memory"), format!("{}Mi", expected.memory_mib));
        assert_eq!(get("limits.memory"), format!("{}Mi", expected.memory_mib));
        assert_eq!(get("pods"), plan.max_pods().to_string());
        assert_eq!(
            get("requests.storage"),
            format!("{}Gi", plan.volume_storage_gib)
        );
        assert_eq!(get("persistentvolumeclaims"), "1");
    }
}

/// The CPU limit of a pod's first container, in millicores.
fn cpu_limit_millis(pod: &PodSpec) -> u32 {
    let limits = pod.containers[0]
        .resources
        .as_ref()
        .unwrap()
        .limits
        .as_ref()
        .unwrap();
    limits["cpu"].0.trim_end_matches('m').parse().unwrap()
}

#[test]
fn workloads_fit_the_quota_at_their_largest_scale() {
    for plan in starter_plans() {
        let children = children_of(&instance(&plan.name));
        let largest: u32 = typed::<Deployment>(&children)
            .iter()
            .map(|deployment| {
                let name = deployment.metadata.name.as_deref().unwrap();
                let replicas = match name.strip_prefix("sidekiq-") {
                    Some(group) => {
                        plan.sidekiq
                            .iter()
                            .find(|g| g.name == group)
                            .unwrap()
                            .max_replicas
                    }
                    None => deployment.spec.replicas.unwrap() as u32,
                };
                replicas * cpu_limit_millis(deployment.spec.template.spec.as_ref().unwrap())
            })
            .sum();
        let job = &pod_specs(&children)
            .into_iter()
            .find(|(n, _)| n == "setup")
            .unwrap()
            .1;
        assert_eq!(
            largest + cpu_limit_millis(job),
            plan.quota().cpu_millis,
            "{}",
            plan.name
        );
    }
}

fn contains_v4(cidr: &str, address: [u8; 4]) -> bool {
    let (base, bits) = cidr.split_once('/').unwrap();
    let base: std::net::Ipv4Addr = base.parse().unwrap();
    let bits: u32 = bits.parse().unwrap();
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    u32::from(base) & mask == u32::from_be_bytes(address) & mask
}

#[test]
fn network_policies_deny_by_default_and_keep_private_ranges_out() {
    let children = children_of(&instance("small"));
    let policies = typed::<NetworkPolicy>(&children);
    let deny = named::<NetworkPolicy>(&children, "default-deny")
        .spec
        .unwrap();
    assert_eq!(
        deny.pod_selector,
        Some(Default::default()),
        "selects every pod"
    );
    assert_eq!(deny.policy_types.unwrap(), ["Ingress", "Egress"]);
    assert!(deny.ingress.is_none() && deny.egress.is_none());

    let dns = named::<NetworkPolicy>(&children, "allow-dns").spec.unwrap();
    let dns_json = serde_json::to_string(&dns).unwrap();
    assert!(dns_json.contains(r#""kubernetes.io/metadata.name":"kube-system""#));
    assert!(dns_json.contains(r#""protocol":"UDP""#) && dns_json.contains(r#""port":53"#));

    let from_ingress = named::<NetworkPolicy>(&children, "allow-ingress-controller")
        .spec
        .unwrap();
    let json = serde_json::to_string(&from_ingress).unwrap();
    assert!(json.contains(r#""kubernetes.io/metadata.name":"ingress-nginx""#));
    assert!(json.contains(r#""port":3000"#) && json.contains(r#""port":4000"#));

    let egress = named::<NetworkPolicy>(&children, "allow-mastodon-egress")
        .spec
        .unwrap();
    let blocks: Vec<_> = egress
        .egress
        .iter()
        .flatten()
        .flat_map(|rule| rule.to.iter().flatten())
        .filter_map(|peer| peer.ip_block.clone())
        .collect();
    let v4 = blocks
        .iter()
        .find(|b| b.cidr == "0.0.0.0/0")
        .expect("IPv4 internet");
    let v4_except = v4.except.clone().unwrap();
    for private in [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "127.0.0.0/8",
    ] {
        assert!(v4_except.contains(&private.to_owned()), "{private}");
    }
    assert!(
        v4_except
            .iter()
            .any(|c| contains_v4(c, [169, 254, 169, 254])),
        "metadata address"
    );
    let v6 = blocks
        .iter()
        .find(|b| b.cidr == "::/0")
        .expect("IPv6 internet");
    assert!(
        v6.except
            .iter()
            .flatten()
            .all(|c| !c.starts_with("::ffff:")),
        "the API refuses IPv4-mapped ranges in an ipBlock"
    );
    for private in ["fc00::/7", "fe80::/10", "::1/128"] {
        assert!(
            v6.except.as_ref().unwrap().contains(&private.to_owned()),
            "{private}"
        );
    }
    // Nothing else in the namespace's policies opens a private range.
    for policy in &policies {
        for peer in policy
            .spec
            .iter()
            .flat_map(|s| s.egress.iter().flatten())
            .flat_map(|r| r.to.iter().flatten())
        {
            if let Some(block) = &peer.ip_block {
                assert!(
                    block.cidr == "0.0.0.0/0" || block.cidr == "::/0",
                    "{}",
                    block.cidr
                );
            }
        }
    }
    let redis = named::<NetworkPolicy>(&children, "allow-redis-ingress")
        .spec
        .unwrap();
    assert_eq!(redis.policy_types.unwrap(), ["Ingress"]);
    assert!(
        serde_json::to_string(&redis.ingress)
            .unwrap()
            .contains(r#""port":6379"#)
    );
}

#[test]
fn data_service_cidrs_open_only_the_service_ports() {
    let profile = ClusterProfile {
        data_service_cidrs: vec!["10.20.0.0/24".into()],
        ..ClusterProfile::default()
    };
    let without = children_of(&instance("small"));
    assert!(
        typed::<NetworkPolicy>(&without)
            .iter()
            .all(|p| p.metadata.name.as_deref() != Some("allow-data-services"))
    );
    let children = desired_children(&instance("small"), &secrets(), &profile);
    let policy = named::<NetworkPolicy>(&children, "allow-data-services")
        .spec
        .unwrap();
    let rule = &policy.egress.unwrap()[0];
    assert_eq!(
        rule.to.as_ref().unwrap()[0].ip_block.as_ref().unwrap().cidr,
        "10.20.0.0/24"
    );
    let ports: Vec<String> = rule
        .ports
        .iter()
        .flatten()
        .map(|p| serde_json::to_string(p.port.as_ref().unwrap()).unwrap())
        .collect();
    assert_eq!(ports, ["80", "443", "3900", "5432"]);
}

#[test]
fn scheduler_group_runs_one_replica_recreated() {
    for plan in starter_plans() {
        let children = children_of(&instance(&plan.name));
        let scheduler = named::<Deployment>(&children, "sidekiq-scheduler").spec;
        assert_eq!(scheduler.replicas, Some(1));
        assert_eq!(
            scheduler.strategy.unwrap().type_.as_deref(),
            Some("Recreate")
        );
        let default = named::<Deployment>(&children, "sidekiq-default").spec;
        assert_eq!(default.replicas, Some(plan.sidekiq[0].min_replicas as i32));
        assert!(default.strategy.is_none(), "rolling by default");
    }
}

#[test]
fn sidekiq_db_pool_covers_its_threads_and_queues_keep_weights() {
    for plan in starter_plans() {
        let children = children_of(&instance(&plan.name));
        for group in &plan.sidekiq {
            let name = format!("sidekiq-{}", group.name);
            let pod = named::<Deployment>(&children, &name)
                .spec
                .template
                .spec
                .unwrap();
            let command = pod.containers[0].command.clone().unwrap();
            assert_eq!(command[..4], ["bundle", "exec", "sidekiq", "-c"]);
            let threads: u32 = command[4].parse().unwrap();
            assert_eq!(threads, group.threads);
            assert_eq!(command[5..], group.queue_arguments()[..]);
            let pool: u32 = env_value(&pod, "DB_POOL").unwrap().parse().unwrap();
            assert!(
                pool >= threads,
                "{name}: DB_POOL {pool} < {threads} threads"
            );
        }
    }
}

#[test]
fn web_and_streaming_run_the_versioned_images_with_health_checks() {
    let children = children_of(&instance("medium"));
    let plan = plan("medium");
    let web = named::<Deployment>(&children, "web").spec;
    assert_eq!(web.replicas, Some(2));
    let pod = web.template.spec.unwrap();
    let container = &pod.containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some("ghcr.io/mastodon/mastodon:v4.5.2")
    );
    assert_eq!(
        container.command.as_deref().unwrap(),
        ["bundle", "exec", "puma", "-C", "config/puma.rb"]
    );
    assert_eq!(
        env_value(&pod, "WEB_CONCURRENCY"),
        Some(plan.web.concurrency.to_string())
    );
    assert_eq!(
        env_value(&pod, "MAX_THREADS"),
        Some(plan.web.threads.to_string())
    );
    assert_eq!(
        env_value(&pod, "DB_POOL"),
        Some(plan.web_db_pool().to_string())
    );
    let probe = container.readiness_probe.clone().unwrap().http_get.unwrap();
    assert_eq!(probe.path.as_deref(), Some("/health"));
    assert_eq!(container.ports.as_ref().unwrap()[0].container_port, 3000);

    let pod = named::<Deployment>(&children, "streaming")
        .spec
        .template
        .spec
        .unwrap();
    let container = &pod.containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some("ghcr.io/mastodon/mastodon-streaming:v4.5.2")
    );
    let probe = container.readiness_probe.clone().unwrap().http_get.unwrap();
    assert_eq!(probe.path.as_deref(), Some("/api/v1/streaming/health"));
    assert_eq!(container.ports.as_ref().unwrap()[0].container_port, 4000);
}

#[test]
fn redis_takes_only_its_password_from_the_secret() {
    let children = children_of(&instance("small"));
    let redis = named::<Deployment>(&children, "redis").spec;
    assert_eq!(redis.replicas, Some(1));
    let container = &redis.template.spec.unwrap().containers[0];
    assert!(container.env_from.is_none());
    let command = container.command.clone().unwrap();
    assert_eq!(
        command.last().map(String::as_str),
        Some("$(REDIS_PASSWORD)")
    );
    let env = &container.env.as_ref().unwrap()[0];
    let source = env
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (source.name.as_str(), source.key.as_str()),
        ("mastodon-env", "REDIS_PASSWORD")
    );
    assert!(env.value.is_none());
}

#[test]
fn suspension_scales_everything_to_zero() {
    let mut suspended = instance("large");
    suspended.spec.instance.suspended = true;
    let children = children_of(&suspended);
    let deployments = typed::<Deployment>(&children);
    assert!(deployments.len() >= 5);
    for deployment in deployments {
        assert_eq!(
            deployment.spec.replicas,
            Some(0),
            "{:?}",
            deployment.metadata.name
        );
    }
    assert_eq!(
        named::<Job>(&children, "setup").spec.unwrap().suspend,
        Some(true)
    );
    assert!(typed::<PodDisruptionBudget>(&children).is_empty());
}

#[test]
fn every_pod_is_hardened() {
    for plan in starter_plans() {
        let pods = pod_specs(&children_of(&instance(&plan.name)));
        assert_eq!(pods.len(), 3 + plan.sidekiq.len() + 1);
        for (name, pod) in &pods {
            assert_hardened(name, pod);
        }
    }
}

#[test]
fn mastodon_pods_read_the_config_map_and_secret() {
    for (name, pod) in pod_specs(&children_of(&instance("small"))) {
        if name == "redis" {
            continue;
        }
        for container in pod
            .containers
            .iter()
            .chain(pod.init_containers.iter().flatten())
        {
            let sources = container.env_from.clone().unwrap();
            assert_eq!(
                sources[0].config_map_ref.as_ref().unwrap().name,
                "mastodon-config"
            );
            assert_eq!(sources[1].secret_ref.as_ref().unwrap().name, "mastodon-env");
        }
    }
}

#[test]
fn disruption_budgets_only_for_several_replicas() {
    let small = children_of(&instance("small"));
    assert!(typed::<PodDisruptionBudget>(&small).is_empty());

    let children = children_of(&instance("large"));
    let budgets = typed::<PodDisruptionBudget>(&children);
    let names: BTreeSet<String> = budgets
        .iter()
        .map(|b| b.metadata.name.clone().unwrap())
        .collect();
    let several: BTreeSet<String> = typed::<Deployment>(&children)
        .into_iter()
        .filter(|d| d.spec.replicas.unwrap() > 1)
        .map(|d| d.metadata.name.unwrap())
        .collect();
    assert_eq!(names, several);
    assert!(names.contains("web") && names.contains("streaming"));
    for budget in budgets {
        let name = budget.metadata.name.clone().unwrap();
        let deployment = named::<Deployment>(&children, &name);
        let spec = budget.spec.unwrap();
        assert_eq!(spec.selector.as_ref(), Some(&deployment.spec.selector));
        assert!(spec.max_unavailable.is_some());
    }
}

#[test]
fn ingress_routes_streaming_and_web_with_tls() {
    let children = children_of(&instance("small"));
    let ingress = named::<Ingress>(&children, "web");
    assert_eq!(
        ingress.metadata.annotations.unwrap()["cert-manager.io/cluster-issuer"],
        "letsencrypt"
    );
    let spec = ingress.spec.unwrap();
    assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
    let tls = &spec.tls.unwrap()[0];
    assert_eq!(tls.hosts.as_deref().unwrap(), ["social.example.social"]);
    assert!(tls.secret_name.is_some());
    let rule = &spec.rules.unwrap()[0];
    assert_eq!(rule.host.as_deref(), Some("social.example.social"));
    let routes: BTreeMap<String, String> = rule
        .http
        .as_ref()
        .unwrap()
        .paths
        .iter()
        .map(|p| {
            (
                p.path.clone().unwrap(),
                p.backend.service.as_ref().unwrap().name.clone(),
            )
        })
        .collect();
    assert_eq!(routes["/api/v1/streaming"], "streaming");
    assert_eq!(routes["/"], "web");
}

#[test]
fn setup_job_passes_the_email_as_data_not_code() {
    let mut hostile = instance("small");
    hostile.spec.instance.owner_email = "x@example.org; rm -rf / #$(id)".into();
    let children = children_of(&hostile);
    let job = named::<Job>(&children, "setup").spec.unwrap();
    assert_eq!(job.backoff_limit, Some(2));
    assert!(job.ttl_seconds_after_finished.is_none());
    assert_eq!(job.suspend, Some(false));
    let pod = job.template.spec.unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    let init = &pod.init_containers.as_ref().unwrap()[0];
    assert_eq!(
        init.command.as_deref().unwrap(),
        ["bundle", "exec", "rails", "db:prepare"]
    );
    let owner = &pod.containers[0];
    let command = owner.command.clone().unwrap();
    assert_eq!(command[..4], ["bin/tootctl", "accounts", "create", "owner"]);
    assert!(command.contains(&"$(OWNER_EMAIL)".to_owned()));
    assert!(command.iter().all(|arg| !arg.contains("example.org")));
    assert!(
        !command
            .iter()
            .any(|arg| arg == "sh" || arg == "/bin/sh" || arg == "-c")
    );
    assert_eq!(
        env_value(&pod, "OWNER_EMAIL").as_deref(),
        Some("x@example.org; rm -rf / #$(id)")
    );
}

#[test]
fn an_imported_instance_migrates_and_rebuilds_its_feeds_instead_of_creating_an_owner() {
    let mut imported = instance("small");
    imported.spec.instance.origin = herd_core::spec::InstanceOrigin::Imported;
    let job = named::<Job>(&children_of(&imported), "setup").spec.unwrap();
    let pod = job.template.spec.unwrap();
    let init = &pod.init_containers.as_ref().unwrap()[0];
    assert_eq!(
        init.command.as_deref().unwrap(),
        ["bundle", "exec", "rails", "db:prepare"]
    );
    let commands: Vec<Vec<String>> = pod
        .containers
        .iter()
        .map(|c| c.command.clone().unwrap())
        .collect();
    assert_eq!(commands, [["bin/tootctl", "feeds", "build"]]);
    assert!(env_value(&pod, "OWNER_EMAIL").is_none());
}

#[test]
fn every_child_carries_the_ownership_labels_and_namespace() {
    let instance = instance("medium");
    let children = children_of(&instance);
    for child in &children {
        let what = format!("{} {}", child.resource.kind, child.name());
        let labels = child.object.metadata.labels.as_ref().expect(&what);
        assert_eq!(labels[LABEL_INSTANCE], "0193a5c27f1e", "{what}");
        assert_eq!(labels[LABEL_MANAGED_BY], "herd", "{what}");
        if child.resource.kind == "Namespace" {
            assert!(child.object.metadata.namespace.is_none());
            assert_eq!(child.name(), "mi-0193a5c27f1e");
        } else {
            assert_eq!(
                child.object.metadata.namespace.as_deref(),
                Some("mi-0193a5c27f1e"),
                "{what}"
            );
            assert!(child.object.metadata.owner_references.is_none(), "{what}");
        }
        if matches!(
            child.resource.kind.as_str(),
            "Deployment" | "Service" | "Job" | "PodDisruptionBudget"
        ) {
            assert!(labels.contains_key(LABEL_COMPONENT), "{what}");
        }
    }
}

#[test]
fn configuration_is_complete_and_secrets_stay_in_the_secret() {
    let children = children_of(&instance("small"));
    let config = named::<ConfigMap>(&children, "mastodon-config")
        .data
        .unwrap();
    for (key, value) in [
        ("LOCAL_DOMAIN", "example.social"),
        ("WEB_DOMAIN", "social.example.social"),
        ("RAILS_ENV", "production"),
        ("NODE_ENV", "production"),
        ("DB_HOST", "10.20.0.5"),
        ("DB_PORT", "5432"),
        ("DB_NAME", "mi_0193a5c27f1e"),
        ("DB_USER", "mi_0193a5c27f1e"),
        ("REDIS_HOST", "redis"),
        ("REDIS_PORT", "6379"),
        ("S3_ENABLED", "true"),
        ("S3_BUCKET", "mi-0193a5c27f1e-media"),
        ("S3_ENDPOINT", "https://s3.fleet.example.net:3900"),
        ("S3_REGION", "garage"),
        ("S3_PROTOCOL", "https"),
        ("S3_HOSTNAME", "s3.fleet.example.net:3900"),
        ("RAILS_SERVE_STATIC_FILES", "true"),
        ("STREAMING_API_BASE_URL", "wss://social.example.social"),
    ] {
        assert_eq!(config.get(key).map(String::as_str), Some(value), "{key}");
    }
    let secret = named::<Secret>(&children, "mastodon-env");
    let data = secret.data.unwrap();
    for (key, value) in &secrets().env {
        assert_eq!(data[key].0, value.as_bytes(), "{key}");
        assert!(!config.contains_key(key), "{key} in the ConfigMap");
        assert!(
            config.values().all(|v| !v.contains(value.as_str())),
            "{key}'s value in the ConfigMap"
        );
    }
    let rendered =
        serde_json::to_string(&named::<ConfigMap>(&children, "mastodon-config")).unwrap();
    assert!(!rendered.contains("password-value"));
}

#[test]
fn output_is_deterministic_and_names_are_unique_per_kind() {
    let instance = instance("large");
    let render = |children: Vec<Child>| -> Vec<serde_json::Value> {
        children
            .iter()
            .map(|c| serde_json::to_value(&c.object).unwrap())
            .collect()
    };
    assert_eq!(
        render(children_of(&instance)),
        render(children_of(&instance))
    );
    let children = children_of(&instance);
    let mut seen = BTreeSet::new();
    for child in &children {
        assert!(
            seen.insert((child.resource.kind.clone(), child.name().to_owned())),
            "{} {} appears twice",
            child.resource.kind,
            child.name()
        );
        assert!(
            !child.name().is_empty() && child.name().len() <= 63,
            "{}",
            child.name()
        );
    }
}

#[test]
fn child_resources_cover_every_kind_produced() {
    let kinds: BTreeSet<(String, String, String)> = child_resources()
        .into_iter()
        .map(|r| (r.group, r.version, r.kind))
        .collect();
    assert_eq!(kinds.len(), child_resources().len(), "no kind twice");
    let profile = ClusterProfile {
        data_service_cidrs: vec!["10.20.0.0/24".into()],
        ..ClusterProfile::default()
    };
    let mut produced = BTreeSet::new();
    for plan in starter_plans() {
        for child in desired_children(&instance(&plan.name), &secrets(), &profile) {
            let resource = &child.resource;
            assert_eq!(child.object.types.as_ref().unwrap().kind, resource.kind);
            produced.insert((
                resource.group.clone(),
                resource.version.clone(),
                resource.kind.clone(),
            ));
        }
    }
    assert_eq!(produced, kinds);
}

#[test]
fn an_unparsed_version_is_used_as_given() {
    let mut instance = instance("small");
    instance.spec.instance.version = "v4.5.2".into();
    let web = named::<Deployment>(&children_of(&instance), "web");
    let image = web.spec.template.spec.unwrap().containers[0].image.clone();
    assert_eq!(image.as_deref(), Some("ghcr.io/mastodon/mastodon:v4.5.2"));
    instance.spec.instance.version = "nightly".into();
    let web = named::<Deployment>(&children_of(&instance), "web");
    let image = web.spec.template.spec.unwrap().containers[0].image.clone();
    assert_eq!(image.as_deref(), Some("ghcr.io/mastodon/mastodon:nightly"));
}

fn migrating(phase: herd_core::spec::MigrationPhase) -> MastodonInstance {
    let mut upgrading = instance("small");
    upgrading.spec.instance.version = "4.4.3".into();
    upgrading.spec.instance.migration = Some(herd_core::spec::MigrationRun {
        version: "4.5.2".into(),
        phase,
    });
    upgrading
}

#[test]
fn pre_deploy_migrations_run_the_new_image_and_skip_the_post_deploy_ones() {
    let children = children_of(&migrating(herd_core::spec::MigrationPhase::PreDeploy));
    let job = named::<Job>(&children, "migrate-pre-4-5-2").spec.unwrap();
    assert_eq!(job.suspend, Some(false));
    let pod = job.template.spec.unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    let container = &pod.containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some("ghcr.io/mastodon/mastodon:v4.5.2")
    );
    assert_eq!(
        container.command.as_deref().unwrap(),
        ["bundle", "exec", "rails", "db:migrate"]
    );
    assert_eq!(
        env_value(&pod, "SKIP_POST_DEPLOYMENT_MIGRATIONS").as_deref(),
        Some("true")
    );
    // The workloads keep the old version until the rollout.
    let web = named::<Deployment>(&children, "web");
    let web_image = web.spec.template.spec.unwrap().containers[0].image.clone();
    assert_eq!(
        web_image.as_deref(),
        Some("ghcr.io/mastodon/mastodon:v4.4.3")
    );
}

#[test]
fn post_deploy_migrations_run_them_all() {
    let children = children_of(&migrating(herd_core::spec::MigrationPhase::PostDeploy));
    let job = named::<Job>(&children, "migrate-post-4-5-2").spec.unwrap();
    let pod = job.template.spec.unwrap();
    assert!(env_value(&pod, "SKIP_POST_DEPLOYMENT_MIGRATIONS").is_none());
    assert!(
        typed::<Job>(&children)
            .iter()
            .all(|job| { job.metadata.name.as_deref() != Some("migrate-pre-4-5-2") })
    );
}

#[test]
fn no_migration_job_outside_an_upgrade() {
    let names: Vec<String> = typed::<Job>(&children_of(&instance("small")))
        .into_iter()
        .map(|job| job.metadata.name.unwrap())
        .collect();
    assert_eq!(names, ["setup"]);
}
