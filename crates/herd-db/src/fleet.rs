//! The fleet: clusters, PostgreSQL servers and S3 stores instances are placed on.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::instances::Placement;
use crate::schema::{clusters, database_servers, object_stores};
use crate::{DbError, Sealer};

pub struct NewCluster<'a> {
    pub name: &'a str,
    pub region: &'a str,
    pub kubeconfig: &'a str,
    pub capacity_instances: i32,
}

pub struct NewDatabaseServer<'a> {
    pub name: &'a str,
    pub region: &'a str,
    pub tenant_host: &'a str,
    pub tenant_port: i32,
    pub admin_url: &'a str,
    pub capacity_databases: i32,
}

pub struct NewObjectStore<'a> {
    pub name: &'a str,
    pub region: &'a str,
    pub s3_endpoint: &'a str,
    pub s3_region: &'a str,
    pub admin_endpoint: &'a str,
    pub admin_token: &'a str,
}

fn context(table: &str, id: Uuid) -> String {
    format!("{table}:{id}")
}

#[derive(QueryableByName)]
struct IdRow {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    id: Uuid,
}

/// The id registered under `name` in `table`, or a new one. The id is chosen
/// before sealing because the seal binds the credentials to it.
async fn id_for_name(
    conn: &mut AsyncPgConnection,
    table: &'static str,
    name: &str,
) -> Result<Uuid, DbError> {
    let existing: Option<IdRow> =
        diesel::sql_query(format!("SELECT id FROM {table} WHERE name = $1"))
            .bind::<diesel::sql_types::Text, _>(name)
            .get_result(conn)
            .await
            .optional()?;
    Ok(existing.map(|row| row.id).unwrap_or_else(Uuid::now_v7))
}

/// Registers a cluster, or updates the one with this name.
pub async fn register_cluster(
    conn: &mut AsyncPgConnection,
    sealer: &Sealer,
    new: NewCluster<'_>,
) -> Result<Uuid, DbError> {
    let id = id_for_name(conn, "clusters", new.name).await?;
    let sealed = sealer.seal(new.kubeconfig.as_bytes(), &context("clusters", id))?;
    let values = (
        clusters::region.eq(new.region),
        clusters::kubeconfig_sealed.eq(&sealed),
        clusters::capacity_instances.eq(new.capacity_instances),
    );
    diesel::insert_into(clusters::table)
        .values((clusters::id.eq(id), clusters::name.eq(new.name), values))
        .on_conflict(clusters::name)
        .do_update()
        .set(values)
        .execute(conn)
        .await?;
    Ok(id)
}

pub async fn register_database_server(
    conn: &mut AsyncPgConnection,
    sealer: &Sealer,
    new: NewDatabaseServer<'_>,
) -> Result<Uuid, DbError> {
    let id = id_for_name(conn, "database_servers", new.name).await?;
    let sealed = sealer.seal(new.admin_url.as_bytes(), &context("database_servers", id))?;
    let values = (
        database_servers::region.eq(new.region),
        database_servers::tenant_host.eq(new.tenant_host),
        database_servers::tenant_port.eq(new.tenant_port),
        database_servers::admin_url_sealed.eq(&sealed),
        database_servers::capacity_databases.eq(new.capacity_databases),
    );
    diesel::insert_into(database_servers::table)
        .values((
            database_servers::id.eq(id),
            database_servers::name.eq(new.name),
            values,
        ))
        .on_conflict(database_servers::name)
        .do_update()
        .set(values)
        .execute(conn)
        .await?;
    Ok(id)
}

pub async fn register_object_store(
    conn: &mut AsyncPgConnection,
    sealer: &Sealer,
    new: NewObjectStore<'_>,
) -> Result<Uuid, DbError> {
    let id = id_for_name(conn, "object_stores", new.name).await?;
    let sealed = sealer.seal(new.admin_token.as_bytes(), &context("object_stores", id))?;
    let values = (
        object_stores::region.eq(new.region),
        object_stores::s3_endpoint.eq(new.s3_endpoint),
        object_stores::s3_region.eq(new.s3_region),
        object_stores::admin_endpoint.eq(new.admin_endpoint),
        object_stores::admin_token_sealed.eq(&sealed),
    );
    diesel::insert_into(object_stores::table)
        .values((
            object_stores::id.eq(id),
            object_stores::name.eq(new.name),
            values,
        ))
        .on_conflict(object_stores::name)
        .do_update()
        .set(values)
        .execute(conn)
        .await?;
    Ok(id)
}

/// The least loaded active member of `table` below its capacity, other than
/// `except`, if any.
async fn least_loaded(
    conn: &mut AsyncPgConnection,
    table: &'static str,
    instance_column: &'static str,
    capacity: &'static str,
    except: Option<Uuid>,
) -> Result<Option<Uuid>, DbError> {
    let query = format!(
        "SELECT m.id FROM {table} m
           LEFT JOIN instances i ON i.{instance_column} = m.id AND i.state <> 'deleted'
          WHERE m.state = 'active' AND m.id IS DISTINCT FROM $1
          GROUP BY m.id, m.name
         HAVING count(i.id) < {capacity}
          ORDER BY count(i.id), m.name
          LIMIT 1"
    );
    let row: Option<IdRow> = diesel::sql_query(query)
        .bind::<diesel::sql_types::Nullable<diesel::sql_types::Uuid>, _>(except)
        .get_result(conn)
        .await
        .optional()?;
    Ok(row.map(|row| row.id))
}

/// The least loaded active cluster with room left, other than `except`.
pub async fn least_loaded_cluster(
    conn: &mut AsyncPgConnection,
    except: Option<Uuid>,
) -> Result<Option<Uuid>, DbError> {
    least_loaded(
        conn,
        "clusters",
        "cluster_id",
        "max(m.capacity_instances)",
        except,
    )
    .await
}

/// The least loaded active database server with room left, other than `except`.
pub async fn least_loaded_database_server(
    conn: &mut AsyncPgConnection,
    except: Option<Uuid>,
) -> Result<Option<Uuid>, DbError> {
    least_loaded(
        conn,
        "database_servers",
        "database_server_id",
        "max(m.capacity_databases)",
        except,
    )
    .await
}

/// Where a new instance goes: the least loaded active cluster, database server
/// and object store with room left. `None` when the fleet is full.
pub async fn least_loaded_placement(
    conn: &mut AsyncPgConnection,
) -> Result<Option<Placement>, DbError> {
    let cluster = least_loaded_cluster(conn, None).await?;
    let database = least_loaded_database_server(conn, None).await?;
    // S3 stores scale out on their own; they have no capacity to exhaust.
    let store = least_loaded(
        conn,
        "object_stores",
        "object_store_id",
        "count(i.id) + 1",
        None,
    )
    .await?;
    Ok(match (cluster, database, store) {
        (Some(cluster_id), Some(database_server_id), Some(object_store_id)) => Some(Placement {
            cluster_id,
            database_server_id,
            object_store_id,
        }),
        _ => None,
    })
}

/// A cluster's kubeconfig, unsealed.
pub async fn cluster_kubeconfig(
    conn: &mut AsyncPgConnection,
    sealer: &Sealer,
    id: Uuid,
) -> Result<String, DbError> {
    let sealed: Vec<u8> = clusters::table
        .find(id)
        .select(clusters::kubeconfig_sealed)
        .first(conn)
        .await?;
    unseal_text(sealer, &sealed, &context("clusters", id))
}

pub struct DatabaseServerAccess {
    pub tenant_host: String,
    pub tenant_port: u16,
    pub admin_url: String,
}

pub async fn database_server_access(
    conn: &mut AsyncPgConnection,
    sealer: &Sealer,
    id: Uuid,
) -> Result<DatabaseServerAccess, DbError> {
    let (tenant_host, tenant_port, sealed): (String, i32, Vec<u8>) = database_servers::table
        .find(id)
        .select((
            database_servers::tenant_host,
            database_servers::tenant_port,
            database_servers::admin_url_sealed,
        ))
        .first(conn)
        .await?;
    Ok(DatabaseServerAccess {
        tenant_host,
        tenant_port: u16::try_from(tenant_port).map_err(|_| DbError::Corrupt {
            what: "database server port",
            message: tenant_port.to_string(),
        })?,
        admin_url: unseal_text(sealer, &sealed, &context("database_servers", id))?,
    })
}

pub struct ObjectStoreAccess {
    pub s3_endpoint: String,
    pub s3_region: String,
    pub admin_endpoint: String,
    pub admin_token: String,
}

pub async fn object_store_access(
    conn: &mut AsyncPgConnection,
    sealer: &Sealer,
    id: Uuid,
) -> Result<ObjectStoreAccess, DbError> {
    let (s3_endpoint, s3_region, admin_endpoint, sealed): (String, String, String, Vec<u8>) =
        object_stores::table
            .find(id)
            .select((
                object_stores::s3_endpoint,
                object_stores::s3_region,
                object_stores::admin_endpoint,
                object_stores::admin_token_sealed,
            ))
            .first(conn)
            .await?;
    Ok(ObjectStoreAccess {
        s3_endpoint,
        s3_region,
        admin_endpoint,
        admin_token: unseal_text(sealer, &sealed, &context("object_stores", id))?,
    })
}

fn unseal_text(sealer: &Sealer, sealed: &[u8], context: &str) -> Result<String, DbError> {
    let plaintext = sealer.open(sealed, context)?;
    String::from_utf8(plaintext).map_err(|err| DbError::Corrupt {
        what: "sealed credential",
        message: err.to_string(),
    })
}

/// The clusters instances may run on: active and draining ones.
pub async fn serving_cluster_ids(conn: &mut AsyncPgConnection) -> Result<Vec<Uuid>, DbError> {
    Ok(clusters::table
        .filter(clusters::state.ne("retired"))
        .order(clusters::name)
        .select(clusters::id)
        .load(conn)
        .await?)
}

/// A cluster or database server of the fleet as operators name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetMember {
    pub id: Uuid,
    pub name: String,
    /// `active`, `draining` or `retired`.
    pub state: String,
}

#[derive(QueryableByName)]
struct MemberRow {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    state: String,
}

/// The member of `table` with `key` as its name or its id.
async fn find_member(
    conn: &mut AsyncPgConnection,
    table: &'static str,
    key: &str,
) -> Result<Option<FleetMember>, DbError> {
    let row: Option<MemberRow> = diesel::sql_query(format!(
        "SELECT id, name, state FROM {table} WHERE name = $1 OR id::text = lower($1)"
    ))
    .bind::<diesel::sql_types::Text, _>(key)
    .get_result(conn)
    .await
    .optional()?;
    Ok(row.map(|row| FleetMember {
        id: row.id,
        name: row.name,
        state: row.state,
    }))
}

/// The cluster named `key`, or with `key` as its id.
pub async fn find_cluster(
    conn: &mut AsyncPgConnection,
    key: &str,
) -> Result<Option<FleetMember>, DbError> {
    find_member(conn, "clusters", key).await
}

/// The database server named `key`, or with `key` as its id.
pub async fn find_database_server(
    conn: &mut AsyncPgConnection,
    key: &str,
) -> Result<Option<FleetMember>, DbError> {
    find_member(conn, "database_servers", key).await
}

pub async fn find_object_store(
    conn: &mut AsyncPgConnection,
    key: &str,
) -> Result<Option<FleetMember>, DbError> {
    find_member(conn, "object_stores", key).await
}

/// Takes a cluster out of placement (`draining`) or puts it back (`active`).
pub async fn set_cluster_state(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    state: &str,
) -> Result<(), DbError> {
    diesel::update(clusters::table.find(id))
        .set((
            clusters::state.eq(state),
            clusters::updated_at.eq(chrono::Utc::now()),
        ))
        .execute(conn)
        .await?;
    Ok(())
}
