//! Tenant roles and databases on a PostgreSQL server Herd administers.
//!
//! Every statement here is built from names that passed [`Identifier`]'s
//! pattern and are quoted on top of that, so a name can neither inject SQL nor
//! change case. Passwords never reach the server in clear: Herd sends the
//! SCRAM-SHA-256 verifier, which is what PostgreSQL stores anyway, so no
//! statement log, error message or `pg_stat_activity` row can show one.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::{Client, Config, NoTls};
use url::Url;

use crate::TenancyError;

/// Marks the roles Herd created for tenants. A role without it belongs to
/// someone else (Herd itself, an operator, `postgres`), and Herd refuses to
/// alter or drop it even when asked to by name.
const TENANT_ROLE_MARK: &str = "herd tenant role";

/// A server that does not answer should fail a provisioning step, not hang it.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Names PostgreSQL gives a meaning of its own, or that belong to the server's
/// own databases and roles.
const RESERVED_NAMES: &[&str] = &[
    "public",
    "none",
    "current_user",
    "current_role",
    "session_user",
    "postgres",
    "template0",
    "template1",
];

/// A PostgreSQL server on which Herd holds an administrator (superuser) login.
#[derive(Clone)]
pub struct DatabaseServer {
    config: Config,
}

// The admin URL's password is the key to every tenant on the server.
impl fmt::Debug for DatabaseServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseServer")
            .field("host", &self.host())
            .field("port", &self.port())
            .field("user", &self.config.get_user())
            .finish_non_exhaustive()
    }
}

/// What one Mastodon instance gets on a server: a database of its own, owned
/// by a login role of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantDatabase {
    pub name: String,
    pub role: String,
    /// Caps the instance's connections so one tenant cannot exhaust the server.
    pub connection_limit: u16,
}

/// A tenant role's password. The caller generates it with
/// [`generate_password`] and stores it (encrypted) before the role exists, so a
/// crash between the two cannot leave a role whose password nobody knows.
#[derive(Clone, PartialEq, Eq)]
pub struct RolePassword(String);

impl RolePassword {
    /// Wraps a password read back from Herd's store.
    pub fn new(password: impl Into<String>) -> Self {
        RolePassword(password.into())
    }

    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RolePassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RolePassword(<redacted>)")
    }
}

/// 32 bytes from the operating system's CSPRNG, as 64 hex digits: nothing to
/// escape in a URL, a shell or an env file.
pub fn generate_password() -> Result<RolePassword, TenancyError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|err| TenancyError::Randomness {
        message: err.to_string(),
    })?;
    let hex = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    Ok(RolePassword(hex))
}

/// Where and as whom a tenant's application connects.
#[derive(Clone, PartialEq, Eq)]
pub struct TenantCredentials {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub role: String,
    pub password: RolePassword,
}

impl TenantCredentials {
    /// A `postgres://` URL with the password percent-encoded.
    pub fn database_url(&self) -> String {
        let mut url = Url::parse("postgres://localhost").expect("a constant URL parses");
        // A host that is not a valid URL host (a socket directory) goes in the
        // query, where libpq and tokio-postgres both accept it.
        if url.set_host(Some(&self.host)).is_err() {
            url.query_pairs_mut().append_pair("host", &self.host);
        }
        url.set_port(Some(self.port))
            .expect("a postgres URL has a port");
        url.set_username(&self.role)
            .expect("a postgres URL has a user");
        url.set_password(Some(self.password.expose_secret()))
            .expect("a postgres URL has a password");
        url.set_path(&self.database);
        url.to_string()
    }
}

/// The newest migration in the tenant's Mastodon `schema_migrations` table,
/// read as the tenant; `None` while the schema has not been created.
pub async fn schema_migration_version(
    credentials: &TenantCredentials,
) -> Result<Option<u64>, TenancyError> {
    let mut config =
        Config::from_str(&credentials.database_url()).map_err(|err| TenancyError::AdminUrl {
            message: err.to_string(),
        })?;
    config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|err| postgres_error("connect as the tenant", err))?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::warn!(error = %describe(&err), "PostgreSQL tenant connection failed");
        }
    });
    let exists = client
        .query_one(
            "SELECT to_regclass('public.schema_migrations') IS NOT NULL",
            &[],
        )
        .await
        .map_err(|err| postgres_error("look for schema_migrations", err))?;
    if !exists.get::<_, bool>(0) {
        return Ok(None);
    }
    let newest: Option<String> = client
        .query_one("SELECT max(version) FROM public.schema_migrations", &[])
        .await
        .map_err(|err| postgres_error("read schema_migrations", err))?
        .get(0);
    Ok(newest.and_then(|version| version.parse().ok()))
}

impl fmt::Debug for TenantCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantCredentials")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// What a server holds under a tenant's names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantState {
    pub role: Option<RoleState>,
    pub database: Option<DatabaseState>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleState {
    pub oid: u32,
    /// Whether Herd created the role for a tenant.
    pub tenant_role: bool,
    pub login: bool,
    pub superuser: bool,
    pub create_db: bool,
    pub create_role: bool,
    pub replication: bool,
    pub bypass_rls: bool,
    /// -1 means unlimited.
    pub connection_limit: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseState {
    pub oid: u32,
    pub owner: String,
    pub encoding: String,
    pub public_can_connect: bool,
    /// `None` when the database has no `public` schema.
    pub public_schema: Option<SchemaState>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaState {
    pub owner: String,
    pub public_can_use: bool,
    pub public_can_create: bool,
}

impl DatabaseServer {
    /// `admin_url` is a `postgres://` URL (or libpq key=value string) of a
    /// superuser; its database is where Herd connects to administer the server.
    pub fn new(admin_url: &str) -> Result<Self, TenancyError> {
        let mut config = Config::from_str(admin_url).map_err(|err| TenancyError::AdminUrl {
            message: err.to_string(),
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        Ok(DatabaseServer { config })
    }

    /// Creates or repairs the tenant's role and database until both are as
    /// specified: a login role with no other power, that password and that
    /// connection limit, owning a UTF-8 database nobody else may connect to.
    ///
    /// Safe to repeat and to resume after a crash at any point. Fails with
    /// [`TenancyError::Conflict`] rather than take over a role Herd did not
    /// create for a tenant or a database another role owns.
    pub async fn ensure_tenant(
        &self,
        tenant: &TenantDatabase,
        password: &RolePassword,
    ) -> Result<TenantCredentials, TenancyError> {
        let database = Identifier::new("database", &tenant.name)?;
        let role = Identifier::new("role", &tenant.role)?;

        let admin = self.connect(None).await?;
        lock_tenant(&admin, &database, &role).await?;
        self.ensure_role(&admin, &role, tenant.connection_limit, password)
            .await?;
        self.ensure_database(&admin, &database, &role).await?;

        let inside = self.connect(Some(&database)).await?;
        if schema_state(&inside, "public").await?.is_some() {
            // PostgreSQL 15 already gives `public` to the database owner and
            // CREATE on it to nobody else; older servers and databases
            // restored from them do neither.
            execute(
                &inside,
                &format!("ALTER SCHEMA public OWNER TO {role}"),
                "hand the public schema to the tenant role",
            )
            .await?;
            execute(
                &inside,
                "REVOKE ALL ON SCHEMA public FROM PUBLIC",
                "close the public schema to other roles",
            )
            .await?;
        }

        tracing::info!(
            database = database.name(),
            role = role.name(),
            connection_limit = tenant.connection_limit,
            "tenant database ready"
        );
        Ok(self.tenant_credentials(&tenant.name, &tenant.role, password))
    }

    /// How Herd reaches the tenant's database as the tenant: at this server's
    /// address, which may differ from the one the tenant's pods use.
    pub fn tenant_credentials(
        &self,
        database: &str,
        role: &str,
        password: &RolePassword,
    ) -> TenantCredentials {
        TenantCredentials {
            host: self.host(),
            port: self.port(),
            database: database.to_owned(),
            role: role.to_owned(),
            password: password.clone(),
        }
    }

    /// Drops the tenant's database (ending its sessions) and then its role.
    /// Whatever is already gone is fine, so this too can be repeated or resumed.
    pub async fn drop_tenant(&self, name: &str, role: &str) -> Result<(), TenancyError> {
        let database = Identifier::new("database", name)?;
        let role = Identifier::new("role", role)?;
        let admin = self.connect(None).await?;
        lock_tenant(&admin, &database, &role).await?;

        let role_state = role_state(&admin, &role).await?;
        if let Some(existing) = &role_state {
            refuse_foreign_role(&role, existing)?;
        }
        if let Some(existing) = database_state(&admin, &database).await? {
            refuse_foreign_database(&database, &role, &existing)?;
            execute(
                &admin,
                &format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"),
                "drop the tenant database",
            )
            .await?;
        }
        if role_state.is_some() {
            // Its sessions in other databases (`postgres` is open to every
            // role by default) would otherwise outlive the role.
            admin
                .execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
                    &[&role.name()],
                )
                .await
                .map_err(|err| postgres_error("end the tenant role's sessions", err))?;
            execute(
                &admin,
                &format!("DROP ROLE IF EXISTS {role}"),
                "drop the tenant role",
            )
            .await?;
        }
        tracing::info!(
            database = database.name(),
            role = role.name(),
            "tenant database dropped"
        );
        Ok(())
    }

    /// What the server holds under these names, whoever created it.
    pub async fn inspect_tenant(
        &self,
        name: &str,
        role: &str,
    ) -> Result<TenantState, TenancyError> {
        let database = Identifier::new("database", name)?;
        let role = Identifier::new("role", role)?;
        let admin = self.connect(None).await?;
        let role = role_state(&admin, &role).await?;
        let mut database_state = database_state(&admin, &database).await?;
        drop(admin);
        if let Some(state) = &mut database_state {
            let inside = self.connect(Some(&database)).await?;
            state.public_schema = schema_state(&inside, "public").await?;
        }
        Ok(TenantState {
            role,
            database: database_state,
        })
    }

    async fn ensure_role(
        &self,
        admin: &Client,
        role: &Identifier,
        connection_limit: u16,
        password: &RolePassword,
    ) -> Result<(), TenancyError> {
        match role_state(admin, role).await? {
            Some(existing) => refuse_foreign_role(role, &existing)?,
            // One query string runs as one implicit transaction: a role
            // without its mark would be refused by every later attempt.
            None => {
                execute(
                    admin,
                    &format!(
                        "CREATE ROLE {role} NOLOGIN; COMMENT ON ROLE {role} IS {}",
                        quote_literal(TENANT_ROLE_MARK)
                    ),
                    "create the tenant role",
                )
                .await?
            }
        }

        // Set every attribute and the password on every run: this is what
        // repairs a role left half-made, altered by hand or given a new password.
        let verifier =
            postgres_protocol::password::scram_sha_256(password.expose_secret().as_bytes());
        execute(
            admin,
            &format!(
                "ALTER ROLE {role} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION \
                 NOBYPASSRLS INHERIT CONNECTION LIMIT {connection_limit} VALID UNTIL 'infinity' \
                 PASSWORD {}",
                quote_literal(&verifier)
            ),
            "set the tenant role's attributes and password",
        )
        .await
    }

    async fn ensure_database(
        &self,
        admin: &Client,
        database: &Identifier,
        role: &Identifier,
    ) -> Result<(), TenancyError> {
        match database_state(admin, database).await? {
            Some(existing) => refuse_foreign_database(database, role, &existing)?,
            // CREATE DATABASE refuses to run in a transaction, hence the
            // look-up first rather than a single conditional statement.
            None => {
                execute(
                    admin,
                    &format!(
                        "CREATE DATABASE {database} OWNER {role} TEMPLATE template0 ENCODING 'UTF8'"
                    ),
                    "create the tenant database",
                )
                .await?
            }
        }
        // Also repairs a crash between CREATE DATABASE and here: until this
        // runs, PUBLIC holds PostgreSQL's default CONNECT and TEMPORARY.
        execute(
            admin,
            &format!("REVOKE ALL ON DATABASE {database} FROM PUBLIC"),
            "close the tenant database to other roles",
        )
        .await
    }

    async fn connect(&self, database: Option<&Identifier>) -> Result<Client, TenancyError> {
        let mut config = self.config.clone();
        if let Some(database) = database {
            config.dbname(database.name());
        }
        let (client, connection) = config
            .connect(NoTls)
            .await
            .map_err(|err| postgres_error("connect as administrator", err))?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::warn!(error = %describe(&err), "PostgreSQL admin connection failed");
            }
        });
        Ok(client)
    }

    fn host(&self) -> String {
        match self.config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            #[cfg(unix)]
            Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
            None => "localhost".to_owned(),
        }
    }

    fn port(&self) -> u16 {
        self.config.get_ports().first().copied().unwrap_or(5432)
    }
}

/// Serialises Herd's runs on one tenant until `admin` closes. Without it,
/// concurrent runs race between look-up and creation, and concurrent DDL on
/// one role or database fails with "tuple concurrently updated" instead of
/// waiting. Advisory locks are per database; every run takes them in the admin
/// URL's database, always the role's first, so two runs cannot deadlock.
async fn lock_tenant(
    admin: &Client,
    database: &Identifier,
    role: &Identifier,
) -> Result<(), TenancyError> {
    for key in [
        format!("herd tenant role {}", role.name()),
        format!("herd tenant database {}", database.name()),
    ] {
        admin
            .execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", &[&key])
            .await
            .map_err(|err| postgres_error("lock the tenant", err))?;
    }
    Ok(())
}

fn refuse_foreign_role(role: &Identifier, state: &RoleState) -> Result<(), TenancyError> {
    if state.tenant_role {
        return Ok(());
    }
    Err(TenancyError::Conflict {
        message: format!(
            "role {} exists and is not a tenant role; refusing to alter or drop it",
            role.name()
        ),
    })
}

fn refuse_foreign_database(
    database: &Identifier,
    role: &Identifier,
    state: &DatabaseState,
) -> Result<(), TenancyError> {
    if state.owner == role.name() {
        return Ok(());
    }
    Err(TenancyError::Conflict {
        message: format!(
            "database {} is owned by role {}, not {}; refusing to touch it",
            database.name(),
            state.owner,
            role.name()
        ),
    })
}

async fn role_state(admin: &Client, role: &Identifier) -> Result<Option<RoleState>, TenancyError> {
    let row = admin
        .query_opt(
            "SELECT oid, coalesce(shobj_description(oid, 'pg_authid') = $2, false), rolcanlogin, \
                    rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolconnlimit \
               FROM pg_roles WHERE rolname = $1",
            &[&role.name(), &TENANT_ROLE_MARK],
        )
        .await
        .map_err(|err| postgres_error("look up the tenant role", err))?;
    Ok(row.map(|row| RoleState {
        oid: row.get(0),
        tenant_role: row.get(1),
        login: row.get(2),
        superuser: row.get(3),
        create_db: row.get(4),
        create_role: row.get(5),
        replication: row.get(6),
        bypass_rls: row.get(7),
        connection_limit: row.get(8),
    }))
}

async fn database_state(
    admin: &Client,
    database: &Identifier,
) -> Result<Option<DatabaseState>, TenancyError> {
    let row = admin
        .query_opt(
            "SELECT oid, pg_get_userbyid(datdba)::text, pg_encoding_to_char(encoding)::text, \
                    has_database_privilege('public', oid, 'CONNECT') \
               FROM pg_database WHERE datname = $1",
            &[&database.name()],
        )
        .await
        .map_err(|err| postgres_error("look up the tenant database", err))?;
    Ok(row.map(|row| DatabaseState {
        oid: row.get(0),
        owner: row.get(1),
        encoding: row.get(2),
        public_can_connect: row.get(3),
        public_schema: None,
    }))
}

async fn schema_state(inside: &Client, schema: &str) -> Result<Option<SchemaState>, TenancyError> {
    let row = inside
        .query_opt(
            "SELECT pg_get_userbyid(nspowner)::text, \
                    has_schema_privilege('public', oid, 'USAGE'), \
                    has_schema_privilege('public', oid, 'CREATE') \
               FROM pg_namespace WHERE nspname = $1",
            &[&schema],
        )
        .await
        .map_err(|err| postgres_error("look up the tenant database's schema", err))?;
    Ok(row.map(|row| SchemaState {
        owner: row.get(0),
        public_can_use: row.get(1),
        public_can_create: row.get(2),
    }))
}

async fn execute(client: &Client, sql: &str, operation: &str) -> Result<(), TenancyError> {
    client
        .batch_execute(sql)
        .await
        .map_err(|err| postgres_error(operation, err))
}

fn postgres_error(operation: &str, source: tokio_postgres::Error) -> TenancyError {
    TenancyError::Postgres {
        operation: operation.to_owned(),
        message: describe(&source),
        source,
    }
}

/// tokio-postgres prints only "db error" for a server error; the server's
/// message and SQLSTATE are what an operator needs.
fn describe(err: &tokio_postgres::Error) -> String {
    if let Some(db) = err.as_db_error() {
        return format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        );
    }
    let mut message = err.to_string();
    let mut cause = std::error::Error::source(err);
    while let Some(inner) = cause {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        cause = inner.source();
    }
    message
}

/// A database or role name that matched `^[a-z][a-z0-9_]{0,62}$`: lower case
/// so quoting cannot change which object it names, at most 63 bytes so
/// PostgreSQL does not silently truncate it. Displays quoted.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identifier(String);

impl Identifier {
    fn new(kind: &'static str, value: &str) -> Result<Self, TenancyError> {
        let refuse = |reason| TenancyError::InvalidName {
            kind,
            value: value.to_owned(),
            reason,
        };
        let mut chars = value.chars();
        match chars.next() {
            None => return Err(refuse("it is empty")),
            Some('a'..='z') => {}
            Some(_) => return Err(refuse("it must start with a lower-case ASCII letter")),
        }
        if !chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_')) {
            return Err(refuse(
                "only lower-case ASCII letters, digits and underscores are allowed",
            ));
        }
        if value.len() > 63 {
            return Err(refuse("PostgreSQL names are at most 63 bytes"));
        }
        if value.starts_with("pg_") {
            return Err(refuse("the pg_ prefix is reserved to PostgreSQL"));
        }
        if RESERVED_NAMES.contains(&value) {
            return Err(refuse("the name is reserved"));
        }
        Ok(Identifier(value.to_owned()))
    }

    fn name(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&quote_identifier(&self.0))
    }
}

fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes like PostgreSQL's own `quote_literal`: the `E''` form whenever a
/// backslash occurs, so the result means the same whatever
/// `standard_conforming_strings` is.
fn quote_literal(value: &str) -> String {
    let escaped = value.replace('\'', "''");
    if escaped.contains('\\') {
        format!("E'{}'", escaped.replace('\\', "\\\\"))
    } else {
        format!("'{escaped}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lower_case_names_are_accepted() {
        for name in ["a", "mastodon_1234", "t0", "select", &"a".repeat(63)] {
            let identifier = Identifier::new("database", name).expect(name);
            assert_eq!(identifier.name(), name);
            assert_eq!(identifier.to_string(), format!("\"{name}\""));
        }
    }

    #[test]
    fn names_that_could_escape_or_change_meaning_are_refused() {
        let refused = [
            "",
            "Tenant",
            "tenant\"; DROP DATABASE herd; --",
            "a'b",
            "a;b",
            "a b",
            "a-b",
            "a.b",
            "1tenant",
            "_tenant",
            "tenant\0",
            "ténant",
            "tenant\n",
            &"a".repeat(64),
            "pg_tenant",
            "postgres",
            "template1",
            "public",
            "current_user",
        ];
        for name in refused {
            match Identifier::new("role", name) {
                Err(TenancyError::InvalidName { kind, value, .. }) => {
                    assert_eq!(kind, "role");
                    assert_eq!(value, name);
                }
                other => panic!("{name:?} was not refused: {other:?}"),
            }
        }
    }

    #[test]
    fn identifiers_are_quoted_with_doubled_quotes() {
        assert_eq!(quote_identifier("tenant"), "\"tenant\"");
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_identifier("\""), "\"\"\"\"");
    }

    #[test]
    fn literals_are_quoted_whatever_standard_conforming_strings_is() {
        assert_eq!(quote_literal("plain"), "'plain'");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\'b"), "E'a\\\\''b'");
        assert_eq!(quote_literal("'; DROP ROLE x; --"), "'''; DROP ROLE x; --'");
    }

    #[test]
    fn generated_passwords_are_long_random_hex() {
        let first = generate_password().expect("password");
        let second = generate_password().expect("password");
        assert_eq!(first.expose_secret().len(), 64);
        assert!(first.expose_secret().chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(first, second);
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let password = RolePassword::new("s3cret-password");
        let credentials = TenantCredentials {
            host: "db.example".into(),
            port: 5432,
            database: "tenant".into(),
            role: "tenant".into(),
            password: password.clone(),
        };
        let server =
            DatabaseServer::new("postgres://postgres:admin-s3cret@db.example:5433/postgres")
                .expect("admin URL");
        for printed in [
            format!("{password:?}"),
            format!("{credentials:?}"),
            format!("{server:?}"),
        ] {
            assert!(!printed.contains("s3cret"), "secret printed: {printed}");
        }
    }

    #[test]
    fn credentials_make_a_url_with_the_password_encoded() {
        let credentials = TenantCredentials {
            host: "db.example".into(),
            port: 5433,
            database: "tenant_db".into(),
            role: "tenant_role".into(),
            password: RolePassword::new("p@ss/word"),
        };
        assert_eq!(
            credentials.database_url(),
            "postgres://tenant_role:p%40ss%2Fword@db.example:5433/tenant_db"
        );
        let parsed = Config::from_str(&credentials.database_url()).expect("parses");
        assert_eq!(parsed.get_password(), Some("p@ss/word".as_bytes()));
        assert_eq!(parsed.get_dbname(), Some("tenant_db"));
    }

    #[test]
    fn admin_url_errors_do_not_echo_the_url() {
        let err = DatabaseServer::new("postgres://postgres:admin-s3cret@db.example:notaport/x")
            .expect_err("bad port");
        assert!(matches!(err, TenancyError::AdminUrl { .. }));
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    /// Port 1 on loopback has no server: reaching the network would fail with
    /// a connection error, so getting `InvalidName` proves nothing was sent.
    #[tokio::test]
    async fn bad_names_are_refused_before_connecting() {
        let server =
            DatabaseServer::new("postgres://postgres:x@127.0.0.1:1/postgres").expect("URL");
        let tenant = |name: &str, role: &str| TenantDatabase {
            name: name.into(),
            role: role.into(),
            connection_limit: 5,
        };
        let password = RolePassword::new("password");
        for (name, role) in [("ok_name", "Bad"), ("bad;name", "ok_role"), ("ok", "o'k")] {
            let ensured = server.ensure_tenant(&tenant(name, role), &password).await;
            assert!(
                matches!(ensured, Err(TenancyError::InvalidName { .. })),
                "{ensured:?}"
            );
            let dropped = server.drop_tenant(name, role).await;
            assert!(
                matches!(dropped, Err(TenancyError::InvalidName { .. })),
                "{dropped:?}"
            );
        }
        let unreachable = server
            .ensure_tenant(&tenant("ok_name", "ok_role"), &password)
            .await;
        assert!(
            matches!(unreachable, Err(TenancyError::Postgres { .. })),
            "{unreachable:?}"
        );
    }
}
