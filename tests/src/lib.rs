//! Shared helpers for the end-to-end tests.
//!
//! The tests run against the real local stack that `deploy/test.sh` starts on
//! free ports; it exports the stack's settings into the environment.

use std::future::Future;
use std::time::{Duration, Instant};

/// A setting the stack exports. Panics with the remedy when it is missing, so
/// a bare `cargo test` explains itself instead of failing obscurely.
pub fn stack_setting(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the end-to-end tests through `deploy/test.sh`, which starts the local stack")
    })
}

/// A name no other test run uses, valid as a Kubernetes, PostgreSQL or bucket name.
pub fn unique_name(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..12])
}

/// Polls `check` until it yields a value or `deadline` passes.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A database of its own for one test, so tests never see each other's rows
/// or disturb each other's schema.
pub struct TestDatabase {
    admin: diesel_async::AsyncPgConnection,
    name: String,
    pub url: String,
}

impl TestDatabase {
    /// A database with Herd's schema migrated in from scratch.
    pub async fn create(prefix: &str) -> Self {
        let database = Self::create_empty(prefix).await;
        herd_db::run_pending_migrations(&database.url)
            .await
            .expect("migrations apply");
        database
    }

    /// A database without Herd's schema, for tests of the migrations themselves.
    pub async fn create_empty(prefix: &str) -> Self {
        use diesel_async::{AsyncConnection, RunQueryDsl};
        let admin_url = stack_setting("HERD_PG_ADMIN_URL");
        let mut admin = diesel_async::AsyncPgConnection::establish(&admin_url)
            .await
            .expect("superuser connection");
        let name = unique_name(prefix).replace('-', "_");
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create database");
        let mut url = url::Url::parse(&admin_url).expect("admin URL");
        url.set_path(&name);
        TestDatabase {
            admin,
            name,
            url: url.to_string(),
        }
    }

    pub async fn connect(&self) -> diesel_async::AsyncPgConnection {
        use diesel_async::AsyncConnection;
        diesel_async::AsyncPgConnection::establish(&self.url)
            .await
            .expect("connection")
    }

    pub async fn drop_database(mut self) {
        use diesel_async::RunQueryDsl;
        diesel::sql_query(format!("DROP DATABASE {} WITH (FORCE)", self.name))
            .execute(&mut self.admin)
            .await
            .expect("drop database");
    }
}
