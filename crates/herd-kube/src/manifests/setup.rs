//! The Job that prepares a fresh instance: the schema, seeds and the owner's account.

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::Container;

use herd_core::plan::Resources;
use herd_core::spec::InstanceOrigin;

use super::pod::{App, PodParts, env, mastodon_container, template};
use super::{SETUP_JOB, Tenant};

const COMPONENT: &str = SETUP_JOB;
/// The owner's username; fixed, so nothing the customer typed reaches it.
const OWNER_USERNAME: &str = "owner";

pub(super) fn job(tenant: &Tenant) -> Job {
    let image = tenant.image(&tenant.profile.mastodon_image);
    // The quota keeps room for one extra web-sized pod: this Job is it.
    let size = tenant.spec.plan.web.resources;
    // `db:prepare`, not `db:setup`: should the Job run again over a live
    // database, `db:setup` would load the schema over it and erase it, while
    // `db:prepare` only creates and seeds what is missing.
    let database = mastodon_container(
        "database",
        image.clone(),
        ["bundle", "exec", "rails", "db:prepare"]
            .map(str::to_owned)
            .to_vec(),
        size,
    );
    let (init_containers, containers) = match tenant.spec.origin {
        InstanceOrigin::Ordered => (vec![database], vec![owner(tenant, image, size)]),
        // `db:prepare` migrates the restored schema up to this version; the
        // accounts came with the data, and the feeds Redis held did not.
        InstanceOrigin::Imported => (
            vec![database],
            vec![mastodon_container(
                "feeds",
                image,
                ["bin/tootctl", "feeds", "build"]
                    .map(str::to_owned)
                    .to_vec(),
                size,
            )],
        ),
    };
    Job {
        metadata: tenant.metadata(COMPONENT, Some(COMPONENT)),
        spec: Some(JobSpec {
            // A retry of `accounts create` fails once the account exists, so
            // more attempts only delay the failure the status reports.
            backoff_limit: Some(2),
            // Left unset: the reconciler reads the finished Job's status, and a
            // Job removed after a TTL would be created and run again.
            ttl_seconds_after_finished: None,
            suspend: Some(tenant.spec.suspended),
            template: template(
                tenant,
                PodParts {
                    component: COMPONENT.to_owned(),
                    app: App::Mastodon,
                    init_containers,
                    containers,
                    restart_policy: Some("Never"),
                },
            ),
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}

/// The owner's account, made with the e-mail the customer ordered with.
fn owner(tenant: &Tenant, image: String, size: Resources) -> Container {
    // The kubelet expands `$(OWNER_EMAIL)` into one argument and no shell
    // runs, so the address cannot inject a command whatever it holds.
    Container {
        env: Some(env(&[("OWNER_EMAIL", tenant.spec.owner_email.clone())])),
        ..mastodon_container(
            "owner",
            image,
            [
                "bin/tootctl",
                "accounts",
                "create",
                OWNER_USERNAME,
                "--email",
                "$(OWNER_EMAIL)",
                "--confirmed",
                "--role",
                "Owner",
            ]
            .map(str::to_owned)
            .to_vec(),
            size,
        )
    }
}
