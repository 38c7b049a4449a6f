//! Fingerprints that are equal exactly when two databases or two buckets hold
//! the same content, whatever the physical order of rows or the time of copy.

use std::collections::{BTreeMap, BTreeSet};

use futures::{StreamExt, TryStreamExt};
use herd_tenancy::ObjectStore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::FixtureError;
use crate::generate::connect;
use herd_tenancy::when_busy;

/// Objects fetched at once; also the bound on object bodies held in memory.
const FETCHES_IN_FLIGHT: usize = 16;

/// Output settings that change how values print; fixed so a fingerprint does
/// not depend on the server's or the role's defaults.
const STABLE_OUTPUT: &str = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; \
    SET IntervalStyle = 'postgres'; SET extra_float_digits = 1; SET bytea_output = 'hex'; \
    BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseFingerprint {
    /// Every table of the `public` schema.
    pub tables: BTreeMap<String, TableFingerprint>,
    /// Every sequence of the `public` schema with its last value (`None`
    /// before the first `nextval`).
    pub sequences: BTreeMap<String, Option<i64>>,
    /// Every function of the `public` schema with the MD5 of its definition.
    pub functions: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableFingerprint {
    pub rows: i64,
    /// Independent of the rows' physical order; see [`database_fingerprint`].
    pub checksum: String,
    /// Name, type, nullability and default of each column, in order.
    pub columns: Vec<String>,
    pub indexes: BTreeSet<String>,
    pub constraints: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketFingerprint {
    pub objects: BTreeMap<String, ObjectFingerprint>,
    pub total_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectFingerprint {
    pub size: u64,
    pub sha256: String,
}

/// Fingerprints the `public` schema of a database, in one snapshot.
///
/// A table's checksum hashes each row's text form with MD5 and adds up the
/// two 64-bit halves of the hashes as `numeric`. Addition does not care about
/// order and the aggregate keeps one running sum, so the server's memory stays
/// constant however large the table: an ordered `string_agg` of row hashes
/// would have to sort and hold 32 bytes per row and fails past 1 GB of text.
/// With 128 bits per row, a changed row changes the sums unless its hash
/// collides, which is out of reach for accidental differences. Row text
/// depends on output settings, which are pinned for the session.
pub async fn database_fingerprint(database_url: &str) -> Result<DatabaseFingerprint, FixtureError> {
    let client = connect(database_url).await?;
    client
        .batch_execute(STABLE_OUTPUT)
        .await
        .map_err(FixtureError::postgres("start a snapshot"))?;
    let pairs = |sql: &'static str| {
        let client = &client;
        async move {
            let rows = client
                .query(sql, &[])
                .await
                .map_err(FixtureError::postgres(sql))?;
            Ok::<_, FixtureError>(
                rows.iter()
                    .map(|row| (row.get::<_, String>(0), row.get::<_, String>(1)))
                    .collect::<Vec<_>>(),
            )
        }
    };
    let mut tables: BTreeMap<String, TableFingerprint> = BTreeMap::new();
    for (table, column) in pairs(
        "SELECT c.relname::text, a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
                || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
                || coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '')
         FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
         LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
         ORDER BY c.relname, a.attnum",
    )
    .await?
    {
        tables
            .entry(table)
            .or_insert_with(|| TableFingerprint {
                rows: 0,
                checksum: String::new(),
                columns: Vec::new(),
                indexes: BTreeSet::new(),
                constraints: BTreeSet::new(),
            })
            .columns
            .push(column);
    }
    for (table, index) in
        pairs("SELECT tablename::text, indexdef FROM pg_indexes WHERE schemaname = 'public'")
            .await?
    {
        if let Some(fingerprint) = tables.get_mut(&table) {
            fingerprint.indexes.insert(index);
        }
    }
    for (table, constraint) in pairs(
        "SELECT c.relname::text, con.conname || ' ' || pg_get_constraintdef(con.oid)
         FROM pg_constraint con
         JOIN pg_class c ON c.oid = con.conrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public'",
    )
    .await?
    {
        if let Some(fingerprint) = tables.get_mut(&table) {
            fingerprint.constraints.insert(constraint);
        }
    }
    for (table, fingerprint) in &mut tables {
        let sql = format!(
            "SELECT count(*),
                    coalesce(sum(('x' || substr(h, 1, 16))::bit(64)::bigint::numeric), 0)::text,
                    coalesce(sum(('x' || substr(h, 17, 16))::bit(64)::bigint::numeric), 0)::text
             FROM (SELECT md5(t::text) AS h FROM public.{} AS t) AS hashed",
            quote_identifier(table)
        );
        let row = client
            .query_one(&sql, &[])
            .await
            .map_err(FixtureError::postgres(&sql))?;
        fingerprint.rows = row.get(0);
        let sums = format!(
            "{}:{}:{}",
            fingerprint.rows,
            row.get::<_, String>(1),
            row.get::<_, String>(2)
        );
        fingerprint.checksum = hex(&Sha256::digest(sums.as_bytes())[..16]);
    }
    let sequences = client
        .query(
            "SELECT sequencename::text, last_value FROM pg_sequences WHERE schemaname = 'public'",
            &[],
        )
        .await
        .map_err(FixtureError::postgres("list sequences"))?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let functions = pairs(
        "SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
                md5(pg_get_functiondef(p.oid))
         FROM pg_proc p
         JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'public' AND p.prokind IN ('f', 'p')",
    )
    .await?
    .into_iter()
    .collect();
    client
        .batch_execute("COMMIT")
        .await
        .map_err(FixtureError::postgres("end the snapshot"))?;
    Ok(DatabaseFingerprint {
        tables,
        sequences,
        functions,
    })
}

/// Fingerprints every object of a bucket by size and SHA-256, leaving out
/// keys under `exclude_prefix` (for example `cache/`, which exports may drop).
pub async fn bucket_fingerprint(
    store: &ObjectStore,
    exclude_prefix: Option<&str>,
) -> Result<BucketFingerprint, FixtureError> {
    let keys = when_busy(|| store.list("")).await?;
    let objects: BTreeMap<String, ObjectFingerprint> = futures::stream::iter(
        keys.into_iter()
            .filter(|key| exclude_prefix.is_none_or(|prefix| !key.starts_with(prefix))),
    )
    .map(|key| async move {
        let body = when_busy(|| store.get(&key)).await?;
        let fingerprint = ObjectFingerprint {
            size: body.len() as u64,
            sha256: hex(&Sha256::digest(&body)),
        };
        Ok::<_, FixtureError>((key, fingerprint))
    })
    .buffer_unordered(FETCHES_IN_FLIGHT)
    .try_collect()
    .await?;
    Ok(BucketFingerprint {
        total_bytes: objects.values().map(|object| object.size).sum(),
        objects,
    })
}

fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
