//! `/api/v1/fleet/upgrades`: operators upgrade every instance on one version
//! to another in waves. The fleet is the operators' business: anybody else
//! is refused with `403 operators_only`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use herd_core::upgrade::check_jump;
use herd_core::version::MastodonVersion;
use herd_core::waves::{WavePolicy, WavePolicyError};
use herd_db::audit::Actor;
use herd_db::fleet_upgrades::{self, FleetUpgrade, NewFleetUpgrade};
use herd_jobs::fleet_upgrade;
use uuid::Uuid;

use crate::auth::Principal;
use crate::body::HashedJson;
use crate::dto::{CreateFleetUpgradeRequest, FleetUpgradeList, FleetUpgradeView};
use crate::openapi::{
    Conflict, Forbidden, Malformed, NotFound, ServerError, TooLarge, Unauthenticated, Unavailable,
    Unprocessable,
};
use crate::orders::unprocessable;
use crate::{ApiState, Problem};

const DEFAULT_CANARY: u32 = 1;

fn parse_version(field: &str, input: &str) -> Result<MastodonVersion, Problem> {
    input.parse().map_err(|err| {
        unprocessable(
            "invalid_version",
            "Invalid version",
            field,
            format!("{err}"),
        )
    })
}

async fn view(
    conn: &mut AsyncPgConnection,
    upgrade: FleetUpgrade,
    with_members: bool,
) -> Result<FleetUpgradeView, Problem> {
    let members = fleet_upgrades::members(conn, upgrade.id).await?;
    Ok(FleetUpgradeView::new(upgrade, members, with_members))
}

/// Upgrades every instance running `from` to `to`, in waves: the canary
/// first, then waves of `wave_size`, pausing by itself once the failed
/// share of the finished upgrades passes `max_failure_ratio`. Operators only.
#[utoipa::path(
    post,
    path = "/api/v1/fleet/upgrades",
    operation_id = "create_fleet_upgrade",
    tag = "fleet",
    request_body = CreateFleetUpgradeRequest,
    responses(
        (status = 202, description = "The upgrade has started", body = FleetUpgradeView),
        Malformed,
        Unauthenticated,
        Forbidden,
        NotFound,
        Conflict,
        TooLarge,
        Unprocessable,
        ServerError,
        Unavailable,
    )
)]
pub async fn create(
    state: web::Data<ApiState>,
    principal: Principal,
    request: HashedJson<CreateFleetUpgradeRequest>,
) -> Result<HttpResponse, Problem> {
    principal.require_operator()?;
    let request = request.value;
    let from = parse_version("from", &request.from)?;
    let to = parse_version("to", &request.to)?;
    check_jump(from, to).map_err(|err| {
        unprocessable("upgrade_refused", "Upgrade refused", "to", err.to_string())
    })?;
    let policy = WavePolicy {
        canary: request.canary.unwrap_or(DEFAULT_CANARY),
        wave_size: request.wave_size,
        max_failure_ratio: request.max_failure_ratio,
    };
    policy.validate().map_err(|err| {
        let field = match err {
            WavePolicyError::EmptyWave => "wave_size",
            WavePolicyError::Ratio(_) => "max_failure_ratio",
        };
        unprocessable("invalid_waves", "Invalid waves", field, err.to_string())
    })?;
    let rollout_timeout = crate::orders::rollout_timeout(request.rollout_timeout_seconds)?;
    let rollout_timeout_seconds =
        i32::try_from(rollout_timeout.as_secs()).expect("the bounds fit an i32");
    let mut conn = state.connection().await?;
    let created = conn
        .transaction(async |conn| {
            let (from, to) = (from.to_string(), to.to_string());
            let members = fleet_upgrades::running_on_version(conn, &from).await?;
            if members.is_empty() {
                return Err(unprocessable(
                    "no_instances",
                    "No instances",
                    "from",
                    format!("no instance is running Mastodon {from}"),
                ));
            }
            let new = NewFleetUpgrade {
                id: Uuid::now_v7(),
                from_version: &from,
                to_version: &to,
                policy,
                rollout_timeout_seconds,
                created_by: Some(principal.0.account_id),
            };
            let upgrade = fleet_upgrade::start(conn, new, members, Actor::Account(principal.0))
                .await?
                .ok_or_else(|| {
                    Problem::new(
                        StatusCode::CONFLICT,
                        "upgrade_in_progress",
                        "Upgrade in progress",
                        format!("an upgrade of the instances on {from} is running or paused; abort it or let it finish first"),
                    )
                })?;
            view(conn, upgrade, true).await
        })
        .await?;
    Ok(HttpResponse::Accepted().json(created))
}

/// Every fleet upgrade, newest first, with its progress per wave. Operators only.
#[utoipa::path(
    get,
    path = "/api/v1/fleet/upgrades",
    operation_id = "list_fleet_upgrades",
    tag = "fleet",
    responses(
        (status = 200, description = "The upgrades", body = FleetUpgradeList),
        Unauthenticated,
        Forbidden,
        NotFound,
        ServerError,
        Unavailable,
    )
)]
pub async fn list(
    state: web::Data<ApiState>,
    principal: Principal,
) -> Result<web::Json<FleetUpgradeList>, Problem> {
    principal.require_operator()?;
    let mut conn = state.connection().await?;
    let mut upgrades = Vec::new();
    for upgrade in fleet_upgrades::list(&mut conn).await? {
        upgrades.push(view(&mut conn, upgrade, false).await?);
    }
    Ok(web::Json(FleetUpgradeList { upgrades }))
}

/// One fleet upgrade: its state, why it paused, its progress per wave and
/// every member. Operators only.
#[utoipa::path(
    get,
    path = "/api/v1/fleet/upgrades/{id}",
    operation_id = "get_fleet_upgrade",
    tag = "fleet",
    params(("id" = Uuid, Path, description = "The upgrade's id")),
    responses(
        (status = 200, description = "The upgrade", body = FleetUpgradeView),
        Unauthenticated,
        Forbidden,
        NotFound,
        ServerError,
        Unavailable,
    )
)]
pub async fn show(
    state: web::Data<ApiState>,
    principal: Principal,
    id: web::Path<Uuid>,
) -> Result<web::Json<FleetUpgradeView>, Problem> {
    principal.require_operator()?;
    let mut conn = state.connection().await?;
    let upgrade = fleet_upgrades::find(&mut conn, *id, false)
        .await?
        .ok_or_else(Problem::not_found)?;
    Ok(web::Json(view(&mut conn, upgrade, true).await?))
}

/// A control of an upgrade by hand: what it does, and what it needs the
/// upgrade's state to be.
enum Control {
    Pause,
    Resume,
    Abort,
}

impl Control {
    fn refusal(&self) -> &'static str {
        match self {
            Control::Pause => "only a running upgrade can be paused",
            Control::Resume => "only a paused upgrade can be resumed",
            Control::Abort => "the upgrade has ended already",
        }
    }
}

async fn control(
    state: &ApiState,
    principal: &Principal,
    id: Uuid,
    control: Control,
) -> Result<web::Json<FleetUpgradeView>, Problem> {
    principal.require_operator()?;
    let mut conn = state.connection().await?;
    let view = conn
        .transaction(async |conn| {
            fleet_upgrades::find(conn, id, true)
                .await?
                .ok_or_else(Problem::not_found)?;
            let actor = Actor::Account(principal.0);
            let changed = match control {
                Control::Pause => {
                    fleet_upgrade::pause(conn, id, "paused by an operator", actor).await?
                }
                Control::Resume => fleet_upgrade::resume(conn, id, actor).await?,
                Control::Abort => fleet_upgrade::abort(conn, id, actor).await?,
            };
            let upgrade = changed.ok_or_else(|| {
                Problem::new(
                    StatusCode::CONFLICT,
                    "invalid_state",
                    "Not possible in the upgrade's state",
                    control.refusal(),
                )
            })?;
            view(conn, upgrade, true).await
        })
        .await?;
    Ok(web::Json(view))
}

/// Pauses a running upgrade: no more members start; those upgrading finish. Operators only.
#[utoipa::path(
    post,
    path = "/api/v1/fleet/upgrades/{id}/pause",
    operation_id = "pause_fleet_upgrade",
    tag = "fleet",
    params(("id" = Uuid, Path, description = "The upgrade's id")),
    responses(
        (status = 200, description = "The upgrade, paused", body = FleetUpgradeView),
        Unauthenticated,
        Forbidden,
        NotFound,
        Conflict,
        ServerError,
        Unavailable,
    )
)]
pub async fn pause(
    state: web::Data<ApiState>,
    principal: Principal,
    id: web::Path<Uuid>,
) -> Result<web::Json<FleetUpgradeView>, Problem> {
    control(&state, &principal, *id, Control::Pause).await
}

/// Resumes a paused upgrade, whether paused by hand or by the failure
/// bound. The members that failed are retried. Operators only.
#[utoipa::path(
    post,
    path = "/api/v1/fleet/upgrades/{id}/resume",
    operation_id = "resume_fleet_upgrade",
    tag = "fleet",
    params(("id" = Uuid, Path, description = "The upgrade's id")),
    responses(
        (status = 200, description = "The upgrade, running again", body = FleetUpgradeView),
        Unauthenticated,
        Forbidden,
        NotFound,
        Conflict,
        ServerError,
        Unavailable,
    )
)]
pub async fn resume(
    state: web::Data<ApiState>,
    principal: Principal,
    id: web::Path<Uuid>,
) -> Result<web::Json<FleetUpgradeView>, Problem> {
    control(&state, &principal, *id, Control::Resume).await
}

/// Ends an upgrade for good: members not started are skipped; those
/// upgrading finish. Operators only.
#[utoipa::path(
    post,
    path = "/api/v1/fleet/upgrades/{id}/abort",
    operation_id = "abort_fleet_upgrade",
    tag = "fleet",
    params(("id" = Uuid, Path, description = "The upgrade's id")),
    responses(
        (status = 200, description = "The upgrade, aborted", body = FleetUpgradeView),
        Unauthenticated,
        Forbidden,
        NotFound,
        Conflict,
        ServerError,
        Unavailable,
    )
)]
pub async fn abort(
    state: web::Data<ApiState>,
    principal: Principal,
    id: web::Path<Uuid>,
) -> Result<web::Json<FleetUpgradeView>, Problem> {
    control(&state, &principal, *id, Control::Abort).await
}
