//! Herd's migrations against a real PostgreSQL server: they apply, every
//! `down.sql` undoes its `up.sql`, and they apply again.

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use herd_e2e::TestDatabase;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

#[derive(QueryableByName)]
struct Schema {
    #[diesel(sql_type = Text)]
    objects: String,
}

/// Every table, column, function and index in the public schema, one per line:
/// comparing two of these shows whether a down/up cycle left the schema as it was.
const SCHEMA_SHAPE: &str = "
    SELECT coalesce(string_agg(object, E'\\n' ORDER BY object), '') AS objects FROM (
        SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable AS object
          FROM information_schema.columns WHERE table_schema = 'public'
        UNION ALL
        SELECT 'function ' || p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'public'
        UNION ALL
        SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname = 'public'
    ) shape";

async fn schema_shape(conn: &mut AsyncPgConnection) -> String {
    diesel::sql_query(SCHEMA_SHAPE)
        .get_result::<Schema>(conn)
        .await
        .expect("schema shape")
        .objects
}

async fn user_objects(conn: &mut AsyncPgConnection) -> i64 {
    let query =
        "SELECT count(*) AS count FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = 'public' AND c.relname NOT LIKE '%diesel_schema_migrations%'";
    let tables = diesel::sql_query(query)
        .get_result::<Count>(conn)
        .await
        .expect("count")
        .count;
    let functions = diesel::sql_query(
        "SELECT count(*) AS count FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'",
    )
    .get_result::<Count>(conn)
    .await
    .expect("count")
    .count;
    tables + functions
}

#[tokio::test]
async fn migrations_apply_revert_and_apply_again() {
    let database = TestDatabase::create_empty("herd_smoke").await;
    let url = database.url.clone();

    let pool = herd_db::connect(&url, 2);
    let version = herd_db::server_version(&pool)
        .await
        .expect("server version");
    println!("PostgreSQL server version: {version}");

    let first = herd_db::run_pending_migrations(&url)
        .await
        .expect("migrations apply");
    assert!(!first.versions.is_empty(), "no migration was applied");
    let mut conn = database.connect().await;
    let applied_shape = schema_shape(&mut conn).await;

    let reverted = herd_db::revert_all_migrations(&url)
        .await
        .expect("migrations revert");
    assert_eq!(reverted.versions.len(), first.versions.len());
    assert_eq!(
        user_objects(&mut conn).await,
        0,
        "down migrations left objects behind"
    );

    let again = herd_db::run_pending_migrations(&url)
        .await
        .expect("migrations apply again");
    assert_eq!(again.versions, first.versions);
    assert_eq!(
        schema_shape(&mut conn).await,
        applied_shape,
        "the schema differs after down and up"
    );

    let nothing = herd_db::run_pending_migrations(&url)
        .await
        .expect("idempotent");
    assert!(
        nothing.versions.is_empty(),
        "a second run applied {:?}",
        nothing.versions
    );

    drop(conn);
    drop(pool);
    database.drop_database().await;
}

#[tokio::test]
async fn concurrent_migration_runs_apply_each_migration_once() {
    let database = TestDatabase::create_empty("herd_smoke").await;
    let url = database.url.clone();

    let (a, b) = tokio::join!(
        herd_db::run_pending_migrations(&url),
        herd_db::run_pending_migrations(&url)
    );
    let (a, b) = (a.expect("first runner"), b.expect("second runner"));
    // The advisory lock serialises the runners: one applies everything, the other finds nothing to do.
    assert!(
        a.versions.is_empty() != b.versions.is_empty(),
        "applied by both: {a:?} {b:?}"
    );

    database.drop_database().await;
}
