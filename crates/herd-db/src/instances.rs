//! Hosted instances, their sealed secrets, and their lifecycle in the database.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use herd_core::lifecycle::{InstanceState, LifecycleEvent};
use herd_core::scaling::Scaling;
use herd_core::spec::InstanceOrigin;
use uuid::Uuid;

use crate::accounts::Principal;
use crate::schema::{instance_scaling, instance_secrets, instances, reserved_domains};
use crate::{DbError, Sealer};

#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub domain: String,
    pub web_domain: String,
    pub owner_email: String,
    pub plan_name: String,
    pub version: String,
    pub cluster_id: Option<Uuid>,
    pub database_server_id: Option<Uuid>,
    pub object_store_id: Option<Uuid>,
    pub state: InstanceState,
    pub origin: InstanceOrigin,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = instances)]
struct InstanceRow {
    id: Uuid,
    owner_id: Uuid,
    domain: String,
    web_domain: String,
    owner_email: String,
    plan_name: String,
    version: String,
    cluster_id: Option<Uuid>,
    database_server_id: Option<Uuid>,
    object_store_id: Option<Uuid>,
    state: String,
    failure_reason: Option<String>,
    origin: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

fn state_from(stored: &str, failure_reason: Option<String>) -> Result<InstanceState, DbError> {
    Ok(match stored {
        "pending" => InstanceState::Pending,
        "provisioning" => InstanceState::Provisioning,
        "running" => InstanceState::Running,
        "updating" => InstanceState::Updating,
        "suspended" => InstanceState::Suspended,
        "deleting" => InstanceState::Deleting,
        "deleted" => InstanceState::Deleted,
        "failed" => InstanceState::Failed {
            reason: failure_reason.unwrap_or_default(),
        },
        other => {
            return Err(DbError::Corrupt {
                what: "instance state",
                message: other.to_owned(),
            });
        }
    })
}

impl TryFrom<InstanceRow> for Instance {
    type Error = DbError;

    fn try_from(row: InstanceRow) -> Result<Self, DbError> {
        Ok(Instance {
            state: state_from(&row.state, row.failure_reason)?,
            origin: InstanceOrigin::parse(&row.origin).ok_or_else(|| DbError::Corrupt {
                what: "instance origin",
                message: row.origin.clone(),
            })?,
            id: row.id,
            owner_id: row.owner_id,
            domain: row.domain,
            web_domain: row.web_domain,
            owner_email: row.owner_email,
            plan_name: row.plan_name,
            version: row.version,
            cluster_id: row.cluster_id,
            database_server_id: row.database_server_id,
            object_store_id: row.object_store_id,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

pub struct NewInstance<'a> {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub domain: &'a str,
    pub web_domain: &'a str,
    pub owner_email: &'a str,
    pub plan_name: &'a str,
    pub version: &'a str,
    pub origin: InstanceOrigin,
}

/// Whether an operator reserved `domain` or a domain above it.
pub async fn is_reserved(conn: &mut AsyncPgConnection, domain: &str) -> Result<bool, DbError> {
    let reserved: Vec<String> = reserved_domains::table
        .select(reserved_domains::domain)
        .load(conn)
        .await?;
    Ok(reserved
        .iter()
        .any(|r| domain == r || domain.ends_with(&format!(".{r}"))))
}

pub async fn reserve_domain(
    conn: &mut AsyncPgConnection,
    domain: &str,
    reason: &str,
) -> Result<(), DbError> {
    diesel::insert_into(reserved_domains::table)
        .values((
            reserved_domains::domain.eq(domain),
            reserved_domains::reason.eq(reason),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok(())
}

/// Records a new, pending instance. A domain hosted by a live instance is refused.
pub async fn create_instance(
    conn: &mut AsyncPgConnection,
    new: NewInstance<'_>,
) -> Result<Instance, DbError> {
    let inserted = diesel::insert_into(instances::table)
        .values((
            instances::id.eq(new.id),
            instances::owner_id.eq(new.owner_id),
            instances::domain.eq(new.domain),
            instances::web_domain.eq(new.web_domain),
            instances::owner_email.eq(new.owner_email),
            instances::plan_name.eq(new.plan_name),
            instances::version.eq(new.version),
            instances::origin.eq(new.origin.name()),
        ))
        .returning(InstanceRow::as_returning())
        .get_result(conn)
        .await;
    match inserted {
        Ok(row) => row.try_into(),
        Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
            Err(DbError::DomainTaken(new.domain.to_owned()))
        }
        Err(err) => Err(err.into()),
    }
}

/// One instance, if the principal may see it. Another customer's instance is
/// indistinguishable from a missing one.
pub async fn find_instance(
    conn: &mut AsyncPgConnection,
    principal: &Principal,
    id: Uuid,
) -> Result<Option<Instance>, DbError> {
    let mut query = instances::table.filter(instances::id.eq(id)).into_boxed();
    if let Some(owner) = principal.owner_filter() {
        query = query.filter(instances::owner_id.eq(owner));
    }
    let row = query
        .select(InstanceRow::as_select())
        .first(conn)
        .await
        .optional()?;
    row.map(Instance::try_from).transpose()
}

/// One instance by id, for Herd's own subsystems (jobs, reconciler), never for a request.
pub async fn load_instance(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> Result<Option<Instance>, DbError> {
    let row = instances::table
        .find(id)
        .select(InstanceRow::as_select())
        .first(conn)
        .await
        .optional()?;
    row.map(Instance::try_from).transpose()
}

/// Holds the instance's row until the transaction ends, so that what the
/// caller checks next (the operations under way) stays true until its own
/// change commits: a second request waits here, then sees that change.
pub async fn lock_instance(conn: &mut AsyncPgConnection, id: Uuid) -> Result<(), DbError> {
    instances::table
        .find(id)
        .select(instances::id)
        .for_update()
        .first::<Uuid>(conn)
        .await
        .optional()?;
    Ok(())
}

/// The instances the principal may see, newest first, deleted ones left out.
pub async fn list_instances(
    conn: &mut AsyncPgConnection,
    principal: &Principal,
) -> Result<Vec<Instance>, DbError> {
    let mut query = instances::table
        .filter(instances::state.ne("deleted"))
        .into_boxed();
    if let Some(owner) = principal.owner_filter() {
        query = query.filter(instances::owner_id.eq(owner));
    }
    let rows = query
        .order(instances::created_at.desc())
        .select(InstanceRow::as_select())
        .load(conn)
        .await?;
    rows.into_iter().map(Instance::try_from).collect()
}

/// Moves an instance through its lifecycle. The update only applies if the
/// state is still the one the transition was computed from, so two processes
/// racing on one instance cannot both win.
pub async fn transition(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    event: &LifecycleEvent,
) -> Result<Instance, DbError> {
    let current = load_instance(conn, id)
        .await?
        .ok_or(DbError::Query(DieselError::NotFound))?;
    let next = current
        .state
        .apply(event)
        .map_err(|source| DbError::Transition { id, source })?;
    let failure_reason = match &next {
        InstanceState::Failed { reason } => Some(reason.clone()),
        _ => None,
    };
    let deleted_at = (next == InstanceState::Deleted).then(Utc::now);
    let updated = diesel::update(instances::table)
        .filter(instances::id.eq(id))
        .filter(instances::state.eq(current.state.name()))
        .set((
            instances::state.eq(next.name()),
            instances::failure_reason.eq(failure_reason),
            instances::deleted_at.eq(deleted_at),
        ))
        .returning(InstanceRow::as_returning())
        .get_result(conn)
        .await
        .optional()?;
    updated.ok_or(DbError::ConcurrentChange(id))?.try_into()
}

pub struct Placement {
    pub cluster_id: Uuid,
    pub database_server_id: Uuid,
    pub object_store_id: Uuid,
}

/// Records where an instance lives. Placement is decided once: a second call
/// keeps the first decision, so a resumed provisioning job lands in the same place.
pub async fn place_instance(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    placement: &Placement,
) -> Result<Instance, DbError> {
    diesel::update(instances::table)
        .filter(instances::id.eq(id))
        .filter(instances::cluster_id.is_null())
        .set((
            instances::cluster_id.eq(placement.cluster_id),
            instances::database_server_id.eq(placement.database_server_id),
            instances::object_store_id.eq(placement.object_store_id),
        ))
        .execute(conn)
        .await?;
    load_instance(conn, id)
        .await?
        .ok_or(DbError::Query(DieselError::NotFound))
}

/// Moves an instance's record to the cluster and database server its data
/// was restored on. Its data now comes from a restore, which is what its
/// setup must know: it migrates the schema and creates no owner account.
pub async fn relocate(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    cluster_id: Uuid,
    database_server_id: Uuid,
    object_store_id: Uuid,
) -> Result<Instance, DbError> {
    diesel::update(instances::table.find(id))
        .set((
            instances::cluster_id.eq(cluster_id),
            instances::database_server_id.eq(database_server_id),
            instances::object_store_id.eq(object_store_id),
            instances::origin.eq(InstanceOrigin::Imported.name()),
        ))
        .returning(InstanceRow::as_returning())
        .get_result(conn)
        .await?
        .try_into()
}

/// The ids and states of the instances placed on a cluster, deleted ones left out, oldest first.
pub async fn instances_on_cluster(
    conn: &mut AsyncPgConnection,
    cluster_id: Uuid,
) -> Result<Vec<(Uuid, InstanceState)>, DbError> {
    let rows: Vec<(Uuid, String, Option<String>)> = instances::table
        .filter(instances::cluster_id.eq(cluster_id))
        .filter(instances::state.ne("deleted"))
        .order(instances::created_at)
        .select((instances::id, instances::state, instances::failure_reason))
        .load(conn)
        .await?;
    rows.into_iter()
        .map(|(id, state, reason)| Ok((id, state_from(&state, reason)?)))
        .collect()
}

fn secrets_context(id: Uuid) -> String {
    format!("instance_secrets:{id}")
}

/// Stores an instance's secrets unless it has some already, and returns the
/// stored ones: secrets are generated once and never replaced.
pub async fn keep_secrets(
    conn: &mut AsyncPgConnection,
    sealer: &Sealer,
    id: Uuid,
    generated: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, DbError> {
    let plaintext = serde_json::to_vec(generated).expect("a string map always serialises");
    let sealed = sealer.seal(&plaintext, &secrets_context(id))?;
    diesel::insert_into(instance_secrets::table)
        .values((
            instance_secrets::instance_id.eq(id),
            instance_secrets::sealed.eq(sealed),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    load_secrets(conn, sealer, id)
        .await?
        .ok_or(DbError::Query(DieselError::NotFound))
}

pub async fn load_secrets(
    conn: &mut AsyncPgConnection,
    sealer: &Sealer,
    id: Uuid,
) -> Result<Option<BTreeMap<String, String>>, DbError> {
    let sealed: Option<Vec<u8>> = instance_secrets::table
        .find(id)
        .select(instance_secrets::sealed)
        .first(conn)
        .await
        .optional()?;
    let Some(sealed) = sealed else {
        return Ok(None);
    };
    let plaintext = sealer.open(&sealed, &secrets_context(id))?;
    serde_json::from_slice(&plaintext)
        .map(Some)
        .map_err(|err| DbError::Corrupt {
            what: "instance secrets",
            message: err.to_string(),
        })
}

/// Moves the instance to another plan; the next apply resizes it.
pub async fn set_plan(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    plan_name: &str,
) -> Result<(), DbError> {
    diesel::update(instances::table.find(id))
        .set(instances::plan_name.eq(plan_name))
        .execute(conn)
        .await?;
    Ok(())
}

/// Records the version the instance runs, once an upgrade to it succeeded.
pub async fn set_version(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    version: &herd_core::version::MastodonVersion,
) -> Result<(), DbError> {
    diesel::update(instances::table.find(id))
        .set(instances::version.eq(version.to_string()))
        .execute(conn)
        .await?;
    Ok(())
}

/// How the instance is scaled by hand on top of its plan.
pub async fn load_scaling(conn: &mut AsyncPgConnection, id: Uuid) -> Result<Scaling, DbError> {
    let stored: Option<serde_json::Value> = instance_scaling::table
        .find(id)
        .select(instance_scaling::scaling)
        .first(conn)
        .await
        .optional()?;
    stored
        .map(|value| {
            serde_json::from_value(value).map_err(|err| DbError::Corrupt {
                what: "instance scaling",
                message: err.to_string(),
            })
        })
        .transpose()
        .map(Option::unwrap_or_default)
}

/// Stores the scaling; an empty one removes it, leaving the plan as it is.
pub async fn set_scaling(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    scaling: &Scaling,
) -> Result<(), DbError> {
    if scaling.is_empty() {
        diesel::delete(instance_scaling::table.find(id))
            .execute(conn)
            .await?;
        return Ok(());
    }
    let value = serde_json::to_value(scaling).expect("a scaling always serialises");
    diesel::insert_into(instance_scaling::table)
        .values((
            instance_scaling::instance_id.eq(id),
            instance_scaling::scaling.eq(&value),
        ))
        .on_conflict(instance_scaling::instance_id)
        .do_update()
        .set((
            instance_scaling::scaling.eq(&value),
            instance_scaling::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    Ok(())
}
