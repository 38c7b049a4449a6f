//! The API's own request and response types. They are the public contract,
//! so they are kept apart from the core and database types, which may change
//! shape without breaking clients.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use herd_core::lifecycle::InstanceState;
use herd_core::plan;
use herd_core::scaling::{GroupScaling, Scaling};
use herd_db::archives::{Export, ExportState};
use herd_db::fleet_upgrades::{FleetUpgrade, FleetUpgradeState, Member, MemberState};
use herd_db::instances::Instance;
use herd_db::operations::{Operation, OperationState};
use herd_db::plans::OfferedPlan;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// CPU and memory of one pod; requests equal limits.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResourcesView {
    pub cpu_millis: u32,
    pub memory_mib: u32,
}

impl From<plan::Resources> for ResourcesView {
    fn from(r: plan::Resources) -> Self {
        ResourcesView {
            cpu_millis: r.cpu_millis,
            memory_mib: r.memory_mib,
        }
    }
}

/// Puma: `concurrency` processes of `threads` threads in each replica.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebView {
    pub replicas: u32,
    pub concurrency: u32,
    pub threads: u32,
    pub resources: ResourcesView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StreamingView {
    pub replicas: u32,
    pub resources: ResourcesView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueueView {
    pub name: String,
    pub weight: u32,
}

/// Sidekiq processes consuming the same queues, scaled between the bounds.
#[derive(Debug, Serialize, ToSchema)]
pub struct SidekiqGroupView {
    pub name: String,
    pub queues: Vec<QueueView>,
    pub threads: u32,
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub resources: ResourcesView,
}

/// A plan on offer: the size of every process of a Mastodon server.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanView {
    #[schema(example = "small")]
    pub name: String,
    pub web: WebView,
    pub streaming: StreamingView,
    pub sidekiq: Vec<SidekiqGroupView>,
    pub redis: ResourcesView,
    pub media_storage_gib: u32,
    pub volume_storage_gib: u32,
    /// Connections the tenant's database role may open.
    pub database_connection_limit: u32,
    /// The Stripe Price subscriptions use; shown to operators only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stripe_price_id: Option<String>,
}

impl PlanView {
    pub fn new(offered: OfferedPlan, show_price_id: bool) -> Self {
        let plan = offered.plan;
        PlanView {
            name: plan.name,
            web: WebView {
                replicas: plan.web.replicas,
                concurrency: plan.web.concurrency,
                threads: plan.web.threads,
                resources: plan.web.resources.into(),
            },
            streaming: StreamingView {
                replicas: plan.streaming.replicas,
                resources: plan.streaming.resources.into(),
            },
            sidekiq: plan
                .sidekiq
                .into_iter()
                .map(|group| SidekiqGroupView {
                    name: group.name,
                    queues: group
                        .queues
                        .into_iter()
                        .map(|q| QueueView {
                            name: q.name,
                            weight: q.weight,
                        })
                        .collect(),
                    threads: group.threads,
                    min_replicas: group.min_replicas,
                    max_replicas: group.max_replicas,
                    resources: group.resources.into(),
                })
                .collect(),
            redis: plan.redis.into(),
            media_storage_gib: plan.media_storage_gib,
            volume_storage_gib: plan.volume_storage_gib,
            database_connection_limit: plan.database_connection_limit,
            stripe_price_id: offered.stripe_price_id.filter(|_| show_price_id),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PlanList {
    pub plans: Vec<PlanView>,
}

/// An order for a new Mastodon server.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInstanceRequest {
    /// The server's `LOCAL_DOMAIN`: the domain in its users' handles. It can never change.
    #[schema(example = "example.social")]
    pub domain: String,
    /// The name of an offered plan.
    #[schema(example = "small")]
    pub plan: String,
    /// The e-mail of the Mastodon owner account the server is created with.
    #[schema(example = "owner@example.com")]
    pub owner_email: String,
    /// The Mastodon version; the current default when left out.
    #[schema(example = "4.5.2")]
    pub version: Option<String>,
    /// Where the web interface is served (`WEB_DOMAIN`); `domain` when left out.
    #[schema(example = "mastodon.example.social")]
    pub web_domain: Option<String>,
}

/// Where an instance stands in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InstanceStatus {
    Pending,
    Provisioning,
    Running,
    Updating,
    Suspended,
    Deleting,
    Deleted,
    Failed,
}

impl From<&InstanceState> for InstanceStatus {
    fn from(state: &InstanceState) -> Self {
        match state {
            InstanceState::Pending => InstanceStatus::Pending,
            InstanceState::Provisioning => InstanceStatus::Provisioning,
            InstanceState::Running => InstanceStatus::Running,
            InstanceState::Updating => InstanceStatus::Updating,
            InstanceState::Suspended => InstanceStatus::Suspended,
            InstanceState::Deleting => InstanceStatus::Deleting,
            InstanceState::Deleted => InstanceStatus::Deleted,
            InstanceState::Failed { .. } => InstanceStatus::Failed,
        }
    }
}

/// A hosted Mastodon server.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstanceView {
    pub id: Uuid,
    /// The account that ordered the instance.
    pub owner_id: Uuid,
    pub domain: String,
    pub web_domain: String,
    pub plan: String,
    pub version: String,
    pub state: InstanceStatus,
    /// Why the instance failed, when `state` is `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The subscription paying for it, when billing is on (`GET` of one instance).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub billing: Option<BillingView>,
}

/// Where the instance's payment stands, and what the customer should do.
#[derive(Debug, Serialize, ToSchema)]
pub struct BillingView {
    /// `checkout` until paid, then Stripe's subscription status.
    pub status: String,
    /// Set when the customer must act.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suspended_at: Option<DateTime<Utc>>,
    /// When a suspended instance gets its final export and is deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_due_at: Option<DateTime<Utc>>,
}

impl BillingView {
    pub fn new(subscription: herd_db::billing::Subscription, retention: chrono::Duration) -> Self {
        let deletion_due_at = subscription.suspended_at.map(|at| at + retention);
        let warning = match (subscription.status.as_str(), deletion_due_at) {
            ("past_due", _) => Some(
                "a payment failed and Stripe retries it; update the payment method in the billing portal"
                    .to_owned(),
            ),
            (_, Some(due)) => Some(format!(
                "suspended for want of payment; unless the subscription resumes, a final export is made and the server deleted on {}",
                due.format("%Y-%m-%d")
            )),
            _ => None,
        };
        BillingView {
            status: subscription.status,
            warning,
            suspended_at: subscription.suspended_at,
            deletion_due_at,
        }
    }
}

impl From<Instance> for InstanceView {
    fn from(instance: Instance) -> Self {
        let failure_reason = match &instance.state {
            InstanceState::Failed { reason } => Some(reason.clone()),
            _ => None,
        };
        InstanceView {
            state: InstanceStatus::from(&instance.state),
            failure_reason,
            id: instance.id,
            owner_id: instance.owner_id,
            domain: instance.domain,
            web_domain: instance.web_domain,
            plan: instance.plan_name,
            version: instance.version,
            billing: None,
            created_at: instance.created_at,
            updated_at: instance.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InstanceList {
    pub instances: Vec<InstanceView>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OperationStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl From<OperationState> for OperationStatus {
    fn from(state: OperationState) -> Self {
        match state {
            OperationState::Pending => OperationStatus::Pending,
            OperationState::Running => OperationStatus::Running,
            OperationState::Succeeded => OperationStatus::Succeeded,
            OperationState::Failed => OperationStatus::Failed,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StepView {
    pub name: String,
    pub done: bool,
}

/// Long-running work on an instance (provisioning, deletion, ...), to poll until it finishes.
#[derive(Debug, Serialize, ToSchema)]
pub struct OperationView {
    pub id: Uuid,
    pub instance_id: Uuid,
    #[schema(example = "provision")]
    pub kind: String,
    pub state: OperationStatus,
    /// Percentage of the steps done.
    #[schema(minimum = 0, maximum = 100)]
    pub progress: i32,
    pub steps: Vec<StepView>,
    /// Why the operation failed, when `state` is `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// What the operation measured. A `migrate` operation reports its
    /// clusters and database servers, `freeze_seconds` (how long the
    /// instance took no writes) and `database_bytes` (the size of the dump).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<serde_json::Value>,
}

impl From<Operation> for OperationView {
    fn from(op: Operation) -> Self {
        OperationView {
            id: op.id,
            instance_id: op.instance_id,
            kind: op.kind,
            state: op.state.into(),
            progress: op.progress,
            steps: op
                .steps
                .into_iter()
                .map(|s| StepView {
                    name: s.name,
                    done: s.done,
                })
                .collect(),
            error: op.error,
            created_at: op.created_at,
            updated_at: op.updated_at,
            finished_at: op.finished_at,
            details: op.details,
        }
    }
}

/// The answer to a request that started long-running work: the instance as
/// it is now and the operation to follow.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    pub instance: InstanceView,
    pub operation: OperationView,
    /// With billing on, for a new order: where the customer pays.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkout: Option<CheckoutView>,
}

/// A bucket of the customer's own, anywhere S3 is spoken, that the finished
/// archive is copied to. The credentials are kept sealed and never shown.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushRequest {
    #[schema(example = "https://s3.eu-central-1.amazonaws.com")]
    pub endpoint: String,
    pub region: Option<String>,
    pub bucket: String,
    /// The object key; the archive's file name when absent.
    pub key: Option<String>,
    pub access_key_id: String,
    pub secret_access_key: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateExportRequest {
    /// zstd-compress the archive; on by default.
    #[serde(default = "compress_by_default")]
    pub compress: bool,
    /// An age X25519 public key (`age1...`): the archive is encrypted to it,
    /// and only its holder can read it, Herd included.
    pub recipient: Option<String>,
    pub push: Option<PushRequest>,
}

fn compress_by_default() -> bool {
    true
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExportStateView {
    Pending,
    Running,
    Complete,
    Failed,
    Expired,
}

impl From<ExportState> for ExportStateView {
    fn from(state: ExportState) -> Self {
        match state {
            ExportState::Pending => ExportStateView::Pending,
            ExportState::Running => ExportStateView::Running,
            ExportState::Complete => ExportStateView::Complete,
            ExportState::Failed => ExportStateView::Failed,
            ExportState::Expired => ExportStateView::Expired,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExportView {
    pub id: Uuid,
    pub instance_id: Uuid,
    pub operation_id: Uuid,
    pub state: ExportStateView,
    pub compressed: bool,
    pub encrypted: bool,
    pub pushed: bool,
    /// The archive's file name, size and SHA-256 once complete.
    pub file_name: Option<String>,
    pub size: Option<u64>,
    pub sha256: Option<String>,
    /// A link anyone holding it can download the archive with, valid for 15 minutes.
    pub download_url: Option<String>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    /// After this the archive is deleted.
    pub expires_at: Option<DateTime<Utc>>,
}

impl ExportView {
    pub fn new(export: Export, download_url: Option<String>) -> Self {
        ExportView {
            id: export.id,
            instance_id: export.instance_id,
            operation_id: export.operation_id,
            state: export.state.into(),
            compressed: export.compressed,
            encrypted: export.recipient.is_some(),
            pushed: export.push,
            file_name: export.archive.as_ref().map(|a| a.file_name.clone()),
            size: export.archive.as_ref().map(|a| a.size),
            sha256: export.archive.as_ref().map(|a| a.sha256.clone()),
            download_url,
            created_at: export.created_at,
            completed_at: export.completed_at,
            expires_at: export.expires_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExportList {
    pub exports: Vec<ExportView>,
}

/// The answer to an export request: the export and the operation to follow.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExportAccepted {
    pub export: ExportView,
    pub operation: OperationView,
}

/// What became of the imported `.env.production`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImportedEnv {
    /// Keys carried over as they were: the server's secrets and settings.
    pub kept: Vec<String>,
    /// Keys left behind, each with why: the old host's connection settings
    /// (Herd sets its own) and keys Herd does not know.
    pub dropped: BTreeMap<String, String>,
}

/// The answer to an import: the new instance, the operation restoring it,
/// and what became of its environment.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImportAccepted {
    pub instance: InstanceView,
    pub operation: OperationView,
    pub env: ImportedEnv,
}

/// An import of a Herd archive Herd fetches itself, e.g. through another
/// host's signed download link.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportFromUrlRequest {
    /// Must be the archive's `LOCAL_DOMAIN`.
    #[schema(example = "example.social")]
    pub domain: String,
    #[schema(example = "small")]
    pub plan: String,
    #[schema(example = "owner@example.com")]
    pub owner_email: String,
    pub version: Option<String>,
    /// The archive's `WEB_DOMAIN` when left out.
    pub web_domain: Option<String>,
    /// An http(s) URL of a public address; redirects are not followed.
    #[schema(value_type = String, example = "https://files.example.net/example.social.tar.zst")]
    pub url: url::Url,
}

/// Stripe Checkout for an order: send the customer to `url`. Provisioning
/// starts once Stripe reports the payment, never on the way back.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckoutView {
    pub id: String,
    pub url: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PortalView {
    pub url: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InvoiceView {
    pub id: String,
    pub number: Option<String>,
    pub status: Option<String>,
    /// In the currency's smallest unit.
    pub amount_due: i64,
    pub amount_paid: i64,
    pub currency: String,
    pub created_at: Option<DateTime<Utc>>,
    pub hosted_invoice_url: Option<String>,
    pub invoice_pdf: Option<String>,
}

impl From<herd_billing::InvoiceSummary> for InvoiceView {
    fn from(invoice: herd_billing::InvoiceSummary) -> Self {
        InvoiceView {
            id: invoice.id,
            number: invoice.number,
            status: invoice.status,
            amount_due: invoice.amount_due,
            amount_paid: invoice.amount_paid,
            currency: invoice.currency,
            created_at: DateTime::from_timestamp(invoice.created, 0),
            hosted_invoice_url: invoice.hosted_invoice_url,
            invoice_pdf: invoice.invoice_pdf,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InvoiceList {
    pub invoices: Vec<InvoiceView>,
}

/// A change of an instance: its plan, or (operators) its scaling, one at a
/// time. With billing, a plan change moves the subscription to the plan's
/// price with proration first. A plan change drops any scaling by hand.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateInstanceRequest {
    #[schema(example = "medium")]
    pub plan: Option<String>,
    pub scaling: Option<ScalingRequest>,
}

/// A version upgrade, in Mastodon's order: a backup, the pre-deploy
/// migrations, the rollout, the post-deploy migrations. A rollout that is
/// not ready in time is rolled back to the old version.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpgradeInstanceRequest {
    /// At most one minor release above the running version.
    #[schema(example = "4.5.2")]
    pub version: String,
    /// How long the new version's workloads have to become ready before the
    /// upgrade rolls back; 600 when left out.
    #[schema(minimum = 5, maximum = 86400, example = 600)]
    pub rollout_timeout_seconds: Option<u32>,
}

/// Scaling by hand on top of the plan; what is left out stays as it is.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScalingRequest {
    /// Web replicas, and the least web runs when it autoscales.
    pub web_replicas: Option<u32>,
    /// The most web replicas autoscaling on CPU may reach; above
    /// `web_replicas`, web autoscales.
    pub web_max_replicas: Option<u32>,
    pub streaming_replicas: Option<u32>,
    /// By Sidekiq group name.
    #[serde(default)]
    pub sidekiq: BTreeMap<String, GroupScalingRequest>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupScalingRequest {
    pub min_replicas: Option<u32>,
    pub max_replicas: Option<u32>,
    /// Threads per process; `DB_POOL` follows.
    pub threads: Option<u32>,
}

impl From<ScalingRequest> for Scaling {
    fn from(request: ScalingRequest) -> Self {
        Scaling {
            web_replicas: request.web_replicas,
            web_max_replicas: request.web_max_replicas,
            streaming_replicas: request.streaming_replicas,
            sidekiq: request
                .sidekiq
                .into_iter()
                .map(|(name, group)| {
                    (
                        name,
                        GroupScaling {
                            min_replicas: group.min_replicas,
                            max_replicas: group.max_replicas,
                            threads: group.threads,
                        },
                    )
                })
                .collect(),
        }
    }
}

/// An upgrade of every running instance on `from` to `to`, in waves: the
/// canary first, alone, then waves of `wave_size`, each once the one before
/// it has finished. Past `max_failure_ratio` of failures among the finished
/// members, the upgrade pauses by itself.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateFleetUpgradeRequest {
    #[schema(example = "4.4.8")]
    pub from: String,
    #[schema(example = "4.5.2")]
    pub to: String,
    /// Instances upgraded first, in a wave of their own; 1 when left out, 0 for none.
    #[schema(example = 1)]
    pub canary: Option<u32>,
    #[schema(example = 10, minimum = 1)]
    pub wave_size: u32,
    /// The share of failed upgrades among the finished ones tolerated, 0 to 1.
    #[schema(example = 0.1, minimum = 0, maximum = 1)]
    pub max_failure_ratio: f64,
    /// How long each instance's rollout may take before it is rolled back; 600 when left out.
    #[schema(minimum = 5, maximum = 86400, example = 600)]
    pub rollout_timeout_seconds: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FleetUpgradeStatus {
    Running,
    Paused,
    Aborted,
    Completed,
}

impl From<FleetUpgradeState> for FleetUpgradeStatus {
    fn from(state: FleetUpgradeState) -> Self {
        match state {
            FleetUpgradeState::Running => FleetUpgradeStatus::Running,
            FleetUpgradeState::Paused => FleetUpgradeStatus::Paused,
            FleetUpgradeState::Aborted => FleetUpgradeStatus::Aborted,
            FleetUpgradeState::Completed => FleetUpgradeStatus::Completed,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FleetMemberStatus {
    Pending,
    Upgrading,
    Succeeded,
    /// Rolled back: the instance runs the old version.
    Failed,
    /// Not upgraded: the instance no longer ran the old version when its
    /// wave came, or the upgrade was aborted first.
    Skipped,
}

impl From<MemberState> for FleetMemberStatus {
    fn from(state: MemberState) -> Self {
        match state {
            MemberState::Pending => FleetMemberStatus::Pending,
            MemberState::Upgrading => FleetMemberStatus::Upgrading,
            MemberState::Succeeded => FleetMemberStatus::Succeeded,
            MemberState::Failed => FleetMemberStatus::Failed,
            MemberState::Skipped => FleetMemberStatus::Skipped,
        }
    }
}

/// How many members of one wave stand where; wave 0 is the canary when there is one.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct WaveView {
    pub wave: i32,
    pub pending: u32,
    pub upgrading: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub skipped: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FleetMemberView {
    pub instance_id: Uuid,
    pub wave: i32,
    pub state: FleetMemberStatus,
    /// The instance's upgrade operation of the latest attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation_id: Option<Uuid>,
}

/// A fleet upgrade and its progress per wave.
#[derive(Debug, Serialize, ToSchema)]
pub struct FleetUpgradeView {
    pub id: Uuid,
    pub from: String,
    pub to: String,
    pub canary: u32,
    pub wave_size: u32,
    pub max_failure_ratio: f64,
    pub rollout_timeout_seconds: i32,
    pub state: FleetUpgradeStatus,
    /// Why the upgrade paused, while it is paused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_reason: Option<String>,
    /// The first wave with members not finished, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_wave: Option<i32>,
    pub waves: Vec<WaveView>,
    /// Every member (`GET` of one upgrade).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<FleetMemberView>>,
    /// The operator who started it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

/// Where an instance moves: a cluster of the fleet, and optionally the
/// database server its database moves to (by default the least loaded one
/// other than its current server).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrateInstanceRequest {
    /// The target cluster's name or id.
    #[schema(example = "eu-2")]
    pub cluster: String,
    /// The target database server's name or id.
    pub database_server: Option<String>,
    /// The target object store's name or id; the current one when absent.
    /// Another store has the media copied to it while the instance runs.
    pub object_store: Option<String>,
}

/// How many instances a drain moves at a time.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DrainClusterRequest {
    /// Moves at a time; 2 when absent.
    #[schema(minimum = 1, maximum = 100, example = 2)]
    pub concurrency: Option<u32>,
}

/// A drain of a cluster and how far it got.
#[derive(Debug, Serialize, ToSchema)]
pub struct DrainView {
    pub id: Uuid,
    pub cluster_id: Uuid,
    pub cluster: String,
    pub concurrency: i32,
    /// `running`, `succeeded` or `failed`.
    #[schema(example = "running")]
    pub state: String,
    /// What is left on the cluster, when `state` is `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Instances still placed on the cluster.
    pub instances_left: i64,
    /// Moves under way; each is a `migrate` operation of its instance.
    pub moves_running: i64,
    pub moves_done: i64,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

impl FleetUpgradeView {
    pub fn new(upgrade: FleetUpgrade, members: Vec<Member>, with_members: bool) -> Self {
        let mut waves: Vec<WaveView> = Vec::new();
        for member in &members {
            if waves.last().is_none_or(|wave| wave.wave != member.wave) {
                waves.push(WaveView {
                    wave: member.wave,
                    ..WaveView::default()
                });
            }
            let wave = waves.last_mut().expect("pushed above");
            match member.state {
                MemberState::Pending => wave.pending += 1,
                MemberState::Upgrading => wave.upgrading += 1,
                MemberState::Succeeded => wave.succeeded += 1,
                MemberState::Failed => wave.failed += 1,
                MemberState::Skipped => wave.skipped += 1,
            }
        }
        let current_wave = waves
            .iter()
            .find(|wave| wave.pending + wave.upgrading > 0)
            .map(|wave| wave.wave);
        FleetUpgradeView {
            id: upgrade.id,
            from: upgrade.from_version,
            to: upgrade.to_version,
            canary: upgrade.policy.canary,
            wave_size: upgrade.policy.wave_size,
            max_failure_ratio: upgrade.policy.max_failure_ratio,
            rollout_timeout_seconds: upgrade.rollout_timeout_seconds,
            state: upgrade.state.into(),
            paused_reason: upgrade.paused_reason,
            current_wave,
            waves,
            members: with_members.then(|| {
                members
                    .into_iter()
                    .map(|member| FleetMemberView {
                        instance_id: member.instance_id,
                        wave: member.wave,
                        state: member.state.into(),
                        operation_id: member.operation_id,
                    })
                    .collect()
            }),
            created_by: upgrade.created_by,
            created_at: upgrade.created_at,
            updated_at: upgrade.updated_at,
            finished_at: upgrade.finished_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FleetUpgradeList {
    pub upgrades: Vec<FleetUpgradeView>,
}

impl From<herd_db::drains::Drain> for DrainView {
    fn from(drain: herd_db::drains::Drain) -> Self {
        DrainView {
            id: drain.id,
            cluster_id: drain.cluster_id,
            cluster: drain.cluster_name,
            concurrency: drain.concurrency,
            state: drain.state,
            error: drain.error,
            instances_left: drain.instances_left,
            moves_running: drain.moves_running,
            moves_done: drain.moves_done,
            created_at: drain.created_at,
            finished_at: drain.finished_at,
        }
    }
}
