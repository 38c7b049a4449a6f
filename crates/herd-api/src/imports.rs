//! `POST /api/v1/imports`: a new instance made from a server exported by
//! Herd or backed up at another host.
//!
//! Everything is checked before anything is made: the order as for a new
//! instance, then the upload in full (a Herd archive is verified; a plain
//! backup is converted into one, which checks it the same way). Only an
//! archive that passed is kept, in Herd's archive bucket, and the instance,
//! its secrets, its operation and its job are recorded in one transaction;
//! the provisioning restores the archive before the workloads start.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use actix_multipart::Multipart;
use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use chrono::{SecondsFormat, Utc};
use diesel_async::AsyncConnection;
use futures::{StreamExt, TryStreamExt};
use herd_core::archive::{Consistency, ConsistencyMethod, Description, EnvFile, Limits, Manifest};
use herd_jobs::StagedArchive;
use herd_portability::{ArchiveError, PlainBackup, ReadOptions, VerifiedArchive, WriteOptions};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use url::Url;
use uuid::Uuid;

use crate::auth::Principal;
use crate::body::HashedJson;
use crate::dto::{CreateInstanceRequest, ImportAccepted, ImportFromUrlRequest, ImportedEnv};
use crate::openapi::{
    Conflict, Malformed, ServerError, TooLarge, Unauthenticated, Unavailable, Unprocessable,
};
use crate::orders::{self, Order, Source};
use crate::{ApiState, Problem};

/// The order's fields; anything longer than this is not a domain, plan,
/// e-mail or version.
const MAX_TEXT_BYTES: usize = 1024;
const TEXT_FIELDS: [&str; 5] = ["domain", "web_domain", "plan", "owner_email", "version"];
const FILE_FIELDS: [&str; 4] = ["archive", "database", "system", "env"];

/// Makes an instance from an archive. The body is either JSON with the
/// order's fields and the `url` of a Herd archive to fetch, or `multipart/form-data`
/// with the order's fields (`domain`, `plan`, `owner_email`, and optionally
/// `version` and `web_domain`) and either `archive`, a Herd archive (plain
/// or zstd-compressed; decrypt an age-encrypted one first), or a plain
/// backup as other hosts make it: `database` (`pg_dump -Fc`), `env`
/// (`.env.production`) and optionally `system` (a tar of `public/system`).
/// A refused upload creates nothing; follow the returned operation.
#[utoipa::path(
    post,
    path = "/api/v1/imports",
    operation_id = "create_import",
    tag = "imports",
    request_body(
        content(
            (ImportFromUrlRequest = "application/json"),
            (String = "multipart/form-data"),
        ),
        description = "The order and a URL to fetch a Herd archive from; or, as form data, the order's fields and the archive or plain backup's files"
    ),
    responses(
        (status = 202, description = "Checked and accepted; the instance is being restored", body = ImportAccepted),
        Malformed,
        Unauthenticated,
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
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    let scratch_name = format!("upload-{}", Uuid::now_v7());
    let dir = state.archives.scratch(&scratch_name).await?;
    let json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    let received = if json {
        let body =
            HashedJson::<ImportFromUrlRequest>::from_request(&request, &mut payload.into_inner())
                .await?;
        Form::fetch(&state, body.value, &dir).await
    } else {
        Form::read(Multipart::new(request.headers(), payload), &dir).await
    };
    let outcome = match received {
        Ok(form) => import(&state, &principal, form, &dir).await,
        Err(problem) => Err(problem),
    };
    // The archive that passed is in the bucket by now; the upload goes either way.
    if let Err(err) = state.archives.discard_scratch(&scratch_name).await {
        tracing::warn!(error = %err, "cannot remove an upload's scratch directory");
    }
    outcome
}

async fn import(
    state: &ApiState,
    principal: &Principal,
    form: Form,
    dir: &Path,
) -> Result<HttpResponse, Problem> {
    let mut request = form.order()?;
    let order = {
        let mut conn = state.connection().await?;
        orders::check_order(&mut conn, &request).await?
    };
    let checked = check_upload(&form, &order, dir).await?;
    let description = &checked.verified.manifest.description;
    if request.web_domain.is_none() {
        // The archived server keeps the web domain it was reached at.
        request.web_domain = Some(description.web_domain.to_string());
    }
    let archived_version = description.mastodon_version;
    let order = {
        let mut conn = state.connection().await?;
        orders::check_order(&mut conn, &request).await?
    };
    if archived_version > order.version {
        return Err(refused(
            "version_downgrade",
            format!(
                "the archive is of Mastodon {archived_version}; it cannot be restored on the older {}",
                order.version
            ),
        ));
    }
    if archived_version < order.version {
        herd_core::upgrade::check_jump(archived_version, order.version)
            .map_err(|err| refused("unsupported_upgrade", err.to_string()))?;
    }

    let filtered = checked.verified.env.filter();
    let secrets = secrets_with(&filtered.kept)?;
    let staged = stage(state, &checked.path).await?;
    let sealer = state.archives.sealer().clone();
    let mut conn = state.connection().await?;
    let created = conn
        .transaction(async |conn| {
            orders::create(
                conn,
                principal,
                &order,
                &Source::Archive {
                    staged: &staged,
                    secrets: &secrets,
                    sealer: &sealer,
                },
            )
            .await
        })
        .await;
    let (instance, operation) = match created {
        Ok(created) => created,
        Err(err) => {
            discard_staged(state, &staged).await;
            return Err(err.into());
        }
    };
    let accepted = ImportAccepted {
        instance: instance.into(),
        operation: operation.into(),
        env: ImportedEnv {
            kept: filtered.kept.entries().map(|(k, _)| k.to_owned()).collect(),
            dropped: filtered
                .dropped
                .iter()
                .map(|(key, policy)| (key.clone(), policy.to_string()))
                .collect(),
        },
    };
    Ok(HttpResponse::Accepted().json(accepted))
}

/// The upload's fields: the order's as text, the files on scratch disk.
struct Form {
    texts: BTreeMap<String, String>,
    files: BTreeMap<&'static str, PathBuf>,
}

impl Form {
    async fn read(mut payload: Multipart, dir: &Path) -> Result<Form, Problem> {
        let mut form = Form {
            texts: BTreeMap::new(),
            files: BTreeMap::new(),
        };
        let limit = Limits::default().max_total_bytes;
        let mut received = 0u64;
        while let Some(mut field) = payload
            .try_next()
            .await
            .map_err(|err| malformed(format!("the multipart body is malformed: {err}")))?
        {
            let name = field.name().unwrap_or_default().to_owned();
            if form.texts.contains_key(&name) || form.files.keys().any(|f| *f == name) {
                return Err(malformed(format!("the field `{name}` is given twice")));
            }
            if TEXT_FIELDS.contains(&name.as_str()) {
                let mut bytes = Vec::new();
                while let Some(chunk) = field.next().await {
                    let chunk = chunk.map_err(|err| malformed(err.to_string()))?;
                    bytes.extend_from_slice(&chunk);
                    if bytes.len() > MAX_TEXT_BYTES {
                        return Err(malformed(format!("the field `{name}` is too long")));
                    }
                }
                let text = String::from_utf8(bytes)
                    .map_err(|_| malformed(format!("the field `{name}` is not UTF-8")))?;
                form.texts.insert(name, text.trim().to_owned());
            } else if let Some(file) = FILE_FIELDS.iter().find(|f| **f == name) {
                let path = dir.join(file);
                let mut out = tokio::fs::File::create(&path)
                    .await
                    .map_err(|err| Problem::internal(&err))?;
                while let Some(chunk) = field.next().await {
                    let chunk = chunk.map_err(|err| malformed(err.to_string()))?;
                    received += chunk.len() as u64;
                    if received > limit {
                        return Err(too_large(limit));
                    }
                    out.write_all(&chunk)
                        .await
                        .map_err(|err| Problem::internal(&err))?;
                }
                out.flush().await.map_err(|err| Problem::internal(&err))?;
                form.files.insert(file, path);
            } else {
                return Err(malformed(format!(
                    "unknown field `{name}`; expected {} and {}",
                    TEXT_FIELDS.join(", "),
                    FILE_FIELDS.join(", ")
                )));
            }
        }
        Ok(form)
    }

    /// Fetches a Herd archive from `request.url` into the scratch directory.
    /// Only public addresses are fetched unless the installation allows
    /// private ones: Herd runs inside the operator's network, and a URL
    /// must not make it read what only that network can reach.
    async fn fetch(
        state: &ApiState,
        request: ImportFromUrlRequest,
        dir: &Path,
    ) -> Result<Form, Problem> {
        let client = fetch_client(&request.url, state.import_from_private_addresses).await?;
        let response = client
            .get(request.url.clone())
            .send()
            .await
            .map_err(|err| invalid_url(format!("fetching {}: {err}", request.url)))?;
        if !response.status().is_success() {
            return Err(invalid_url(format!(
                "{} answered {}",
                request.url,
                response.status()
            )));
        }
        let path = dir.join("archive");
        let mut out = tokio::fs::File::create(&path)
            .await
            .map_err(|err| Problem::internal(&err))?;
        let limit = Limits::default().max_total_bytes;
        let mut received = 0u64;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk =
                chunk.map_err(|err| invalid_url(format!("fetching {}: {err}", request.url)))?;
            received += chunk.len() as u64;
            if received > limit {
                return Err(too_large(limit));
            }
            out.write_all(&chunk)
                .await
                .map_err(|err| Problem::internal(&err))?;
        }
        out.flush().await.map_err(|err| Problem::internal(&err))?;
        let mut texts = BTreeMap::from([
            ("domain".to_owned(), request.domain),
            ("plan".to_owned(), request.plan),
            ("owner_email".to_owned(), request.owner_email),
        ]);
        texts.extend(request.version.map(|v| ("version".to_owned(), v)));
        texts.extend(request.web_domain.map(|v| ("web_domain".to_owned(), v)));
        Ok(Form {
            texts,
            files: BTreeMap::from([("archive", path)]),
        })
    }

    fn order(&self) -> Result<CreateInstanceRequest, Problem> {
        let required = |name: &str| {
            self.texts.get(name).cloned().ok_or_else(|| {
                Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "missing_field",
                    "Missing field",
                    format!("the field `{name}` is required"),
                )
                .with_extensions(json!({ "field": name }))
            })
        };
        Ok(CreateInstanceRequest {
            domain: required("domain")?,
            plan: required("plan")?,
            owner_email: required("owner_email")?,
            version: self.texts.get("version").cloned(),
            web_domain: self.texts.get("web_domain").cloned(),
        })
    }
}

/// An archive that passed every check, on scratch disk.
struct Checked {
    path: PathBuf,
    verified: VerifiedArchive,
}

async fn check_upload(form: &Form, order: &Order, dir: &Path) -> Result<Checked, Problem> {
    let files = &form.files;
    let checked = match (
        files.get("archive"),
        files.get("database"),
        files.get("env"),
    ) {
        (Some(archive), None, None) if !files.contains_key("system") => {
            let path = archive.clone();
            blocking(move || {
                let verified = herd_portability::verify_with(&path, ReadOptions::default())?;
                Ok(Checked { path, verified })
            })
            .await?
        }
        (None, Some(database), Some(env)) => {
            let env_text = tokio::fs::read(env)
                .await
                .map_err(|err| Problem::internal(&err))?;
            let env = String::from_utf8(env_text)
                .map_err(|_| invalid_backup("`env` is not UTF-8 text".to_owned()))
                .and_then(|text| {
                    EnvFile::parse(&text).map_err(|err| invalid_backup(err.to_string()))
                })?;
            let (database, system) = (database.clone(), files.get("system").cloned());
            let description = plain_description(order);
            let path = dir.join("archive.tar");
            blocking(move || pack(&path, &database, system.as_deref(), env, description)).await?
        }
        _ => {
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "missing_field",
                "Nothing to import",
                "upload either `archive`, or `database` and `env` (with `system` for media)",
            ));
        }
    };
    let archived = &checked.verified.manifest.description.local_domain;
    if archived != &order.domain.clone() {
        return Err(refused(
            "domain_mismatch",
            format!(
                "the archive is of {archived}, not of the ordered {}",
                order.domain.clone()
            ),
        ));
    }
    Ok(checked)
}

/// A plain backup says nothing of itself: it is described as what was ordered.
fn plain_description(order: &Order) -> Description {
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    Description {
        herd_version: env!("CARGO_PKG_VERSION").to_owned(),
        local_domain: order.domain.clone(),
        web_domain: order.web_domain.clone(),
        mastodon_version: order.version,
        schema_migration_version: 0,
        created_at: now,
        consistency: Consistency {
            method: ConsistencyMethod::MaintenanceWindow,
            detail: "a plain backup made by another host; its point in time is theirs".to_owned(),
        },
        left_out: Vec::new(),
    }
}

fn pack(
    path: &Path,
    database: &Path,
    system: Option<&Path>,
    env: EnvFile,
    description: Description,
) -> Result<Checked, ArchiveError> {
    let output = std::io::BufWriter::new(std::fs::File::create(path)?);
    let dump_size = std::fs::metadata(database)?.len();
    let system_tar = system.map(std::fs::File::open).transpose()?;
    let (_, output): (Manifest, _) = herd_portability::pack_plain_backup(
        output,
        &WriteOptions::default(),
        Limits::default(),
        PlainBackup {
            dump: std::fs::File::open(database)?,
            dump_size,
            system_tar,
            env,
        },
        description,
    )?;
    output.into_inner().map_err(|err| err.into_error())?;
    let verified = herd_portability::verify_with(path, ReadOptions::default())?;
    Ok(Checked {
        path: path.to_owned(),
        verified,
    })
}

async fn blocking(
    work: impl FnOnce() -> Result<Checked, ArchiveError> + Send + 'static,
) -> Result<Checked, Problem> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| Problem::internal(&err))?
        .map_err(|err| match err {
            ArchiveError::Io(io) => Problem::internal(&io),
            invalid => invalid_backup(invalid.to_string()),
        })
}

/// The secrets a new instance would get, with those the archive carries
/// instead: the old server's keys, so sessions, two-factor secrets, push
/// subscriptions and encrypted columns keep working.
fn secrets_with(kept: &EnvFile) -> Result<BTreeMap<String, String>, Problem> {
    let mut secrets = herd_jobs::with_os_random(herd_core::secrets::generate)
        .map_err(|err| Problem::internal(&err))?;
    secrets.extend(
        kept.entries()
            .map(|(key, value)| (key.to_owned(), value.to_owned())),
    );
    Ok(secrets)
}

/// Keeps the checked archive in the archive bucket of the object store with
/// the most room, where the provisioning reads it from.
async fn stage(state: &ApiState, path: &Path) -> Result<StagedArchive, Problem> {
    let placement = {
        let mut conn = state.connection().await?;
        herd_db::fleet::least_loaded_placement(&mut conn).await?
    };
    let placement = placement.ok_or_else(|| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_capacity",
            "No capacity",
            "the fleet has no room for another instance; retry later",
        )
    })?;
    let staged = StagedArchive {
        object_store_id: placement.object_store_id,
        object_key: format!("imports/{}/archive.tar", Uuid::now_v7()),
    };
    state
        .archives
        .bucket(staged.object_store_id)
        .await?
        .put_file(&staged.object_key, path)
        .await
        .map_err(|err| Problem::internal(&err))?;
    Ok(staged)
}

async fn discard_staged(state: &ApiState, staged: &StagedArchive) {
    let deleted = match state.archives.bucket(staged.object_store_id).await {
        Ok(bucket) => bucket
            .delete(&staged.object_key)
            .await
            .map_err(|e| e.to_string()),
        Err(err) => Err(err.to_string()),
    };
    if let Err(err) = deleted {
        tracing::warn!(error = %err, key = %staged.object_key, "cannot remove a staged archive");
    }
}

fn too_large(limit: u64) -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "Archive too large",
        format!("an import may bring at most {limit} bytes"),
    )
}

/// A client that reaches only the addresses `url`'s host resolved to now,
/// once checked, and follows no redirect: neither a later answer of the
/// name server nor a redirect can lead it elsewhere.
fn invalid_url(detail: String) -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_url",
        "Archive not fetched",
        detail,
    )
    .with_extensions(json!({ "field": "url" }))
}

async fn fetch_client(url: &Url, private_allowed: bool) -> Result<reqwest::Client, Problem> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid_url(format!("{url} is not an http(s) URL")));
    }
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return Err(invalid_url(format!("{url} names no host")));
    };
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|err| invalid_url(format!("{host} does not resolve: {err}")))?
        .collect();
    if addresses.is_empty() {
        return Err(invalid_url(format!("{host} does not resolve")));
    }
    if !private_allowed && let Some(private) = addresses.iter().find(|a| !is_public(a.ip())) {
        return Err(invalid_url(format!(
            "{host} resolves to {}, which is not a public address",
            private.ip()
        )));
    }
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .resolve_to_addrs(host, &addresses)
        .build()
        .map_err(|err| Problem::internal(&err))
}

/// Whether an address belongs to the public internet: not loopback,
/// private, link-local (the cloud metadata services), shared, documentation,
/// multicast or unspecified.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_unspecified()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(mapped) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(mapped));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8)
        }
    }
}

fn malformed(detail: String) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "malformed_request",
        "Malformed request",
        detail,
    )
}

fn invalid_backup(detail: String) -> Problem {
    refused("invalid_archive", detail)
}

fn refused(code: &'static str, detail: String) -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        code,
        "Import refused",
        detail,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "2001:db8::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn urls_to_private_addresses_are_refused_unless_allowed() {
        let refused = fetch_client(&"http://127.0.0.1:9/archive".parse().unwrap(), false)
            .await
            .expect_err("loopback is refused");
        assert_eq!(refused.code, "invalid_url");
        assert!(
            fetch_client(&"http://127.0.0.1:9/archive".parse().unwrap(), true)
                .await
                .is_ok()
        );
        let scheme = fetch_client(&"file:///etc/passwd".parse().unwrap(), true)
            .await
            .expect_err("only http(s)");
        assert_eq!(scheme.code, "invalid_url");
    }
}
