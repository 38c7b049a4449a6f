//! Tenant databases and roles on the stack's real PostgreSQL server: each
//! tenant's role works in its own database and nowhere else, cannot create
//! databases or roles, is held to its connection limit, and ensuring or
//! dropping a tenant converges however often it runs and wherever it stopped.

use diesel::QueryableByName;
use diesel::sql_types::Bool;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use herd_e2e::{stack_setting, unique_name};
use herd_tenancy::{
    DatabaseServer, RolePassword, TenancyError, TenantCredentials, TenantDatabase,
    generate_password,
};

#[derive(QueryableByName)]
struct Flag {
    #[diesel(sql_type = Bool)]
    flag: bool,
}

fn server() -> DatabaseServer {
    DatabaseServer::new(&stack_setting("HERD_PG_ADMIN_URL")).expect("admin URL")
}

fn tenant(prefix: &str, connection_limit: u16) -> TenantDatabase {
    let name = unique_name(prefix).replace('-', "_");
    TenantDatabase {
        role: format!("{name}_owner"),
        name,
        connection_limit,
    }
}

async fn admin() -> AsyncPgConnection {
    AsyncPgConnection::establish(&stack_setting("HERD_PG_ADMIN_URL"))
        .await
        .expect("superuser connection")
}

async fn run(conn: &mut AsyncPgConnection, sql: &str) {
    diesel::sql_query(sql)
        .execute(conn)
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"));
}

async fn flag(conn: &mut AsyncPgConnection, sql: &str) -> bool {
    diesel::sql_query(sql)
        .get_result::<Flag>(conn)
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"))
        .flag
}

/// The URL of `credentials` pointed at another database.
fn url_for_database(credentials: &TenantCredentials, database: &str) -> String {
    let mut url = url::Url::parse(&credentials.database_url()).expect("tenant URL");
    url.set_path(database);
    url.to_string()
}

/// The connection error as text; panics if the connection succeeded.
async fn refused_connection(url: &str) -> String {
    match AsyncPgConnection::establish(url).await {
        Ok(_) => panic!("connected although it should not"),
        Err(err) => err.to_string(),
    }
}

/// The database error's message; panics if the statement succeeded.
async fn refused_statement(conn: &mut AsyncPgConnection, sql: &str) -> String {
    match diesel::sql_query(sql).execute(conn).await {
        Ok(_) => panic!("{sql} succeeded although it should not"),
        Err(err) => err.to_string(),
    }
}

async fn assert_gone(server: &DatabaseServer, tenant: &TenantDatabase) {
    let state = server
        .inspect_tenant(&tenant.name, &tenant.role)
        .await
        .expect("inspect");
    assert!(state.role.is_none(), "role left behind: {state:?}");
    assert!(state.database.is_none(), "database left behind: {state:?}");
}

#[tokio::test]
async fn each_tenant_role_works_in_its_own_database_only() {
    let server = server();
    let a = tenant("herd_a", 3);
    let b = tenant("herd_b", 3);
    let a_password = generate_password().expect("password");
    let a_credentials = server
        .ensure_tenant(&a, &a_password)
        .await
        .expect("ensure A");
    let b_credentials = server
        .ensure_tenant(&b, &generate_password().expect("password"))
        .await
        .expect("ensure B");
    assert_eq!(a_credentials.database, a.name);
    assert_eq!(a_credentials.role, a.role);
    assert!(
        !format!("{a_credentials:?}").contains(a_password.expose_secret()),
        "credentials print their password"
    );

    // A's role owns its database: it connects and creates tables there.
    let mut own = AsyncPgConnection::establish(&a_credentials.database_url())
        .await
        .expect("A connects to its own database");
    run(
        &mut own,
        "CREATE TABLE statuses (id bigint PRIMARY KEY, text text NOT NULL)",
    )
    .await;
    run(
        &mut own,
        "INSERT INTO statuses VALUES (1, 'hello fediverse')",
    )
    .await;

    // ...and nowhere else, not even with its own valid credentials.
    let into_b = refused_connection(&url_for_database(&a_credentials, &b.name)).await;
    assert!(
        into_b.contains("permission denied for database"),
        "A's role reached B's database, or failed otherwise: {into_b}"
    );
    let b_into_a = refused_connection(&url_for_database(&b_credentials, &a.name)).await;
    assert!(
        b_into_a.contains("permission denied for database"),
        "{b_into_a}"
    );

    // No power beyond its database.
    let create_database = refused_statement(&mut own, "CREATE DATABASE herd_escape").await;
    assert!(
        create_database.contains("permission denied to create database"),
        "{create_database}"
    );
    let create_role = refused_statement(&mut own, "CREATE ROLE herd_escape").await;
    assert!(
        create_role.contains("permission denied to create role"),
        "{create_role}"
    );

    let state = server
        .inspect_tenant(&a.name, &a.role)
        .await
        .expect("inspect A");
    println!("tenant A: {state:?}");
    let role = state.role.expect("A's role");
    assert!(role.tenant_role && role.login);
    assert!(!role.superuser && !role.create_db && !role.create_role);
    assert!(!role.replication && !role.bypass_rls);
    assert_eq!(role.connection_limit, 3);
    let database = state.database.expect("A's database");
    assert_eq!(database.owner, a.role);
    assert_eq!(database.encoding, "UTF8");
    assert!(!database.public_can_connect);
    let schema = database.public_schema.expect("public schema");
    assert_eq!(schema.owner, a.role);
    assert!(!schema.public_can_use && !schema.public_can_create);

    // The limit holds: three sessions (one open already) and no fourth.
    let mut more = Vec::new();
    for _ in 0..2 {
        more.push(
            AsyncPgConnection::establish(&a_credentials.database_url())
                .await
                .expect("a session within the limit"),
        );
    }
    let over = refused_connection(&a_credentials.database_url()).await;
    assert!(over.contains("too many connections for role"), "{over}");
    drop(more);

    // Ensuring again changes nothing that matters: same objects, data kept,
    // the same password still works.
    let again = server
        .ensure_tenant(&a, &a_password)
        .await
        .expect("ensure A again");
    assert_eq!(again, a_credentials);
    let after = server
        .inspect_tenant(&a.name, &a.role)
        .await
        .expect("inspect A");
    assert_eq!(after.role.as_ref().map(|r| r.oid), Some(role.oid));
    assert_eq!(after.database.as_ref().map(|d| d.oid), Some(database.oid));
    assert!(
        flag(
            &mut own,
            "SELECT count(*) = 1 AS flag FROM statuses WHERE text = 'hello fediverse'"
        )
        .await
    );

    // Dropping ends A's open session, removes both objects, and can repeat.
    server.drop_tenant(&a.name, &a.role).await.expect("drop A");
    assert_gone(&server, &a).await;
    assert!(
        diesel::sql_query("SELECT 1")
            .execute(&mut own)
            .await
            .is_err(),
        "A's session survived the drop"
    );
    server
        .drop_tenant(&a.name, &a.role)
        .await
        .expect("second drop of A");
    let after_drop = refused_connection(&a_credentials.database_url()).await;
    assert!(
        after_drop.contains("password authentication failed")
            || after_drop.contains("does not exist"),
        "{after_drop}"
    );

    // B was untouched by all of it.
    AsyncPgConnection::establish(&b_credentials.database_url())
        .await
        .expect("B still connects");
    server.drop_tenant(&b.name, &b.role).await.expect("drop B");
    assert_gone(&server, &b).await;
}

#[tokio::test]
async fn ensure_repairs_a_half_made_or_tampered_tenant() {
    let server = server();
    let t = tenant("herd_repair", 4);
    let password = generate_password().expect("password");
    let credentials = server.ensure_tenant(&t, &password).await.expect("ensure");
    let mut admin = admin().await;

    // As if a run stopped after the role and before the database, and someone
    // loosened the role meanwhile.
    run(
        &mut admin,
        &format!("DROP DATABASE {} WITH (FORCE)", t.name),
    )
    .await;
    run(
        &mut admin,
        &format!(
            "ALTER ROLE {} NOLOGIN CREATEDB CREATEROLE CONNECTION LIMIT 99 PASSWORD NULL",
            t.role
        ),
    )
    .await;
    server
        .ensure_tenant(&t, &password)
        .await
        .expect("ensure repairs the role");
    let state = server
        .inspect_tenant(&t.name, &t.role)
        .await
        .expect("inspect");
    let role = state.role.expect("role");
    assert!(role.login && !role.create_db && !role.create_role);
    assert_eq!(role.connection_limit, 4);
    assert!(
        !state
            .database
            .expect("database recreated")
            .public_can_connect
    );
    AsyncPgConnection::establish(&credentials.database_url())
        .await
        .expect("the password works again");

    // As if a run stopped right after CREATE DATABASE: PUBLIC's default
    // privileges are still there, and the schema belongs to someone else.
    let mut inside_url = url::Url::parse(&stack_setting("HERD_PG_ADMIN_URL")).expect("URL");
    inside_url.set_path(&t.name);
    let mut inside = AsyncPgConnection::establish(inside_url.as_str())
        .await
        .expect("superuser in the tenant database");
    run(
        &mut admin,
        &format!("GRANT CONNECT, TEMPORARY ON DATABASE {} TO PUBLIC", t.name),
    )
    .await;
    run(&mut inside, "ALTER SCHEMA public OWNER TO postgres").await;
    run(
        &mut inside,
        "GRANT USAGE, CREATE ON SCHEMA public TO PUBLIC",
    )
    .await;
    drop(inside);
    server
        .ensure_tenant(&t, &password)
        .await
        .expect("ensure closes the database again");
    let database = server
        .inspect_tenant(&t.name, &t.role)
        .await
        .expect("inspect")
        .database
        .expect("database");
    assert!(!database.public_can_connect);
    let schema = database.public_schema.expect("public schema");
    assert_eq!(schema.owner, t.role);
    assert!(!schema.public_can_use && !schema.public_can_create);

    // A new password replaces the old one.
    let rotated = generate_password().expect("password");
    let new_credentials = server.ensure_tenant(&t, &rotated).await.expect("rotate");
    AsyncPgConnection::establish(&new_credentials.database_url())
        .await
        .expect("the new password works");
    let old = refused_connection(&credentials.database_url()).await;
    assert!(old.contains("password authentication failed"), "{old}");

    server.drop_tenant(&t.name, &t.role).await.expect("drop");
    assert_gone(&server, &t).await;
}

#[tokio::test]
async fn roles_and_databases_herd_did_not_create_are_left_alone() {
    let server = server();
    let mut admin = admin().await;
    let password = RolePassword::new("never-set");

    // A role of someone else's, such as Herd's own: not altered, not dropped.
    let foreign = tenant("herd_foreign", 2);
    run(
        &mut admin,
        &format!("CREATE ROLE {} LOGIN CONNECTION LIMIT 7", foreign.role),
    )
    .await;
    let refused = server.ensure_tenant(&foreign, &password).await;
    assert!(
        matches!(refused, Err(TenancyError::Conflict { .. })),
        "{refused:?}"
    );
    let refused = server.drop_tenant(&foreign.name, &foreign.role).await;
    assert!(
        matches!(refused, Err(TenancyError::Conflict { .. })),
        "{refused:?}"
    );
    let state = server
        .inspect_tenant(&foreign.name, &foreign.role)
        .await
        .expect("inspect");
    let role = state.role.expect("the foreign role is still there");
    assert!(!role.tenant_role);
    assert_eq!(role.connection_limit, 7);
    assert!(state.database.is_none());

    // A database someone else owns under the tenant's name: not taken over.
    let squatted = tenant("herd_squatted", 2);
    run(&mut admin, &format!("CREATE DATABASE {}", squatted.name)).await;
    let refused = server.ensure_tenant(&squatted, &password).await;
    match &refused {
        Err(err @ TenancyError::Conflict { .. }) => {
            assert!(
                err.to_string().contains("is owned by role postgres"),
                "{err}"
            )
        }
        other => panic!("{other:?}"),
    }
    let refused = server.drop_tenant(&squatted.name, &squatted.role).await;
    assert!(
        matches!(refused, Err(TenancyError::Conflict { .. })),
        "{refused:?}"
    );
    let state = server
        .inspect_tenant(&squatted.name, &squatted.role)
        .await
        .expect("inspect");
    assert_eq!(state.database.expect("still there").owner, "postgres");

    run(&mut admin, &format!("DROP DATABASE {}", squatted.name)).await;
    // The tenant role the refused ensure created is Herd's to drop.
    server
        .drop_tenant(&squatted.name, &squatted.role)
        .await
        .expect("drop the squatted tenant's role");
    run(&mut admin, &format!("DROP ROLE {}", foreign.role)).await;
}

#[tokio::test]
async fn names_that_are_not_plain_identifiers_are_refused_before_any_sql() {
    let server = server();
    let mut admin = admin().await;
    let marker = unique_name("herd_injected").replace('-', "_");
    let password = generate_password().expect("password");
    let attempts = [
        (
            format!("{marker}_db"),
            format!("x\"; CREATE ROLE {marker}; --"),
        ),
        (
            format!("x; CREATE DATABASE {marker}"),
            format!("{marker}_role"),
        ),
        (format!("{marker}_db"), format!("{}_Role", marker)),
        (format!("{marker}'db"), format!("{marker}_role")),
        (format!("{marker}_db"), "pg_signal_backend".to_owned()),
        ("postgres".to_owned(), format!("{marker}_role")),
    ];
    for (name, role) in attempts {
        let tenant = TenantDatabase {
            name: name.clone(),
            role: role.clone(),
            connection_limit: 1,
        };
        let ensured = server.ensure_tenant(&tenant, &password).await;
        assert!(
            matches!(ensured, Err(TenancyError::InvalidName { .. })),
            "{name:?}/{role:?}: {ensured:?}"
        );
        let message = ensured.unwrap_err().to_string();
        assert!(!message.contains(password.expose_secret()), "{message}");
        let dropped = server.drop_tenant(&name, &role).await;
        assert!(
            matches!(dropped, Err(TenancyError::InvalidName { .. })),
            "{name:?}/{role:?}: {dropped:?}"
        );
    }
    let created = format!(
        "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname LIKE '{marker}%') \
             OR EXISTS (SELECT FROM pg_database WHERE datname LIKE '{marker}%') AS flag"
    );
    assert!(
        !flag(&mut admin, &created).await,
        "a refused name reached the server"
    );
}

#[tokio::test]
async fn concurrent_runs_on_one_tenant_all_succeed() {
    let server = server();
    let t = tenant("herd_race", 2);
    let password = generate_password().expect("password");
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let (server, t, password) = (server.clone(), t.clone(), password.clone());
            tokio::spawn(async move { server.ensure_tenant(&t, &password).await })
        })
        .collect();
    for run in runs {
        run.await.expect("task").expect("concurrent ensure");
    }
    let (first, second) = tokio::join!(
        server.drop_tenant(&t.name, &t.role),
        server.drop_tenant(&t.name, &t.role)
    );
    first.expect("concurrent drop");
    second.expect("concurrent drop");
    assert_gone(&server, &t).await;
}
