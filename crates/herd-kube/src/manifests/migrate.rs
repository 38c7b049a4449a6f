//! The Jobs that migrate an instance's database during an upgrade, in
//! Mastodon's two phases, with the new version's image.

use herd_core::spec::{MigrationPhase, MigrationRun};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::Container;

use super::Tenant;
use super::pod::{App, PodParts, env, mastodon_container, template};

const COMPONENT: &str = "migrate";

/// One Job per version and phase: a Job's pod template cannot change, and
/// each name is run once.
pub fn job_name(run: &MigrationRun) -> String {
    format!(
        "{COMPONENT}-{}-{}",
        run.phase.name(),
        run.version.replace('.', "-")
    )
}

pub(super) fn job(tenant: &Tenant, run: &MigrationRun) -> Job {
    let image = tenant.image_of(&tenant.profile.mastodon_image, &run.version);
    let command = ["bundle", "exec", "rails", "db:migrate"]
        .map(str::to_owned)
        .to_vec();
    // Like the setup Job, a web-sized pod: the quota keeps room for one.
    let size = tenant.spec.plan.web.resources;
    let migrate = match run.phase {
        // Only the migrations the old code still runs with.
        MigrationPhase::PreDeploy => Container {
            env: Some(env(&[(
                "SKIP_POST_DEPLOYMENT_MIGRATIONS",
                "true".to_owned(),
            )])),
            ..mastodon_container("migrate", image, command, size)
        },
        MigrationPhase::PostDeploy => mastodon_container("migrate", image, command, size),
    };
    Job {
        metadata: tenant.metadata(&job_name(run), Some(COMPONENT)),
        spec: Some(JobSpec {
            // Each migration runs in its own transaction, so a retry resumes
            // after the last one that committed.
            backoff_limit: Some(2),
            // Left unset: the reconciler reads the finished Job's status.
            ttl_seconds_after_finished: None,
            suspend: Some(tenant.spec.suspended),
            template: template(
                tenant,
                PodParts {
                    component: COMPONENT.to_owned(),
                    app: App::Mastodon,
                    init_containers: Vec::new(),
                    containers: vec![migrate],
                    restart_policy: Some("Never"),
                },
            ),
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}
