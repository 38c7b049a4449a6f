//! The desired state of one hosted instance, as the cluster receives it.

use serde::{Deserialize, Serialize};

use crate::plan::Plan;

/// Where the tenant's database lives. The password travels in a Secret, not here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseEndpoint {
    pub host: String,
    pub port: u16,
    pub name: String,
    pub user: String,
}

/// Where the tenant's media live. The access key travels in a Secret, not here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStoreEndpoint {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
}

/// How an instance's data came to be, which decides what its setup does.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum InstanceOrigin {
    /// Ordered new: the setup creates the schema and the owner's account.
    #[default]
    Ordered,
    /// Restored from an archive: the setup migrates the restored schema to
    /// the running version and rebuilds the home feeds; the accounts are there.
    Imported,
}

impl InstanceOrigin {
    /// The stable name, as stored.
    pub fn name(self) -> &'static str {
        match self {
            InstanceOrigin::Ordered => "ordered",
            InstanceOrigin::Imported => "imported",
        }
    }

    pub fn parse(stored: &str) -> Option<Self> {
        match stored {
            "ordered" => Some(InstanceOrigin::Ordered),
            "imported" => Some(InstanceOrigin::Imported),
            _ => None,
        }
    }
}

/// Everything the reconciler needs to build an instance's workloads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceSpec {
    /// Herd's id of the instance; names and labels derive from it, never from the domain.
    pub instance_id: String,
    /// `LOCAL_DOMAIN`: the handle domain, fixed forever after the first boot.
    pub local_domain: String,
    /// `WEB_DOMAIN`: where the web app is served; often the same as `local_domain`.
    pub web_domain: String,
    pub version: String,
    pub owner_email: String,
    pub plan: Plan,
    /// Workloads scaled to zero with all data kept.
    #[serde(default)]
    pub suspended: bool,
    #[serde(default)]
    pub origin: InstanceOrigin,
    pub database: DatabaseEndpoint,
    pub object_store: ObjectStoreEndpoint,
    /// A migration of the database towards a newer version, run as a Job
    /// while an upgrade is under way; the Deployments keep running `version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<MigrationRun>,
}

/// Which half of Mastodon's migrations runs: the pre-deploy ones are safe
/// for the old code still serving, the post-deploy ones only once the new
/// code serves (they drop what the old code used).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum MigrationPhase {
    PreDeploy,
    PostDeploy,
}

impl MigrationPhase {
    /// The stable name, as Job names and stored stages use it.
    pub fn name(self) -> &'static str {
        match self {
            MigrationPhase::PreDeploy => "pre",
            MigrationPhase::PostDeploy => "post",
        }
    }
}

/// The migrations of `version` to run, in one phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationRun {
    pub version: String,
    pub phase: MigrationPhase,
}
