//! The `MastodonInstance` resource an instance is reconciled from.

use herd_core::lifecycle::InstanceState;
use herd_core::plan::Plan;
use herd_core::spec::{DatabaseEndpoint, InstanceSpec, ObjectStoreEndpoint};
use herd_core::tenant::TenantNames;
use herd_db::fleet::{DatabaseServerAccess, ObjectStoreAccess};
use herd_db::instances::Instance;
use herd_db::upgrades::Upgrade;
use herd_kube::crd::{FINALIZER, MastodonInstance, MastodonInstanceSpec};
use uuid::Uuid;

use crate::{JobError, Services};

/// Marks the resources of one Herd installation, so several installations
/// (production and staging, or parallel tests) can share a cluster, each
/// reconciling only its own instances.
pub const LABEL_INSTALLATION: &str = "hosting.herd.dev/installation";

/// The label selector of an installation's resources.
pub fn installation_selector(installation: &str) -> String {
    format!("{LABEL_INSTALLATION}={installation}")
}

/// The instance's plan with the scaling an operator gave it on top.
pub async fn effective_plan(services: &Services, instance: &Instance) -> Result<Plan, JobError> {
    let mut conn = services.conn().await?;
    let plan = herd_db::plans::find_plan(&mut conn, &instance.plan_name)
        .await?
        .ok_or_else(|| JobError::MissingPlan(instance.plan_name.clone()))?
        .plan;
    let scaling = herd_db::instances::load_scaling(&mut conn, instance.id).await?;
    Ok(plan.scaled(&scaling)?)
}

/// The resource as it should be now: from the stored instance, its plan and
/// the servers it was placed on.
pub async fn desired_resource(
    services: &Services,
    instance: &Instance,
) -> Result<MastodonInstance, JobError> {
    let (Some(database_server), Some(store)) =
        (instance.database_server_id, instance.object_store_id)
    else {
        return Err(JobError::NotYet(format!(
            "instance {} is not placed yet",
            instance.id
        )));
    };
    let plan = effective_plan(services, instance).await?;
    let mut conn = services.conn().await?;
    let database =
        herd_db::fleet::database_server_access(&mut conn, &services.sealer, database_server)
            .await?;
    let store = herd_db::fleet::object_store_access(&mut conn, &services.sealer, store).await?;
    let upgrade = herd_db::upgrades::latest_upgrade(&mut conn, instance.id).await?;
    Ok(instance_resource(
        instance,
        upgrade.as_ref(),
        &plan,
        &database,
        &store,
        &services.installation,
    ))
}

/// The resource's name: the same in every cluster, derived from the id alone.
pub fn resource_name(instance_id: Uuid) -> String {
    herd_kube::children::namespace_name(&instance_id.to_string())
}

/// The resource of `instance`; while `upgrade` is under way its stage says
/// which version the workloads run and which migration Job runs.
pub fn instance_resource(
    instance: &Instance,
    upgrade: Option<&Upgrade>,
    plan: &Plan,
    database: &DatabaseServerAccess,
    store: &ObjectStoreAccess,
    installation: &str,
) -> MastodonInstance {
    let names = TenantNames::for_instance(&instance.id.to_string());
    let (version, migration) = match upgrade.filter(|u| u.stage.shapes_the_workloads()) {
        Some(upgrade) => (
            upgrade
                .stage
                .workload_version(upgrade.from, upgrade.to)
                .to_string(),
            upgrade.stage.migration(upgrade.to),
        ),
        None => (instance.version.clone(), None),
    };
    let spec = InstanceSpec {
        instance_id: instance.id.to_string(),
        local_domain: instance.domain.clone(),
        web_domain: instance.web_domain.clone(),
        version,
        owner_email: instance.owner_email.clone(),
        plan: plan.clone(),
        suspended: instance.state == InstanceState::Suspended,
        origin: instance.origin,
        database: DatabaseEndpoint {
            host: database.tenant_host.clone(),
            port: database.tenant_port,
            name: names.database,
            user: names.role,
        },
        object_store: ObjectStoreEndpoint {
            endpoint: store.s3_endpoint.clone(),
            region: store.s3_region.clone(),
            bucket: names.bucket,
        },
        migration,
    };
    let mut resource = MastodonInstance::new(
        &resource_name(instance.id),
        MastodonInstanceSpec { instance: spec },
    );
    resource.metadata.labels =
        Some([(LABEL_INSTALLATION.to_owned(), installation.to_owned())].into());
    // Written with the resource rather than left to the reconciler's first
    // pass, which would otherwise only add it and wait for the next one. Every
    // apply carries it, so none takes it away from an instance being deleted.
    resource.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
    resource
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use herd_core::plan::starter_plans;
    use herd_core::spec::MigrationPhase;
    use herd_core::upgrade::UpgradeStage;

    use super::*;

    fn instance(state: InstanceState) -> Instance {
        Instance {
            id: Uuid::parse_str("0193a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b").unwrap(),
            owner_id: Uuid::nil(),
            domain: "example.social".into(),
            web_domain: "social.example.org".into(),
            owner_email: "owner@example.org".into(),
            plan_name: "small".into(),
            version: "4.5.2".into(),
            cluster_id: Some(Uuid::nil()),
            database_server_id: Some(Uuid::nil()),
            object_store_id: Some(Uuid::nil()),
            state,
            origin: Default::default(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn build(state: InstanceState) -> MastodonInstance {
        build_upgrading(state, None)
    }

    fn build_upgrading(state: InstanceState, upgrade: Option<&Upgrade>) -> MastodonInstance {
        let database = DatabaseServerAccess {
            tenant_host: "db.internal".into(),
            tenant_port: 5432,
            admin_url: String::new(),
        };
        let store = ObjectStoreAccess {
            s3_endpoint: "https://s3.internal".into(),
            s3_region: "garage".into(),
            admin_endpoint: String::new(),
            admin_token: String::new(),
        };
        instance_resource(
            &instance(state),
            upgrade,
            &starter_plans()[0],
            &database,
            &store,
            "production",
        )
    }

    #[test]
    fn names_and_endpoints_derive_from_the_id_and_placement() {
        let resource = build(InstanceState::Provisioning);
        assert_eq!(
            resource.metadata.name.as_deref(),
            Some("mi-0193a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b")
        );
        let spec = &resource.spec.instance;
        assert_eq!(spec.local_domain, "example.social");
        assert_eq!(spec.web_domain, "social.example.org");
        assert_eq!(
            spec.database.name,
            "mastodon_0193a2b45c6d7e8f9a0b1c2d3e4f5a6b"
        );
        assert_eq!(spec.database.host, "db.internal");
        assert_eq!(
            spec.object_store.bucket,
            "mastodon-0193a2b45c6d7e8f9a0b1c2d3e4f5a6b"
        );
        assert!(!spec.suspended);
        let labels = resource.metadata.labels.unwrap();
        assert_eq!(labels[LABEL_INSTALLATION], "production");
    }

    #[test]
    fn every_apply_carries_the_finalizer() {
        for state in [InstanceState::Provisioning, InstanceState::Suspended] {
            let resource = build(state);
            assert_eq!(
                resource.metadata.finalizers,
                Some(vec![FINALIZER.to_owned()])
            );
        }
    }

    #[test]
    fn a_suspended_instance_is_reconciled_to_zero() {
        assert!(build(InstanceState::Suspended).spec.instance.suspended);
    }

    fn upgrade(stage: UpgradeStage) -> Upgrade {
        Upgrade {
            operation_id: Uuid::nil(),
            instance_id: Uuid::nil(),
            from: "4.5.2".parse().unwrap(),
            to: "4.6.0".parse().unwrap(),
            stage,
            rollout_timeout: std::time::Duration::from_secs(60),
            export_id: None,
            failure: None,
            stage_started_at: Utc::now(),
            created_at: Utc::now(),
            finished_at: None,
        }
    }

    #[test]
    fn an_upgrade_under_way_decides_the_version_and_the_migration() {
        let runs = |stage| {
            let spec = build_upgrading(InstanceState::Updating, Some(&upgrade(stage)))
                .spec
                .instance;
            (spec.version, spec.migration.map(|m| m.phase))
        };
        assert_eq!(
            runs(UpgradeStage::PreDeploy),
            ("4.5.2".into(), Some(MigrationPhase::PreDeploy))
        );
        assert_eq!(runs(UpgradeStage::Rollout), ("4.6.0".into(), None));
        assert_eq!(runs(UpgradeStage::RollingBack), ("4.5.2".into(), None));
        // Finished: the record holds the version the workloads run.
        assert_eq!(runs(UpgradeStage::Succeeded), ("4.5.2".into(), None));
        assert_eq!(runs(UpgradeStage::RolledBack), ("4.5.2".into(), None));
    }

    #[test]
    fn the_spec_holds_no_credentials() {
        let json = serde_json::to_string(&build(InstanceState::Running)).unwrap();
        for credential in [
            "DB_PASS",
            "SECRET_KEY_BASE",
            "AWS_SECRET_ACCESS_KEY",
            "admin",
        ] {
            assert!(!json.contains(credential), "{credential} in {json}");
        }
    }
}
