//! Herd's HTTP server.
//!
//! Handlers stay thin: they translate HTTP to calls into the layers below and
//! errors into `application/problem+json`.

mod health;
mod problem;

use actix_web::web;

pub use health::Probes;
pub use problem::Problem;

/// Registers every route on an actix `App`.
pub fn configure(probes: Probes) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::new(probes))
            .route("/healthz", web::get().to(health::healthz))
            .route("/readyz", web::get().to(health::readyz));
    }
}
