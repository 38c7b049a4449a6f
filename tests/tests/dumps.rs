//! A tenant database out and in through `pg_dump`/`pg_restore`, as the tenant
//! role: the copy is exact, and what a hostile archive asks for outside the
//! tenant's rights has no effect.

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use herd_e2e::{stack_setting, unique_name};
use herd_tenancy::{
    DatabaseServer, PgTools, TenantCredentials, TenantDatabase, generate_password,
    looks_like_custom_dump,
};

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    value: String,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

async fn tenant(server: &DatabaseServer) -> TenantCredentials {
    let name = unique_name("dump").replace('-', "_");
    let tenant = TenantDatabase {
        role: name.clone(),
        name,
        connection_limit: 10,
    };
    server
        .ensure_tenant(&tenant, &generate_password().unwrap())
        .await
        .expect("tenant")
}

async fn connect(credentials: &TenantCredentials) -> AsyncPgConnection {
    AsyncPgConnection::establish(&credentials.database_url())
        .await
        .expect("tenant connection")
}

async fn run(conn: &mut AsyncPgConnection, sql: &str) {
    diesel::sql_query(sql)
        .execute(conn)
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"));
}

#[tokio::test]
async fn a_dump_restores_exactly_into_another_tenant() {
    let server = DatabaseServer::new(&stack_setting("HERD_PG_ADMIN_URL")).unwrap();
    let (source, target) = (tenant(&server).await, tenant(&server).await);
    let mut conn = connect(&source).await;
    run(
        &mut conn,
        "CREATE TABLE statuses (id bigint PRIMARY KEY, text text)",
    )
    .await;
    run(
        &mut conn,
        "INSERT INTO statuses SELECT n, repeat('é🐘', n % 50) FROM generate_series(1, 5000) n",
    )
    .await;
    run(&mut conn, "INSERT INTO statuses VALUES (0, NULL)").await;

    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("database.dump");
    let mut file = tokio::fs::File::create(&path).await.unwrap();
    let size = PgTools::default()
        .dump(&source, &mut file)
        .await
        .expect("dump");
    assert!(size > 0);
    let mut reread = tokio::fs::File::open(&path).await.unwrap();
    assert!(looks_like_custom_dump(&mut reread).await.unwrap());

    let report = PgTools::default()
        .restore(&target, &path)
        .await
        .expect("restore");
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    let checksum = "SELECT md5(string_agg(id || ':' || coalesce(text, 'NULL'), ',' ORDER BY id)) AS value FROM statuses";
    let original: Row = diesel::sql_query(checksum)
        .get_result(&mut conn)
        .await
        .unwrap();
    let copy: Row = diesel::sql_query(checksum)
        .get_result(&mut connect(&target).await)
        .await
        .unwrap();
    assert_eq!(original.value, copy.value);

    server
        .drop_tenant(&source.database, &source.role)
        .await
        .unwrap();
    server
        .drop_tenant(&target.database, &target.role)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_hostile_dump_has_no_effect_outside_the_tenant() {
    let server = DatabaseServer::new(&stack_setting("HERD_PG_ADMIN_URL")).unwrap();
    let target = tenant(&server).await;

    // A dump made by a superuser elsewhere, holding what no tenant may do:
    // an untrusted extension, another schema, an event trigger, a
    // SECURITY DEFINER function owned by the superuser, grants to roles.
    let mut admin = AsyncPgConnection::establish(&stack_setting("HERD_PG_ADMIN_URL"))
        .await
        .unwrap();
    let hostile = unique_name("hostile").replace('-', "_");
    run(&mut admin, &format!("CREATE DATABASE {hostile}")).await;
    let mut url = url::Url::parse(&stack_setting("HERD_PG_ADMIN_URL")).unwrap();
    url.set_path(&hostile);
    let mut evil = AsyncPgConnection::establish(url.as_str()).await.unwrap();
    for sql in [
        "CREATE EXTENSION IF NOT EXISTS dblink",
        "CREATE SCHEMA evil",
        "CREATE TABLE evil.loot (secret text)",
        "CREATE TABLE public.statuses (id bigint PRIMARY KEY)",
        "INSERT INTO public.statuses VALUES (1)",
        "CREATE FUNCTION public.escalate() RETURNS void LANGUAGE sql SECURITY DEFINER AS $$ ALTER SYSTEM SET work_mem = '1GB' $$",
        "CREATE FUNCTION public.on_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN END $$",
        "CREATE EVENT TRIGGER hijack ON ddl_command_start EXECUTE FUNCTION public.on_ddl()",
        "GRANT ALL ON public.statuses TO PUBLIC",
    ] {
        run(&mut evil, sql).await;
    }
    // Dumped whole, as another host would: every object and every owner.
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("hostile.dump");
    let dumped = std::process::Command::new("pg_dump")
        .args(["--format=custom", "--file"])
        .arg(&path)
        .arg(url.as_str())
        .status()
        .expect("pg_dump runs");
    assert!(dumped.success());

    let report = PgTools::default()
        .restore(&target, &path)
        .await
        .expect("restore runs");
    println!("refused: {:?}", report.refused);

    let mut conn = connect(&target).await;
    let count = |sql: &'static str| diesel::sql_query(sql);
    let rows: Count = count("SELECT count(*) AS count FROM statuses")
        .get_result(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows.count, 1, "the tenant's own data is restored");
    for (what, sql) in [
        (
            "another schema",
            "SELECT count(*) AS count FROM pg_namespace WHERE nspname = 'evil'",
        ),
        (
            "an extension",
            "SELECT count(*) AS count FROM pg_extension WHERE extname = 'dblink'",
        ),
        (
            "an event trigger",
            "SELECT count(*) AS count FROM pg_event_trigger",
        ),
        (
            "a superuser-owned function",
            "SELECT count(*) AS count FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner WHERE r.rolsuper AND p.pronamespace = 'public'::regnamespace",
        ),
    ] {
        let found: Count = count(sql).get_result(&mut conn).await.unwrap();
        assert_eq!(found.count, 0, "the restore created {what}");
    }
    // Calling the restored function runs as the tenant, which may not alter the system.
    let escalated = diesel::sql_query("SELECT public.escalate()")
        .execute(&mut conn)
        .await;
    assert!(escalated.is_err(), "ALTER SYSTEM ran as the tenant");

    drop(evil);
    run(&mut admin, &format!("DROP DATABASE {hostile} WITH (FORCE)")).await;
    server
        .drop_tenant(&target.database, &target.role)
        .await
        .unwrap();
}
