//! `herd-fixture generate` fills a tenant's database and bucket with a
//! Mastodon-like fixture; `herd-fixture checksum` prints the fingerprints of a
//! database and a bucket as JSON, so two copies can be compared with `diff`.

use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use herd_fixture::{FixtureSpec, bucket_fingerprint, database_fingerprint, generate};
use herd_tenancy::{AccessKey, ObjectStore};
use serde_json::json;

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the schema, rows and media of a fixture (the database must not
    /// hold Mastodon's tables yet).
    Generate {
        /// PostgreSQL URL of the tenant database.
        #[arg(long)]
        database_url: String,
        #[command(flatten)]
        bucket: BucketArgs,
        /// The same seed gives the same fixture, byte for byte.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Units of 50 accounts, 2,000 statuses and about 28 MB of media.
        #[arg(long, default_value_t = 1)]
        scale: u64,
        /// Object sizes in percent of the usual ones (100: about 28 MB of
        /// media a unit); lower it for a database-heavy fixture.
        #[arg(long, default_value_t = 100)]
        media_percent: u64,
        /// The instance's LOCAL_DOMAIN.
        #[arg(long, default_value = "fixture.example")]
        local_domain: String,
    },
    /// Print per-table row counts and checksums, sequences, and each object's
    /// size and SHA-256.
    Checksum {
        /// PostgreSQL URL of the database to fingerprint.
        #[arg(long)]
        database_url: Option<String>,
        #[command(flatten)]
        bucket: BucketArgs,
        /// Leave out keys under this prefix, e.g. `cache/`.
        #[arg(long)]
        exclude_prefix: Option<String>,
    },
}

#[derive(Args)]
struct BucketArgs {
    /// Name of the bucket.
    #[arg(long)]
    bucket: Option<String>,
    #[arg(long, env = "HERD_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    #[arg(long, env = "HERD_S3_REGION", default_value = "us-east-1")]
    s3_region: String,
    #[arg(long, env = "AWS_ACCESS_KEY_ID")]
    access_key_id: Option<String>,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    secret_access_key: Option<String>,
}

impl BucketArgs {
    fn store(&self) -> Result<Option<ObjectStore>> {
        let Some(bucket) = &self.bucket else {
            return Ok(None);
        };
        let required = |value: &Option<String>, name: &str| {
            value
                .clone()
                .with_context(|| format!("--bucket needs {name} as well"))
        };
        let key = AccessKey {
            access_key_id: required(&self.access_key_id, "--access-key-id")?,
            secret_access_key: required(&self.secret_access_key, "--secret-access-key")?,
        };
        let endpoint = required(&self.s3_endpoint, "--s3-endpoint")?;
        Ok(Some(ObjectStore::new(
            &endpoint,
            &self.s3_region,
            bucket,
            &key,
        )?))
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let output = match Cli::parse().command {
        Command::Generate {
            database_url,
            bucket,
            seed,
            scale,
            media_percent,
            local_domain,
        } => {
            let store = bucket.store()?.context("generate needs --bucket")?;
            let started = Instant::now();
            let spec = FixtureSpec {
                seed,
                scale,
                media_percent,
                local_domain,
            };
            let summary = generate(&database_url, &store, &spec).await?;
            json!({ "summary": summary, "seconds": started.elapsed().as_secs_f64() })
        }
        Command::Checksum {
            database_url,
            bucket,
            exclude_prefix,
        } => {
            let database = match &database_url {
                Some(url) => Some(database_fingerprint(url).await?),
                None => None,
            };
            let bucket = match bucket.store()? {
                Some(store) => Some(bucket_fingerprint(&store, exclude_prefix.as_deref()).await?),
                None => None,
            };
            anyhow::ensure!(
                database.is_some() || bucket.is_some(),
                "give --database-url, --bucket or both"
            );
            json!({ "database": database, "bucket": bucket })
        }
    };
    println!("{}", serde_json::to_string_pretty(&output)?);
    Ok(())
}
