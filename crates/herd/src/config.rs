//! Herd's settings: an optional TOML file, overridden by environment
//! variables, validated once at start so a bad value stops Herd with an error
//! naming the setting rather than failing later somewhere else.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::time::Duration;

use herd_core::autoscale::AutoscalePolicy;
use herd_kube::autoscaler::AutoscalerSettings;
use herd_kube::children::ClusterProfile;
use serde::Deserialize;
use thiserror::Error;
use url::Url;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {message}")]
    File { path: String, message: String },
    #[error("invalid setting {env} (`{key}` in the config file): {message}")]
    Invalid {
        env: &'static str,
        key: &'static str,
        message: String,
    },
    #[error("missing setting {env} (`{key}` in the config file): {hint}")]
    Missing {
        env: &'static str,
        key: &'static str,
        hint: &'static str,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The settings as a file or the environment spell them, before validation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    listen_addr: Option<String>,
    database_url: Option<String>,
    database_max_connections: Option<String>,
    kubeconfig: Option<String>,
    log_format: Option<String>,
    log_filter: Option<String>,
    secret_key: Option<String>,
    installation: Option<String>,
    retired_secret_keys: Option<String>,
    workers: Option<String>,
    job_lease_seconds: Option<String>,
    reconcile: Option<String>,
    ingress_class: Option<String>,
    ingress_namespace: Option<String>,
    cluster_issuer: Option<String>,
    data_service_cidrs: Option<String>,
    scratch_dir: Option<String>,
    import_from_private_addresses: Option<String>,
    billing: Option<String>,
    stripe_secret_key: Option<String>,
    stripe_api_base: Option<String>,
    stripe_webhook_secrets: Option<String>,
    public_url: Option<String>,
    billing_retention_days: Option<String>,
    tenant_redis_url: Option<String>,
    autoscale_interval_seconds: Option<String>,
    autoscale_up_latency_seconds: Option<String>,
    autoscale_down_latency_seconds: Option<String>,
    autoscale_up_cooldown_seconds: Option<String>,
    autoscale_down_window_seconds: Option<String>,
}

/// One setting's two spellings.
struct Setting {
    env: &'static str,
    key: &'static str,
}

const LISTEN_ADDR: Setting = Setting {
    env: "HERD_LISTEN_ADDR",
    key: "listen_addr",
};
const DATABASE_URL: Setting = Setting {
    env: "DATABASE_URL",
    key: "database_url",
};
const DATABASE_MAX_CONNECTIONS: Setting = Setting {
    env: "HERD_DATABASE_MAX_CONNECTIONS",
    key: "database_max_connections",
};
const KUBECONFIG: Setting = Setting {
    env: "HERD_KUBECONFIG",
    key: "kubeconfig",
};
const LOG_FORMAT: Setting = Setting {
    env: "HERD_LOG_FORMAT",
    key: "log_format",
};
const LOG_FILTER: Setting = Setting {
    env: "HERD_LOG",
    key: "log_filter",
};
const SECRET_KEY: Setting = Setting {
    env: "HERD_SECRET_KEY",
    key: "secret_key",
};
const RETIRED_SECRET_KEYS: Setting = Setting {
    env: "HERD_RETIRED_SECRET_KEYS",
    key: "retired_secret_keys",
};
const INSTALLATION: Setting = Setting {
    env: "HERD_INSTALLATION",
    key: "installation",
};
const WORKERS: Setting = Setting {
    env: "HERD_WORKERS",
    key: "workers",
};
const JOB_LEASE_SECONDS: Setting = Setting {
    env: "HERD_JOB_LEASE_SECONDS",
    key: "job_lease_seconds",
};
const RECONCILE: Setting = Setting {
    env: "HERD_RECONCILE",
    key: "reconcile",
};
const INGRESS_CLASS: Setting = Setting {
    env: "HERD_INGRESS_CLASS",
    key: "ingress_class",
};
const INGRESS_NAMESPACE: Setting = Setting {
    env: "HERD_INGRESS_NAMESPACE",
    key: "ingress_namespace",
};
const CLUSTER_ISSUER: Setting = Setting {
    env: "HERD_CLUSTER_ISSUER",
    key: "cluster_issuer",
};
const IMPORT_FROM_PRIVATE_ADDRESSES: Setting = Setting {
    env: "HERD_IMPORT_FROM_PRIVATE_ADDRESSES",
    key: "import_from_private_addresses",
};
const BILLING: Setting = Setting {
    env: "HERD_BILLING",
    key: "billing",
};
const STRIPE_SECRET_KEY: Setting = Setting {
    env: "HERD_STRIPE_SECRET_KEY",
    key: "stripe_secret_key",
};
const STRIPE_API_BASE: Setting = Setting {
    env: "HERD_STRIPE_API_BASE",
    key: "stripe_api_base",
};
const STRIPE_WEBHOOK_SECRETS: Setting = Setting {
    env: "HERD_STRIPE_WEBHOOK_SECRETS",
    key: "stripe_webhook_secrets",
};
const PUBLIC_URL: Setting = Setting {
    env: "HERD_PUBLIC_URL",
    key: "public_url",
};
const BILLING_RETENTION_DAYS: Setting = Setting {
    env: "HERD_BILLING_RETENTION_DAYS",
    key: "billing_retention_days",
};
const SCRATCH_DIR: Setting = Setting {
    env: "HERD_SCRATCH_DIR",
    key: "scratch_dir",
};
const DATA_SERVICE_CIDRS: Setting = Setting {
    env: "HERD_DATA_SERVICE_CIDRS",
    key: "data_service_cidrs",
};
const TENANT_REDIS_URL: Setting = Setting {
    env: "HERD_TENANT_REDIS_URL",
    key: "tenant_redis_url",
};
const AUTOSCALE_INTERVAL_SECONDS: Setting = Setting {
    env: "HERD_AUTOSCALE_INTERVAL_SECONDS",
    key: "autoscale_interval_seconds",
};
const AUTOSCALE_UP_LATENCY_SECONDS: Setting = Setting {
    env: "HERD_AUTOSCALE_UP_LATENCY_SECONDS",
    key: "autoscale_up_latency_seconds",
};
const AUTOSCALE_DOWN_LATENCY_SECONDS: Setting = Setting {
    env: "HERD_AUTOSCALE_DOWN_LATENCY_SECONDS",
    key: "autoscale_down_latency_seconds",
};
const AUTOSCALE_UP_COOLDOWN_SECONDS: Setting = Setting {
    env: "HERD_AUTOSCALE_UP_COOLDOWN_SECONDS",
    key: "autoscale_up_cooldown_seconds",
};
const AUTOSCALE_DOWN_WINDOW_SECONDS: Setting = Setting {
    env: "HERD_AUTOSCALE_DOWN_WINDOW_SECONDS",
    key: "autoscale_down_window_seconds",
};

impl Setting {
    fn invalid(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            env: self.env,
            key: self.key,
            message: message.into(),
        }
    }

    fn missing(&self, hint: &'static str) -> ConfigError {
        ConfigError::Missing {
            env: self.env,
            key: self.key,
            hint,
        }
    }
}

/// A PostgreSQL URL whose password never reaches a log line.
#[derive(Clone)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut url = Url::parse(&self.0).map_err(|_| fmt::Error)?;
        if url.password().is_some() {
            url.set_password(Some("redacted")).map_err(|_| fmt::Error)?;
        }
        f.write_str(url.as_str())
    }
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen_addr: SocketAddr,
    pub database_url: Option<DatabaseUrl>,
    pub database_max_connections: u32,
    /// `None` means the standard inference (`KUBECONFIG`, `~/.kube/config`, in-cluster).
    pub kubeconfig: Option<PathBuf>,
    pub log_format: LogFormat,
    pub log_filter: String,
    /// Seals credentials at rest; `None` until a command needs it.
    pub sealer: Option<herd_db::Sealer>,
    /// Names this installation's resources in shared clusters.
    pub installation: String,
    /// Job workers this process runs; 0 leaves the work to other processes.
    pub workers: u32,
    /// How long a worker holds a job without renewing it.
    pub job_lease: std::time::Duration,
    /// Whether this process runs the reconciler of every registered cluster.
    pub reconcile: bool,
    pub cluster_profile: ClusterProfile,
    /// Where archives are assembled and checked before they are stored; it
    /// needs room for the largest export or import in progress, twice.
    pub scratch_dir: PathBuf,
    /// Whether imports may fetch archives from loopback and private
    /// addresses; off, as Herd runs inside the operator's network.
    pub import_from_private_addresses: bool,
    /// Stripe, when billing is on; off, operators assign plans by hand.
    pub billing: Option<BillingConfig>,
    /// How the Sidekiq autoscaler, which runs beside each reconciler,
    /// decides and reaches the tenants' Redis.
    pub autoscaler: AutoscalerSettings,
}

/// Billing through Stripe.
#[derive(Clone)]
pub struct BillingConfig {
    pub secret_key: String,
    pub api_base: String,
    pub webhook_secrets: Vec<String>,
    pub public_url: Url,
    pub retention_days: u32,
}

// The keys sign charges and webhooks: only their presence may be printed.
impl fmt::Debug for BillingConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BillingConfig")
            .field("secret_key", &"redacted")
            .field("api_base", &self.api_base)
            .field("webhook_secrets", &self.webhook_secrets.len())
            .field("public_url", &self.public_url.as_str())
            .field("retention_days", &self.retention_days)
            .finish()
    }
}

impl Settings {
    /// Reads the optional file, then lets each set environment variable win.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut raw = match file {
            Some(path) => read_file(path)?,
            None => RawSettings::default(),
        };
        let overlay = |value: &mut Option<String>, setting: &Setting| {
            if let Some(from_env) = env(setting.env).filter(|v| !v.is_empty()) {
                *value = Some(from_env);
            }
        };
        overlay(&mut raw.listen_addr, &LISTEN_ADDR);
        overlay(&mut raw.database_url, &DATABASE_URL);
        overlay(&mut raw.database_max_connections, &DATABASE_MAX_CONNECTIONS);
        overlay(&mut raw.kubeconfig, &KUBECONFIG);
        overlay(&mut raw.log_format, &LOG_FORMAT);
        overlay(&mut raw.log_filter, &LOG_FILTER);
        overlay(&mut raw.secret_key, &SECRET_KEY);
        overlay(&mut raw.installation, &INSTALLATION);
        overlay(&mut raw.retired_secret_keys, &RETIRED_SECRET_KEYS);
        overlay(&mut raw.workers, &WORKERS);
        overlay(&mut raw.job_lease_seconds, &JOB_LEASE_SECONDS);
        overlay(&mut raw.reconcile, &RECONCILE);
        overlay(&mut raw.ingress_class, &INGRESS_CLASS);
        overlay(&mut raw.ingress_namespace, &INGRESS_NAMESPACE);
        overlay(&mut raw.cluster_issuer, &CLUSTER_ISSUER);
        overlay(&mut raw.data_service_cidrs, &DATA_SERVICE_CIDRS);
        overlay(&mut raw.scratch_dir, &SCRATCH_DIR);
        overlay(
            &mut raw.import_from_private_addresses,
            &IMPORT_FROM_PRIVATE_ADDRESSES,
        );
        overlay(&mut raw.billing, &BILLING);
        overlay(&mut raw.stripe_secret_key, &STRIPE_SECRET_KEY);
        overlay(&mut raw.stripe_api_base, &STRIPE_API_BASE);
        overlay(&mut raw.stripe_webhook_secrets, &STRIPE_WEBHOOK_SECRETS);
        overlay(&mut raw.public_url, &PUBLIC_URL);
        overlay(&mut raw.billing_retention_days, &BILLING_RETENTION_DAYS);
        overlay(&mut raw.tenant_redis_url, &TENANT_REDIS_URL);
        overlay(
            &mut raw.autoscale_interval_seconds,
            &AUTOSCALE_INTERVAL_SECONDS,
        );
        overlay(
            &mut raw.autoscale_up_latency_seconds,
            &AUTOSCALE_UP_LATENCY_SECONDS,
        );
        overlay(
            &mut raw.autoscale_down_latency_seconds,
            &AUTOSCALE_DOWN_LATENCY_SECONDS,
        );
        overlay(
            &mut raw.autoscale_up_cooldown_seconds,
            &AUTOSCALE_UP_COOLDOWN_SECONDS,
        );
        overlay(
            &mut raw.autoscale_down_window_seconds,
            &AUTOSCALE_DOWN_WINDOW_SECONDS,
        );
        validate(raw)
    }

    /// The sealing key, for the commands that read or write credentials.
    pub fn require_sealer(&self) -> Result<&herd_db::Sealer, ConfigError> {
        self.sealer.as_ref().ok_or_else(|| {
            SECRET_KEY.missing("32 random bytes in unpadded base64url, e.g. from `head -c32 /dev/urandom | basenc --base64url`")
        })
    }

    /// The database URL, for the commands that cannot work without one.
    pub fn require_database_url(&self) -> Result<&DatabaseUrl, ConfigError> {
        self.database_url.as_ref().ok_or_else(|| {
            DATABASE_URL.missing("a postgres:// URL of Herd's own database is required")
        })
    }
}

fn read_file(path: &Path) -> Result<RawSettings, ConfigError> {
    let file_error = |message: String| ConfigError::File {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|err| file_error(err.to_string()))?;
    // The file is TOML with string values only, so every setting reads the same
    // way whether it comes from the file or from the environment.
    toml::from_str(&text).map_err(|err| file_error(err.to_string()))
}

fn validate(raw: RawSettings) -> Result<Settings, ConfigError> {
    let listen_addr = match &raw.listen_addr {
        Some(value) => value.parse().map_err(|_| {
            LISTEN_ADDR.invalid(format!("`{value}` is not an address like 127.0.0.1:8080"))
        })?,
        None => SocketAddr::from(([127, 0, 0, 1], 8080)),
    };
    let billing = match raw.billing.as_deref() {
        None | Some("off") => None,
        Some("stripe") => Some(billing_config(&raw, listen_addr)?),
        Some(other) => {
            return Err(BILLING.invalid(format!("`{other}` is neither `stripe` nor `off`")));
        }
    };
    let autoscaler = autoscaler_settings(&raw)?;
    let database_url = raw.database_url.map(parse_database_url).transpose()?;
    let database_max_connections = match raw.database_max_connections {
        Some(value) => match value.parse::<u32>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => {
                return Err(DATABASE_MAX_CONNECTIONS
                    .invalid(format!("`{value}` is not a number from 1 to 1000")));
            }
        },
        None => 16,
    };
    let kubeconfig = match raw.kubeconfig {
        Some(value) => {
            let path = PathBuf::from(&value);
            if !path.is_file() {
                return Err(KUBECONFIG.invalid(format!("`{value}` is not a readable file")));
            }
            Some(path)
        }
        None => None,
    };
    let log_format = match raw.log_format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return Err(LOG_FORMAT.invalid(format!("`{other}` is neither `text` nor `json`")));
        }
    };
    let log_filter = raw.log_filter.unwrap_or_else(|| "info".to_owned());
    tracing_subscriber::EnvFilter::try_new(&log_filter)
        .map_err(|err| LOG_FILTER.invalid(format!("`{log_filter}`: {err}")))?;
    let retired: Vec<String> = raw
        .retired_secret_keys
        .map(|keys| {
            keys.split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let sealer = match raw.secret_key {
        Some(key) => Some(
            herd_db::Sealer::new(&key, &retired)
                .map_err(|err| SECRET_KEY.invalid(err.to_string()))?,
        ),
        None if !retired.is_empty() => {
            return Err(SECRET_KEY.missing("retired keys are set but no current one"));
        }
        None => None,
    };
    let installation = raw.installation.unwrap_or_else(|| "herd".to_owned());
    let label_value = !installation.is_empty()
        && installation.len() <= 63
        && installation
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !installation.starts_with('-')
        && !installation.ends_with('-');
    if !label_value {
        return Err(INSTALLATION.invalid(format!(
            "`{installation}` must be 1 to 63 lowercase letters, digits or inner hyphens"
        )));
    }
    let workers = match raw.workers {
        Some(value) => match value.parse::<u32>() {
            Ok(n) if n <= 64 => n,
            _ => return Err(WORKERS.invalid(format!("`{value}` is not a number from 0 to 64"))),
        },
        None => 4,
    };
    let job_lease = match raw.job_lease_seconds {
        Some(value) => match value.parse::<u64>() {
            Ok(n) if (3..=3600).contains(&n) => std::time::Duration::from_secs(n),
            _ => {
                return Err(
                    JOB_LEASE_SECONDS.invalid(format!("`{value}` is not a number from 3 to 3600"))
                );
            }
        },
        None => std::time::Duration::from_secs(30),
    };
    let reconcile = parse_bool(raw.reconcile.as_deref(), true, &RECONCILE)?;
    let import_from_private_addresses = parse_bool(
        raw.import_from_private_addresses.as_deref(),
        false,
        &IMPORT_FROM_PRIVATE_ADDRESSES,
    )?;
    let defaults = ClusterProfile::default();
    let data_service_cidrs = match raw.data_service_cidrs {
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(|cidr| {
                parse_cidr(cidr)
                    .map_err(|message| DATA_SERVICE_CIDRS.invalid(format!("`{cidr}`: {message}")))
            })
            .collect::<Result<_, _>>()?,
        None => defaults.data_service_cidrs,
    };
    let cluster_profile = ClusterProfile {
        ingress_class: raw.ingress_class.unwrap_or(defaults.ingress_class),
        ingress_namespace: raw.ingress_namespace.unwrap_or(defaults.ingress_namespace),
        cluster_issuer: raw.cluster_issuer.unwrap_or(defaults.cluster_issuer),
        data_service_cidrs,
        ..defaults
    };
    let scratch_dir = raw.scratch_dir.map_or_else(
        || std::env::temp_dir().join(format!("herd-{installation}")),
        PathBuf::from,
    );
    Ok(Settings {
        billing,
        scratch_dir,
        import_from_private_addresses,
        listen_addr,
        database_url,
        database_max_connections,
        kubeconfig,
        log_format,
        log_filter,
        sealer,
        installation,
        workers,
        job_lease,
        reconcile,
        cluster_profile,
        autoscaler,
    })
}

fn autoscaler_settings(raw: &RawSettings) -> Result<AutoscalerSettings, ConfigError> {
    let defaults = AutoscalerSettings::default();
    let seconds =
        |value: &Option<String>, setting: &Setting, least: u64, default: Duration| match value {
            None => Ok(default),
            Some(value) => match value.parse::<u64>() {
                Ok(n) if (least..=86_400).contains(&n) => Ok(Duration::from_secs(n)),
                _ => Err(setting.invalid(format!(
                    "`{value}` is not a number of seconds from {least} to 86400"
                ))),
            },
        };
    let policy = AutoscalePolicy {
        scale_up_latency: seconds(
            &raw.autoscale_up_latency_seconds,
            &AUTOSCALE_UP_LATENCY_SECONDS,
            1,
            defaults.policy.scale_up_latency,
        )?,
        scale_down_latency: seconds(
            &raw.autoscale_down_latency_seconds,
            &AUTOSCALE_DOWN_LATENCY_SECONDS,
            1,
            defaults.policy.scale_down_latency,
        )?,
        scale_up_cooldown: seconds(
            &raw.autoscale_up_cooldown_seconds,
            &AUTOSCALE_UP_COOLDOWN_SECONDS,
            0,
            defaults.policy.scale_up_cooldown,
        )?,
        scale_down_window: seconds(
            &raw.autoscale_down_window_seconds,
            &AUTOSCALE_DOWN_WINDOW_SECONDS,
            0,
            defaults.policy.scale_down_window,
        )?,
    };
    // Equal thresholds would leave no band to hold in, and the replicas would flap.
    if policy.scale_down_latency >= policy.scale_up_latency {
        return Err(AUTOSCALE_DOWN_LATENCY_SECONDS.invalid(format!(
            "{}s must be below the scale-up latency of {}s",
            policy.scale_down_latency.as_secs(),
            policy.scale_up_latency.as_secs()
        )));
    }
    let interval = seconds(
        &raw.autoscale_interval_seconds,
        &AUTOSCALE_INTERVAL_SECONDS,
        1,
        defaults.interval,
    )?;
    let redis_url = raw.tenant_redis_url.clone().unwrap_or(defaults.redis_url);
    let example = redis_url.replace("{namespace}", "mi-example");
    match Url::parse(&example) {
        Ok(url) if url.scheme() == "redis" && url.host_str().is_some() => {}
        _ => {
            return Err(TENANT_REDIS_URL.invalid(format!(
                "`{redis_url}` is not a redis:// URL with `{{namespace}}` where the instance's namespace goes"
            )));
        }
    }
    Ok(AutoscalerSettings {
        policy,
        interval,
        redis_url,
    })
}

fn billing_config(
    raw: &RawSettings,
    listen_addr: SocketAddr,
) -> Result<BillingConfig, ConfigError> {
    let secret_key = raw.stripe_secret_key.clone().ok_or_else(|| {
        STRIPE_SECRET_KEY.missing("the Stripe secret key (`sk_...`) billing uses")
    })?;
    let webhook_secrets: Vec<String> = raw
        .stripe_webhook_secrets
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|secret| !secret.is_empty())
        .map(str::to_owned)
        .collect();
    if webhook_secrets.is_empty() {
        return Err(STRIPE_WEBHOOK_SECRETS.missing(
            "the signing secret (`whsec_...`) of the webhook endpoint; comma-separated during a rotation",
        ));
    }
    let public_url = match &raw.public_url {
        Some(url) => Url::parse(url).map_err(|err| PUBLIC_URL.invalid(err.to_string()))?,
        None => Url::parse(&format!("http://{listen_addr}/")).expect("an address makes a URL"),
    };
    let retention_days = match raw.billing_retention_days.as_deref() {
        None => 30,
        Some(value) => value.parse().map_err(|_| {
            BILLING_RETENTION_DAYS.invalid(format!("`{value}` is not a number of days"))
        })?,
    };
    Ok(BillingConfig {
        secret_key,
        api_base: raw
            .stripe_api_base
            .clone()
            .unwrap_or_else(|| "https://api.stripe.com/".to_owned()),
        webhook_secrets,
        public_url,
        retention_days,
    })
}

fn parse_bool(value: Option<&str>, default: bool, setting: &Setting) -> Result<bool, ConfigError> {
    match value {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(setting.invalid(format!("`{other}` is neither `true` nor `false`"))),
    }
}

/// `address/prefix`, with the prefix within the address family's length.
fn parse_cidr(cidr: &str) -> Result<String, String> {
    let (address, prefix) = cidr.split_once('/').ok_or("not in address/prefix form")?;
    let address: std::net::IpAddr = address.parse().map_err(|_| "not an IP address")?;
    let prefix: u8 = prefix.parse().map_err(|_| "the prefix is not a number")?;
    let longest = if address.is_ipv4() { 32 } else { 128 };
    if prefix > longest {
        return Err(format!("the prefix exceeds {longest}"));
    }
    Ok(format!("{address}/{prefix}"))
}

fn parse_database_url(value: String) -> Result<DatabaseUrl, ConfigError> {
    // The parse error may quote the URL, password included: report only its kind.
    let url =
        Url::parse(&value).map_err(|err| DATABASE_URL.invalid(format!("not a URL ({err})")))?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(DATABASE_URL.invalid(format!("scheme `{}` is not postgres://", url.scheme())));
    }
    if url.host_str().is_none() {
        return Err(DATABASE_URL.invalid("the URL names no host"));
    }
    Ok(DatabaseUrl(value))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::Write;

    use super::*;

    fn from_env(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::load(None, |name| env.get(name).cloned())
    }

    #[test]
    fn defaults_need_no_configuration() {
        let settings = from_env(&[]).unwrap();
        assert_eq!(settings.listen_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(settings.log_format, LogFormat::Text);
        assert!(settings.database_url.is_none());
        assert!(settings.require_database_url().is_err());
        assert!(settings.require_sealer().is_err());
        assert_eq!(settings.workers, 4);
        assert!(settings.reconcile);
    }

    #[test]
    fn errors_name_the_bad_setting() {
        let err = from_env(&[("HERD_LISTEN_ADDR", "localhost")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("HERD_LISTEN_ADDR") && err.contains("listen_addr"),
            "{err}"
        );

        let err = from_env(&[("DATABASE_URL", "mysql://x@h/db")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("DATABASE_URL") && err.contains("mysql"),
            "{err}"
        );

        let err = from_env(&[("HERD_DATABASE_MAX_CONNECTIONS", "0")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("HERD_DATABASE_MAX_CONNECTIONS"), "{err}");

        let err = from_env(&[("HERD_LOG_FORMAT", "xml")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("HERD_LOG_FORMAT"), "{err}");

        let err = from_env(&[("HERD_KUBECONFIG", "/nonexistent/kubeconfig")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("HERD_KUBECONFIG"), "{err}");
    }

    #[test]
    fn database_password_never_shows_in_errors_or_debug() {
        let settings =
            from_env(&[("DATABASE_URL", "postgres://herd:s3cret@127.0.0.1:5432/herd")]).unwrap();
        let shown = format!("{settings:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");

        let err = from_env(&[("DATABASE_URL", "postgres://herd:s3cret@[bad/herd")])
            .unwrap_err()
            .to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            file,
            "listen_addr = \"0.0.0.0:9000\"\nlog_format = \"json\""
        )
        .unwrap();
        let env = HashMap::from([("HERD_LISTEN_ADDR".to_owned(), "127.0.0.1:9001".to_owned())]);
        let settings = Settings::load(Some(file.path()), |name| env.get(name).cloned()).unwrap();
        assert_eq!(settings.listen_addr.to_string(), "127.0.0.1:9001");
        assert_eq!(settings.log_format, LogFormat::Json);
    }

    #[test]
    fn autoscaling_has_production_defaults_and_shorter_settings_for_tests() {
        let settings = from_env(&[]).unwrap();
        assert_eq!(settings.autoscaler, AutoscalerSettings::default());
        assert_eq!(
            settings.autoscaler.redis_url,
            "redis://redis.{namespace}.svc:6379/0"
        );
        let settings = from_env(&[
            ("HERD_TENANT_REDIS_URL", "redis://127.0.0.1:6390/0"),
            ("HERD_AUTOSCALE_INTERVAL_SECONDS", "1"),
            ("HERD_AUTOSCALE_UP_LATENCY_SECONDS", "3"),
            ("HERD_AUTOSCALE_DOWN_LATENCY_SECONDS", "1"),
            ("HERD_AUTOSCALE_UP_COOLDOWN_SECONDS", "2"),
            ("HERD_AUTOSCALE_DOWN_WINDOW_SECONDS", "4"),
        ])
        .unwrap();
        let autoscaler = settings.autoscaler;
        assert_eq!(autoscaler.redis_url, "redis://127.0.0.1:6390/0");
        assert_eq!(autoscaler.interval, Duration::from_secs(1));
        assert_eq!(
            autoscaler.policy,
            AutoscalePolicy {
                scale_up_latency: Duration::from_secs(3),
                scale_down_latency: Duration::from_secs(1),
                scale_up_cooldown: Duration::from_secs(2),
                scale_down_window: Duration::from_secs(4),
            }
        );
    }

    #[test]
    fn autoscaling_settings_that_would_flap_or_miss_redis_are_refused() {
        let err = from_env(&[("HERD_AUTOSCALE_DOWN_LATENCY_SECONDS", "30")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("HERD_AUTOSCALE_DOWN_LATENCY_SECONDS"), "{err}");
        let err = from_env(&[("HERD_TENANT_REDIS_URL", "http://redis.{namespace}.svc")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("HERD_TENANT_REDIS_URL"), "{err}");
        let err = from_env(&[("HERD_AUTOSCALE_INTERVAL_SECONDS", "0")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("HERD_AUTOSCALE_INTERVAL_SECONDS"), "{err}");
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "listen_adress = \"0.0.0.0:9000\"").unwrap();
        let err = Settings::load(Some(file.path()), |_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen_adress"), "{err}");
    }
}

#[cfg(test)]
mod cluster_settings {
    use super::*;

    #[test]
    fn cluster_profile_comes_from_settings() {
        let env = std::collections::HashMap::from([
            ("HERD_INGRESS_CLASS".to_owned(), "traefik".to_owned()),
            (
                "HERD_DATA_SERVICE_CIDRS".to_owned(),
                "10.20.0.0/16,fd00::/8".to_owned(),
            ),
            (
                "HERD_SECRET_KEY".to_owned(),
                herd_db::Sealer::generate_key().unwrap(),
            ),
        ]);
        let settings = Settings::load(None, |name| env.get(name).cloned()).unwrap();
        assert_eq!(settings.cluster_profile.ingress_class, "traefik");
        assert_eq!(
            settings.cluster_profile.data_service_cidrs,
            ["10.20.0.0/16", "fd00::/8"]
        );
        assert!(settings.require_sealer().is_ok());
    }

    fn load(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let env: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::load(None, |name| env.get(name).cloned())
    }

    #[test]
    fn errors_name_the_bad_operational_setting() {
        let err = load(&[("HERD_SECRET_KEY", "too-short")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("HERD_SECRET_KEY") && !err.contains("too-short"),
            "{err}"
        );

        let err = load(&[("HERD_WORKERS", "many")]).unwrap_err().to_string();
        assert!(err.contains("HERD_WORKERS"), "{err}");

        let err = load(&[("HERD_INSTALLATION", "Prod_1")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("HERD_INSTALLATION"), "{err}");

        let err = load(&[("HERD_RECONCILE", "maybe")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("HERD_RECONCILE"), "{err}");

        let err = load(&[("HERD_IMPORT_FROM_PRIVATE_ADDRESSES", "yes")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("HERD_IMPORT_FROM_PRIVATE_ADDRESSES"), "{err}");

        let err = load(&[("HERD_DATA_SERVICE_CIDRS", "10.0.0.0/8, 10.1.2.3/33")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("HERD_DATA_SERVICE_CIDRS") && err.contains("10.1.2.3/33"),
            "{err}"
        );

        let err = load(&[("HERD_RETIRED_SECRET_KEYS", "abc")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("HERD_SECRET_KEY"), "{err}");
    }

    #[test]
    fn operational_defaults() {
        let settings = load(&[]).unwrap();
        assert!(settings.require_sealer().is_err());
        assert_eq!(settings.workers, 4);
        assert!(settings.reconcile);
        assert_eq!(settings.installation, "herd");
        assert!(!settings.import_from_private_addresses);
        assert!(settings.scratch_dir.ends_with("herd-herd"));
    }
}
