//! Liveness and readiness.
//!
//! `/healthz` says the process serves HTTP and nothing more, so an orchestrator
//! never restarts Herd because a dependency is down. `/readyz` probes each
//! dependency, in parallel and with a deadline, and names those that fail.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use herd_core::readiness::{Dependency, Probe, Readiness};
use serde_json::json;
use tokio::time::timeout;

use crate::Problem;

const PROBE_DEADLINE: Duration = Duration::from_secs(3);

/// The handles readiness probes go through.
#[derive(Clone)]
pub struct Probes {
    pub database: herd_db::Pool,
    pub schema: herd_db::SchemaStatus,
    pub kubernetes: kube::Client,
}

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body("ok")
}

pub async fn readyz(probes: web::Data<Probes>) -> Result<HttpResponse, Problem> {
    let (database, kubernetes) = tokio::join!(
        probe(
            Dependency::Database,
            herd_db::probe_ready(&probes.database, &probes.schema)
        ),
        probe(
            Dependency::Kubernetes,
            herd_kube::server_version(&probes.kubernetes)
        ),
    );
    let readiness = Readiness::from_probes(vec![database, kubernetes]);
    if readiness.ready {
        return Ok(HttpResponse::Ok().json(&readiness));
    }
    let failing = readiness.failing();
    Err(Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "dependency_unreachable",
        "A dependency is unreachable",
        format!("unreachable: {}", failing.join(", ")),
    )
    .with_extensions(json!({ "failing": failing, "dependencies": readiness.dependencies })))
}

async fn probe<E: std::fmt::Display>(
    dependency: Dependency,
    check: impl Future<Output = Result<String, E>>,
) -> Probe {
    match timeout(PROBE_DEADLINE, check).await {
        Ok(Ok(version)) => Probe::reachable(dependency, version),
        Ok(Err(err)) => Probe::unreachable(dependency, err.to_string()),
        Err(_) => Probe::unreachable(dependency, format!("no answer within {PROBE_DEADLINE:?}")),
    }
}
