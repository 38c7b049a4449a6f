use thiserror::Error;
use uuid::Uuid;

#[derive(Debug, Error)]
pub enum JobError {
    #[error(transparent)]
    Db(#[from] herd_db::DbError),
    #[error("database query failed: {0}")]
    Query(#[from] diesel::result::Error),
    #[error(transparent)]
    Tenancy(#[from] herd_tenancy::TenancyError),
    #[error(transparent)]
    Kube(#[from] herd_kube::KubeError),
    #[error("Kubernetes API request failed: {0}")]
    KubeApi(#[from] kube::Error),
    #[error("no database connection: {0}")]
    Pool(String),
    #[error("the job's payload is unreadable: {0}")]
    Payload(String),
    #[error("instance {0} does not exist")]
    MissingInstance(Uuid),
    #[error("the plan {0} of the instance is no longer stored")]
    MissingPlan(String),
    #[error(
        "the fleet has no cluster, database server or object store with room for another instance"
    )]
    NoCapacity,
    #[error("{0}")]
    NotYet(String),
    /// The work no longer makes sense (its instance is being deleted): the job
    /// ends without retries, its operation failed with this reason.
    #[error("cancelled: {0}")]
    Cancelled(String),
    #[error("the system's random number generator failed")]
    Random,
    #[error("the scratch directory failed: {0}")]
    Scratch(String),
    #[error(transparent)]
    Archive(#[from] herd_portability::ArchiveError),
    #[error(transparent)]
    Billing(#[from] herd_billing::BillingError),
    #[error("the instance's plan as scaled is refused: {0}")]
    Plan(#[from] herd_core::plan::PlanError),
    /// The work cannot succeed however often it is tried (a refused import):
    /// the job ends without retries and its operation fails with this reason.
    #[error("{0}")]
    Refused(String),
    /// Another operation under way on the instance keeps this one from
    /// starting (see `herd_core::lifecycle::blocks`): nothing changed, and
    /// the same request may succeed once that operation has ended.
    #[error("the {kind} operation {operation_id} is under way on instance {instance_id}")]
    OperationInProgress {
        instance_id: Uuid,
        operation_id: Uuid,
        kind: String,
    },
    /// Mastodon does not support this version jump.
    #[error(transparent)]
    UpgradeRefused(#[from] herd_core::upgrade::UpgradeRefused),
}
