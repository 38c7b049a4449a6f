//! Writes a fixture: the schema and rows into PostgreSQL, the media into S3.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use herd_tenancy::{ObjectStore, when_busy};
use serde::Serialize;
use serde_json::json;
use tokio_postgres::{Client, NoTls};

use crate::FixtureError;
use crate::copy::{CopyRows, Ids, Millis, Null, Time, Words};
use crate::model::{
    Account, EDGE_TIMES, Kind, LANGUAGES, Media, Object, REMOTE_DOMAINS, Scale, Status, WORDS,
};
use crate::rng::Rng;

const SCHEMA: &str = include_str!("schema.sql");
const CONSTRAINTS: &str = include_str!("constraints.sql");
/// Uploads in flight at once; also the bound on object bodies held in memory.
const UPLOADS_IN_FLIGHT: usize = 16;
const LONG_TEXT_BYTES: usize = 100 * 1024;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// What to generate.
#[derive(Debug, Clone)]
pub struct FixtureSpec {
    /// The same seed gives the same rows and the same objects, byte for byte.
    pub seed: u64,
    /// Units of size: each adds 50 accounts, 2,000 statuses with their
    /// favourites, follows, tags and notifications (a few MB of database) and
    /// about 28 MB of media.
    pub scale: u64,
    /// Object sizes in percent of the usual ones, to weigh media against the
    /// database: 100 gives about 28 MB a unit, 10 about 3 MB.
    pub media_percent: u64,
    /// The instance's `LOCAL_DOMAIN`, which local URIs are built on.
    pub local_domain: String,
}

/// What was generated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FixtureSummary {
    pub rows: BTreeMap<String, u64>,
    pub objects: u64,
    pub object_bytes: u64,
}

/// Creates the schema and rows in the database's `public` schema (which must
/// hold none of these tables yet) and uploads the media into the bucket, both
/// at once.
pub async fn generate(
    database_url: &str,
    store: &ObjectStore,
    spec: &FixtureSpec,
) -> Result<FixtureSummary, FixtureError> {
    let scale = Scale::new(spec.seed, spec.scale, spec.media_percent);
    let (rows, (objects, object_bytes)) = tokio::try_join!(
        load_database(database_url, &scale, &spec.local_domain),
        upload_objects(store, &scale),
    )?;
    Ok(FixtureSummary {
        rows,
        objects,
        object_bytes,
    })
}

pub(crate) async fn connect(database_url: &str) -> Result<Client, FixtureError> {
    let (client, connection) = tokio_postgres::connect(database_url, NoTls)
        .await
        .map_err(FixtureError::postgres("connect"))?;
    tokio::spawn(connection);
    Ok(client)
}

async fn load_database(
    database_url: &str,
    scale: &Scale,
    local_domain: &str,
) -> Result<BTreeMap<String, u64>, FixtureError> {
    let client = connect(database_url).await?;
    let salt = scale.rng("salt", 0).hex(16);
    execute(
        &client,
        "create the schema",
        &SCHEMA.replace("{salt}", &salt),
    )
    .await?;
    let writer = Writer {
        client: &client,
        scale,
        local_domain,
    };
    // In dependency order; each load starts only when awaited.
    let loads: Vec<(&str, BoxFuture<'_, Result<u64, FixtureError>>)> = vec![
        ("schema_migrations", writer.schema_migrations().boxed()),
        ("ar_internal_metadata", writer.metadata().boxed()),
        ("accounts", writer.accounts().boxed()),
        ("oauth_applications", writer.applications().boxed()),
        ("users", writer.users().boxed()),
        ("oauth_access_tokens", writer.access_tokens().boxed()),
        ("statuses", writer.statuses().boxed()),
        ("media_attachments", writer.media_attachments().boxed()),
        ("tags", writer.tags().boxed()),
        ("statuses_tags", writer.statuses_tags().boxed()),
        ("follows", writer.follows().boxed()),
        ("favourites", writer.favourites().boxed()),
        ("domain_blocks", writer.domain_blocks().boxed()),
        ("settings", writer.settings().boxed()),
        ("notifications", writer.notifications().boxed()),
    ];
    let mut rows = BTreeMap::new();
    for (table, load) in loads {
        rows.insert(table.to_owned(), load.await?);
    }
    // Constraints last: creating them validates every reference the rows make.
    execute(&client, "create indexes and foreign keys", CONSTRAINTS).await?;
    execute(
        &client,
        "advance the id sequences",
        "SELECT setval('accounts_id_seq', (SELECT count(*) + 1 FROM accounts));
         SELECT setval('statuses_id_seq', (SELECT count(*) + 1 FROM statuses));
         SELECT setval('media_attachments_id_seq', (SELECT count(*) + 1 FROM media_attachments));
         SELECT setval('users_id_seq', max(id)) FROM users;",
    )
    .await?;
    Ok(rows)
}

async fn execute(client: &Client, what: &str, sql: &str) -> Result<(), FixtureError> {
    client
        .batch_execute(sql)
        .await
        .map_err(FixtureError::postgres(what))
}

async fn upload_objects(store: &ObjectStore, scale: &Scale) -> Result<(u64, u64), FixtureError> {
    futures::stream::iter(scale.objects())
        .map(|object| async move {
            let body = object_body(scale.seed, &object);
            when_busy(|| store.put(&object.key, body.clone()))
                .await
                .map(|()| object.size)
        })
        .buffer_unordered(UPLOADS_IN_FLIGHT)
        .try_fold((0, 0), |(count, bytes), size| async move {
            Ok((count + 1, bytes + size))
        })
        .await
        .map_err(FixtureError::from)
}

/// Pseudo-random bytes behind the magic number of the object's type, so
/// tools that sniff content see an image or a video.
pub fn object_body(seed: u64, object: &Object) -> Bytes {
    let magic: &[u8] = match object.content_type {
        "image/png" => b"\x89PNG\r\n\x1a\n",
        "image/jpeg" => b"\xff\xd8\xff\xe0",
        _ => b"\x00\x00\x00\x20ftypisom",
    };
    let mut body = vec![0; object.size as usize];
    Rng::derive(seed, &object.key, 0).fill(&mut body);
    let prefix = magic.len().min(body.len());
    body[..prefix].copy_from_slice(&magic[..prefix]);
    Bytes::from(body)
}

struct Writer<'a> {
    client: &'a Client,
    scale: &'a Scale,
    local_domain: &'a str,
}

impl Writer<'_> {
    async fn copy(&self, table: &'static str, columns: &str) -> Result<CopyRows, FixtureError> {
        CopyRows::start(self.client, table, columns).await
    }

    fn host<'h>(&'h self, account: &'h Account) -> &'h str {
        account.domain.unwrap_or(self.local_domain)
    }

    async fn schema_migrations(&self) -> Result<u64, FixtureError> {
        let mut rows = self.copy("schema_migrations", "version").await?;
        // Mastodon's migrations are stamped by the minute they were written;
        // a few a month from 2016 to the current release.
        let mut rng = self.scale.rng("migrations", 0);
        for month in 0..(11 * 12) {
            for _ in 0..rng.range(1, 4) {
                rows.field(format!(
                    "{}{:02}{:02}{:02}{:02}{:02}",
                    2016 + month / 12,
                    1 + month % 12,
                    rng.range(1, 29),
                    rng.below(24),
                    rng.below(60),
                    rng.below(60)
                ));
                rows.end_row().await?;
            }
        }
        rows.finish().await
    }

    async fn metadata(&self) -> Result<u64, FixtureError> {
        let mut rows = self
            .copy("ar_internal_metadata", "key, value, created_at, updated_at")
            .await?;
        let created = Time::Literal("2022-11-01 00:00:00.123456");
        rows.field("environment")
            .field("production")
            .field(&created)
            .field(&created);
        rows.end_row().await?;
        rows.finish().await
    }

    async fn accounts(&self) -> Result<u64, FixtureError> {
        let mut rows = self
            .copy(
                "accounts",
                "id, username, domain, private_key, public_key, created_at, updated_at, note, \
                 display_name, uri, url, avatar_file_name, avatar_content_type, avatar_file_size, \
                 avatar_updated_at, avatar_remote_url, locked, last_webfingered_at, inbox_url, \
                 outbox_url, shared_inbox_url, followers_url, protocol, memorial, \
                 moved_to_account_id, fields, actor_type, discoverable, also_known_as, silenced_at, \
                 suspended_at, trendable, indexable, attribution_domains",
            )
            .await?;
        for index in 0..self.scale.accounts {
            let account = self.scale.account(index);
            let mut rng = self.scale.rng("account-row", index);
            let remote = account
                .domain
                .map(|domain| format!("https://{domain}/users/{}", account.username));
            let avatar_name = account
                .avatar
                .as_ref()
                .map(|avatar| avatar.key.rsplit('/').next().unwrap_or_default().to_owned());
            let fields = match rng.below(3) {
                0 => None,
                1 => Some("[]".to_owned()),
                _ => Some(
                    json!([
                        {"name": sentence(&mut rng, 2), "value": sentence(&mut rng, 4)},
                        {"name": "Website 🌐", "value": "<a href=\"https://example.com\">example.com</a>"},
                    ])
                    .to_string(),
                ),
            };
            rows.field(account.id)
                .field(&account.username)
                .field(account.domain)
                .field(
                    account
                        .domain
                        .is_none()
                        .then(|| pem(&mut rng, "RSA PRIVATE KEY", 1190)),
                )
                .field(pem(&mut rng, "PUBLIC KEY", 294))
                .field(Millis(account.created_ms))
                .field(Millis(account.created_ms + HOUR_MS))
                .field(if index == 1 {
                    long_text(&mut rng)
                } else {
                    let words = rng.below(30);
                    sentence(&mut rng, words)
                })
                .field(if rng.percent(10) {
                    String::new()
                } else {
                    sentence(&mut rng, 3)
                })
                // Mastodon leaves a local account's URIs empty and derives them.
                .field(remote.clone().unwrap_or_default())
                .field(
                    account
                        .domain
                        .map(|domain| format!("https://{domain}/@{}", account.username)),
                )
                .field(avatar_name.as_deref())
                .field(account.avatar.as_ref().map(|avatar| avatar.content_type))
                .field(account.avatar.as_ref().map(|avatar| avatar.size as i64))
                .field(account.avatar.as_ref().map(|_| Millis(account.created_ms)))
                .field(
                    account.domain.and(avatar_name.as_ref()).map(|name| {
                        format!("https://files.{}/avatars/{name}", self.host(&account))
                    }),
                )
                .field(rng.percent(10))
                .field(
                    account
                        .domain
                        .map(|_| edge_or_time(&mut rng, account.created_ms)),
                )
                .field(
                    remote
                        .as_ref()
                        .map(|uri| format!("{uri}/inbox"))
                        .unwrap_or_default(),
                )
                .field(
                    remote
                        .as_ref()
                        .map(|uri| format!("{uri}/outbox"))
                        .unwrap_or_default(),
                )
                .field(
                    account
                        .domain
                        .map(|domain| format!("https://{domain}/inbox"))
                        .unwrap_or_default(),
                )
                .field(
                    remote
                        .as_ref()
                        .map(|uri| format!("{uri}/followers"))
                        .unwrap_or_default(),
                )
                .field(i64::from(account.domain.is_some()))
                .field(index % 53 == 11)
                .field((index % 41 == 7).then(|| self.scale.account(index - 1).id))
                .field(fields)
                .field(if rng.percent(5) { "Service" } else { "Person" })
                .field(rng.percent(70).then_some(rng.percent(50)))
                .field(
                    match index % 7 {
                        0 => Some(vec!["https://old.example/users/me"]),
                        1 => Some(vec![]),
                        _ => None,
                    }
                    .as_deref()
                    .map(Words),
                )
                .field((index % 23 == 5).then(|| Millis(account.created_ms + 24 * HOUR_MS)))
                .field((index % 29 == 6).then(|| Millis(account.created_ms + 48 * HOUR_MS)))
                .field(rng.percent(60).then_some(rng.percent(50)))
                .field(rng.percent(50))
                .field(Words(if index % 11 == 0 {
                    &["example.com", "blog.example"]
                } else {
                    &[]
                }));
            rows.end_row().await?;
        }
        rows.finish().await
    }

    async fn applications(&self) -> Result<u64, FixtureError> {
        let mut rows = self
            .copy(
                "oauth_applications",
                "name, uid, secret, redirect_uri, scopes, created_at, updated_at, superapp, website",
            )
            .await?;
        let mut rng = self.scale.rng("applications", 0);
        for (name, superapp, website) in [
            ("Web", true, None),
            ("Tusky", false, Some("https://tusky.app")),
            ("Ivory 📱", false, None),
        ] {
            let created = Millis(1_667_260_800_000);
            rows.field(name)
                .field(rng.hex(16))
                .field(rng.hex(32))
                .field("urn:ietf:wg:oauth:2.0:oob")
                .field("read write follow push")
                .field(&created)
                .field(&created)
                .field(superapp)
                .field(website);
            rows.end_row().await?;
        }
        rows.finish().await
    }

    async fn users(&self) -> Result<u64, FixtureError> {
        let mut rows = self
            .copy(
                "users",
                "id, email, created_at, updated_at, encrypted_password, reset_password_token, \
                 reset_password_sent_at, sign_in_count, current_sign_in_at, last_sign_in_at, \
                 confirmation_token, confirmed_at, confirmation_sent_at, unconfirmed_email, locale, \
                 account_id, disabled, chosen_languages, approved, otp_required_for_login, \
                 otp_backup_codes, role_id, settings, time_zone, otp_secret",
            )
            .await?;
        for index in 0..self.scale.accounts {
            let account = self.scale.account(index);
            let Some(user_id) = self.scale.user_id(&account) else {
                continue;
            };
            let mut rng = self.scale.rng("user", index);
            let two_factor = rng.percent(20);
            let confirmed = !rng.percent(5);
            rows.field(user_id)
                .field(format!("{}@{}", account.username, self.local_domain))
                .field(Millis(account.created_ms))
                .field(Millis(account.created_ms + HOUR_MS))
                .field(format!("$2a$10${}", base64_of(&mut rng, 40)))
                .field(rng.percent(5).then(|| rng.hex(20)))
                .field(Null)
                .field(rng.below(500) as i64)
                .field(edge_or_time(&mut rng, account.created_ms))
                .field(rng.percent(90).then_some(Millis(account.created_ms + DAY_MS)))
                .field(rng.hex(10))
                .field(confirmed.then_some(Millis(account.created_ms + 60_000)))
                .field(Millis(account.created_ms))
                .field(rng.percent(3).then(|| format!("new-{}@example.com", account.username)))
                .field(rng.percent(70).then(|| rng.pick(LANGUAGES)))
                .field(account.id)
                .field(rng.percent(2))
                .field(rng.percent(30).then_some(Words(&["en", "ja"])))
                .field(!rng.percent(3))
                .field(two_factor)
                .field(two_factor.then_some(Words(&["a1b2c3d4e5", "f6a7b8c9d0", "0123456789"])))
                .field((index == 0).then_some(3_i64))
                .field(rng.percent(50).then(|| {
                    json!({"default_language": rng.pick(LANGUAGES), "theme": "contrast", "web.emoji": "🦣"})
                        .to_string()
                }))
                .field(rng.percent(40).then_some("Asia/Tokyo"))
                // Active Record encryption's stored form; without the
                // instance's keys it is unreadable, which is the point.
                .field(two_factor.then(|| {
                    json!({"p": base64_of(&mut rng, 32), "h": {"iv": base64_of(&mut rng, 12), "at": base64_of(&mut rng, 16)}})
                        .to_string()
                }));
            rows.end_row().await?;
        }
        rows.finish().await
    }

    async fn access_tokens(&self) -> Result<u64, FixtureError> {
        let mut rows = self
            .copy(
                "oauth_access_tokens",
                "token, refresh_token, expires_in, revoked_at, created_at, scopes, application_id, \
                 resource_owner_id, last_used_at, last_used_ip",
            )
            .await?;
        for index in 0..self.scale.accounts {
            let account = self.scale.account(index);
            let Some(user_id) = self.scale.user_id(&account) else {
                continue;
            };
            let mut rng = self.scale.rng("tokens", index);
            for _ in 0..rng.range(1, 3) {
                let created = account.created_ms + rng.below(DAY_MS as u64) as i64;
                rows.field(rng.hex(32))
                    .field(rng.percent(30).then(|| rng.hex(32)))
                    .field(rng.percent(20).then_some(7200_i64))
                    .field(rng.percent(10).then_some(Millis(created + DAY_MS)))
                    .field(Millis(created))
                    .field("read write follow push")
                    .field(rng.range(1, 4))
                    .field(user_id)
                    .field(rng.percent(80).then_some(Millis(created + HOUR_MS)))
                    .field(match rng.below(3) {
                        0 => None,
                        1 => Some(format!("192.0.2.{}", rng.below(255))),
                        _ => Some(format!("2001:db8::{:x}", rng.below(65535))),
                    });
                rows.end_row().await?;
            }
        }
        rows.finish().await
    }

    async fn statuses(&self) -> Result<u64, FixtureError> {
        let mut rows = self
            .copy(
                "statuses",
                "id, uri, text, created_at, updated_at, in_reply_to_id, reblog_of_id, url, \
                 sensitive, visibility, spoiler_text, reply, language, conversation_id, local, \
                 account_id, application_id, in_reply_to_account_id, poll_id, deleted_at, \
                 edited_at, trendable, ordered_media_attachment_ids",
            )
            .await?;
        for index in 0..self.scale.statuses {
            let status = self.scale.status(index);
            let account = self.scale.account(status.account);
            let mut rng = self.scale.rng("status-row", index);
            let target = match status.kind {
                Kind::Reply(target) | Kind::Reblog(target) => Some(self.scale.status(target)),
                Kind::Original => None,
            };
            let reblog = matches!(status.kind, Kind::Reblog(_));
            let local = account.domain.is_none();
            let uri = format!(
                "https://{}/users/{}/statuses/{}{}",
                self.host(&account),
                account.username,
                status.id,
                if reblog { "/activity" } else { "" }
            );
            let edited = (!reblog && rng.percent(5)).then_some(status.created_ms + HOUR_MS);
            let sensitive = !reblog && rng.percent(5);
            let media: Vec<i64> = self
                .scale
                .media(&status)
                .iter()
                .filter(|media| media.attached)
                .map(|media| media.id)
                .collect();
            rows.field(status.id)
                // Statuses from Mastodon's first years have no stored URI.
                .field((!(local && index % 211 == 0)).then_some(uri))
                .field(status_text(&mut rng, &status))
                .field(Millis(status.created_ms))
                .field(Millis(edited.unwrap_or(status.created_ms)))
                .field(target.as_ref().filter(|_| !reblog).map(|target| target.id))
                .field(target.as_ref().filter(|_| reblog).map(|target| target.id))
                .field(
                    account.domain.map(|domain| {
                        format!("https://{domain}/@{}/{}", account.username, status.id)
                    }),
                )
                .field(sensitive)
                .field(rng.below(4) as i64)
                .field(if sensitive {
                    sentence(&mut rng, 3)
                } else {
                    String::new()
                })
                .field(matches!(status.kind, Kind::Reply(_)))
                .field((!reblog && rng.percent(80)).then(|| rng.pick(LANGUAGES)))
                .field(match status.kind {
                    Kind::Original => Some(index as i64 + 1),
                    Kind::Reply(target) => Some(target as i64 + 1),
                    Kind::Reblog(_) => None,
                })
                .field(if local {
                    Some(true)
                } else {
                    rng.percent(50).then_some(false)
                })
                .field(account.id)
                .field((local && rng.percent(70)).then(|| rng.range(1, 4)))
                .field(
                    target
                        .as_ref()
                        .filter(|_| !reblog)
                        .map(|target| self.scale.account(target.account).id),
                )
                .field(Null)
                .field(rng.percent(1).then_some(Millis(status.created_ms + DAY_MS)))
                .field(edited.map(Millis))
                .field(rng.percent(60).then_some(rng.percent(50)))
                .field((!media.is_empty()).then_some(Ids(&media)));
            rows.end_row().await?;
        }
        rows.finish().await
    }

    async fn media_attachments(&self) -> Result<u64, FixtureError> {
        let mut rows = self
            .copy(
                "media_attachments",
                "id, status_id, file_file_name, file_content_type, file_file_size, \
                 file_updated_at, remote_url, created_at, updated_at, shortcode, type, file_meta, \
                 account_id, description, blurhash, processing, file_storage_schema_version",
            )
            .await?;
        for index in 0..self.scale.statuses {
            let status = self.scale.status(index);
            let all = self.scale.media(&status);
            if all.is_empty() {
                continue;
            }
            let account = self.scale.account(status.account);
            for media in all {
                let mut rng = self.scale.rng("media-row", media.id as u64);
                self.media_row(&mut rows, &mut rng, &status, &account, &media);
                rows.end_row().await?;
            }
        }
        rows.finish().await
    }

    fn media_row(
        &self,
        rows: &mut CopyRows,
        rng: &mut Rng,
        status: &Status,
        account: &Account,
        media: &Media,
    ) {
        let (width, height) = (rng.range(64, 4096), rng.range(64, 4096));
        let meta = json!({
            "original": {"width": width, "height": height, "size": format!("{width}x{height}"), "aspect": width as f64 / height as f64},
            "small": {"width": 640, "height": 480, "size": "640x480", "aspect": 1.3333333333333333},
            "focus": {"x": 0.0, "y": -0.25},
        });
        rows.field(media.id)
            .field(media.attached.then_some(status.id))
            .field(&media.file_name)
            .field(media.original.content_type)
            .field(media.original.size as i64)
            .field(Millis(status.created_ms))
            .field(if media.local {
                String::new()
            } else {
                format!(
                    "https://files.{}/media/{}",
                    self.host(account),
                    media.file_name
                )
            })
            .field(Millis(status.created_ms))
            .field(Millis(status.created_ms))
            .field(media.local.then(|| rng.hex(10)))
            .field(media.kind)
            .field(meta.to_string())
            .field(account.id)
            .field(match rng.below(10) {
                0..3 => None,
                3 => Some(String::new()),
                _ => Some(sentence(rng, 12)),
            })
            .field(blurhash(rng))
            .field(2_i64)
            .field(1_i64);
    }

    async fn tags(&self) -> Result<u64, FixtureError> {
        const STEMS: &[&str] = &[
            "fixture",
            "日本語",
            "café",
            "мастодон",
            "العربية",
            "MixedCase",
        ];
        let mut rows = self
            .copy(
                "tags",
                "name, created_at, updated_at, usable, trendable, listable, reviewed_at, \
                 last_status_at, max_score, max_score_at, display_name",
            )
            .await?;
        for index in 0..self.scale.tags {
            let mut rng = self.scale.rng("tag", index);
            let name = format!("{}{index}", STEMS[index as usize % STEMS.len()]);
            let created = self.scale.status(0).created_ms + index as i64 * 1000;
            rows.field(&name)
                .field(Millis(created))
                .field(Millis(created))
                .field(rng.percent(70).then_some(rng.percent(90)))
                .field(rng.percent(70).then_some(rng.percent(50)))
                .field(rng.percent(70).then_some(rng.percent(90)))
                .field(rng.percent(20).then_some(Millis(created + DAY_MS)))
                .field(Millis(created + HOUR_MS))
                .field(rng.percent(50).then(|| rng.below(1_000_000) as f64 / 7.0))
                .field(rng.percent(50).then_some(Millis(created + DAY_MS)))
                .field(rng.percent(30).then(|| name.to_uppercase()));
            rows.end_row().await?;
        }
        rows.finish().await
    }

    async fn statuses_tags(&self) -> Result<u64, FixtureError> {
        let mut rows = self.copy("statuses_tags", "status_id, tag_id").await?;
        for index in 0..self.scale.statuses {
            let status = self.scale.status(index);
            let mut rng = self.scale.rng("status-tags", index);
            if matches!(status.kind, Kind::Reblog(_)) || !rng.percent(30) {
                continue;
            }
            let first = rng.below(self.scale.tags);
            for offset in 0..rng.range(1, 4).min(self.scale.tags) {
                rows.field(status.id)
                    .field((first + offset) % self.scale.tags + 1);
                rows.end_row().await?;
            }
        }
        rows.finish().await
    }

    async fn follows(&self) -> Result<u64, FixtureError> {
        let mut rows = self
            .copy(
                "follows",
                "created_at, updated_at, account_id, target_account_id, show_reblogs, uri, notify, languages",
            )
            .await?;
        let others = self.scale.accounts - 1;
        for index in 0..self.scale.accounts {
            let account = self.scale.account(index);
            let mut rng = self.scale.rng("follows", index);
            let start = rng.below(others.max(1));
            for offset in 0..rng.below(others.min(20) + 1) {
                // Distinct targets, never the follower itself.
                let target = self
                    .scale
                    .account((index + 1 + (start + offset) % others) % self.scale.accounts);
                let created = account.created_ms.max(target.created_ms) + HOUR_MS;
                rows.field(Millis(created))
                    .field(Millis(created))
                    .field(account.id)
                    .field(target.id)
                    .field(!rng.percent(10))
                    .field(format!("https://{}/{}", self.host(&account), rng.hex(16)))
                    .field(rng.percent(10))
                    .field(rng.percent(5).then_some(Words(&["en", "de"])));
                rows.end_row().await?;
            }
        }
        rows.finish().await
    }

    async fn favourites(&self) -> Result<u64, FixtureError> {
        let mut rows = self
            .copy(
                "favourites",
                "created_at, updated_at, account_id, status_id, uri",
            )
            .await?;
        for index in 0..self.scale.statuses {
            let status = self.scale.status(index);
            if matches!(status.kind, Kind::Reblog(_)) {
                continue;
            }
            let mut rng = self.scale.rng("favourites", index);
            let start = rng.below(self.scale.accounts);
            for offset in 0..rng.below(4).min(self.scale.accounts) {
                let fan = (start + offset) % self.scale.accounts;
                if fan == status.account {
                    continue;
                }
                let fan = self.scale.account(fan);
                let created = status.created_ms + (offset as i64 + 1) * 60_000;
                rows.field(Millis(created))
                    .field(Millis(created))
                    .field(fan.id)
                    .field(status.id)
                    .field(fan.domain.map(|domain| {
                        format!(
                            "https://{domain}/users/{}#likes/{}",
                            fan.username,
                            rng.hex(4)
                        )
                    }));
                rows.end_row().await?;
            }
        }
        rows.finish().await
    }

    async fn domain_blocks(&self) -> Result<u64, FixtureError> {
        let mut rows = self
            .copy(
                "domain_blocks",
                "domain, created_at, updated_at, severity, reject_media, reject_reports, \
                 private_comment, public_comment, obfuscate",
            )
            .await?;
        for index in 0..self.scale.domain_blocks {
            let mut rng = self.scale.rng("domain-block", index);
            let created = Millis(self.scale.account(0).created_ms + index as i64 * HOUR_MS);
            rows.field(if index % 3 == 0 {
                format!("spam{index}.xn--p1ai")
            } else {
                format!("blocked{index}.example")
            })
            .field(&created)
            .field(&created)
            .field(rng.percent(90).then(|| rng.below(3) as i64))
            .field(rng.percent(50))
            .field(rng.percent(30))
            .field(match rng.below(3) {
                0 => None,
                1 => Some(String::new()),
                _ => Some(sentence(&mut rng, 8)),
            })
            .field(rng.percent(50).then(|| sentence(&mut rng, 5)))
            .field(rng.percent(20));
            rows.end_row().await?;
        }
        rows.finish().await
    }

    async fn settings(&self) -> Result<u64, FixtureError> {
        let mut rows = self
            .copy("settings", "var, value, created_at, updated_at")
            .await?;
        let remote = REMOTE_DOMAINS[0];
        // rails-settings-cached stores values as YAML documents.
        let settings = [
            ("site_title", Some("--- Fixture 🦣 マストドン\n".to_owned())),
            (
                "site_short_description",
                Some(format!(
                    "--- |-\n  A test server.\n  \\N is not NULL; {remote} is.\n"
                )),
            ),
            (
                "site_contact_email",
                Some(format!("--- admin@{}\n", self.local_domain)),
            ),
            ("registrations_mode", Some("--- open\n".to_owned())),
            ("closed_registrations_message", Some("--- ''\n".to_owned())),
            ("site_extended_description", None),
            ("theme", Some("--- contrast\n".to_owned())),
        ];
        for (var, value) in settings {
            let created = Millis(self.scale.account(0).created_ms);
            rows.field(var).field(value).field(&created).field(&created);
            rows.end_row().await?;
        }
        rows.finish().await
    }

    /// Derived from the favourites and follows local accounts received, in
    /// one ordered statement, so ids follow the same order on every run.
    async fn notifications(&self) -> Result<u64, FixtureError> {
        self.client
            .execute(
                "INSERT INTO notifications
                   (activity_id, activity_type, created_at, updated_at, account_id, from_account_id, type, group_key)
                 SELECT activity_id, activity_type, created_at, created_at, account_id, from_account_id, type, group_key
                 FROM (
                   SELECT f.id AS activity_id, 'Favourite' AS activity_type, f.created_at,
                          s.account_id, f.account_id AS from_account_id, 'favourite' AS type,
                          'favourite-' || s.id AS group_key
                   FROM favourites f
                   JOIN statuses s ON s.id = f.status_id
                   JOIN accounts a ON a.id = s.account_id
                   WHERE a.domain IS NULL
                   UNION ALL
                   SELECT f.id, 'Follow', f.created_at, f.target_account_id, f.account_id, 'follow', NULL
                   FROM follows f
                   JOIN accounts a ON a.id = f.target_account_id
                   WHERE a.domain IS NULL
                 ) AS received
                 ORDER BY created_at, activity_type, activity_id",
                &[],
            )
            .await
            .map_err(FixtureError::postgres("derive notifications"))
    }
}

fn sentence(rng: &mut Rng, words: u64) -> String {
    (0..words)
        .map(|_| rng.pick(WORDS))
        .collect::<Vec<_>>()
        .join(" ")
}

fn long_text(rng: &mut Rng) -> String {
    let mut text = String::with_capacity(LONG_TEXT_BYTES + 64);
    while text.len() < LONG_TEXT_BYTES {
        text.push_str(rng.pick(WORDS));
        text.push(' ');
    }
    text
}

fn status_text(rng: &mut Rng, status: &Status) -> String {
    match status.kind {
        // Mastodon stores a boost with an empty text.
        Kind::Reblog(_) => String::new(),
        _ if status.index % 1000 == 999 => long_text(rng),
        _ if rng.percent(1) => String::new(),
        _ => {
            let words = rng.range(1, 40);
            sentence(rng, words)
        }
    }
}

/// Mostly an ordinary time after `after_ms`, sometimes a value at the edge of
/// the type's range.
fn edge_or_time(rng: &mut Rng, after_ms: i64) -> Time {
    if rng.percent(15) {
        Time::Literal(rng.pick(EDGE_TIMES))
    } else {
        Time::At(after_ms + rng.below(DAY_MS as u64 * 30) as i64)
    }
}

fn base64_of(rng: &mut Rng, bytes: usize) -> String {
    let mut raw = vec![0; bytes];
    rng.fill(&mut raw);
    STANDARD.encode(raw)
}

/// A PEM block of the right shape; the bytes are not a real key.
fn pem(rng: &mut Rng, label: &str, bytes: usize) -> String {
    let body = base64_of(rng, bytes);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|line| std::str::from_utf8(line).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn blurhash(rng: &mut Rng) -> String {
    const DIGITS: &[u8] =
        b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~";
    (0..28).map(|_| char::from(rng.pick(DIGITS))).collect()
}
