//! The `herd` binary: one process image for every role, chosen by subcommand.

mod archive_cli;
mod background;
mod config;
mod fleet_cli;
mod logging;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use actix_web::{App, HttpServer, middleware};
use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use herd_jobs::archives::Archives;
use herd_jobs::billing::BillingSettings;

use crate::config::{BillingConfig, LogFormat, Settings};

#[derive(Debug, Parser)]
#[command(
    name = "herd",
    version,
    about = "Control plane for managed Mastodon hosting"
)]
struct Cli {
    /// Optional TOML settings file; environment variables override it.
    #[arg(long, global = true, env = "HERD_CONFIG")]
    config: Option<PathBuf>,
    /// Log format; overrides HERD_LOG_FORMAT.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API and run job workers and reconcilers, applying pending
    /// migrations as soon as the database answers.
    Serve,
    /// Manage the database schema.
    Migrate {
        #[command(subcommand)]
        action: Option<MigrateAction>,
    },
    /// Validate the settings and print them, secrets redacted.
    Config,
    /// Print the MastodonInstance CustomResourceDefinition as YAML.
    Crd,
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Offer the starter plans, unless plans exist already.
    Seed,
    /// Manage the plans on offer.
    Plan {
        #[command(subcommand)]
        action: PlanAction,
    },
    /// Register the clusters, database servers and object stores of the fleet.
    Fleet {
        #[command(subcommand)]
        action: fleet_cli::FleetCommand,
    },
    /// Check instance archives offline.
    Archive {
        #[command(subcommand)]
        action: archive_cli::ArchiveCommand,
    },
}

#[derive(Debug, Subcommand)]
enum PlanAction {
    /// Sell a plan at a Stripe Price (`price_...`), or stop selling it with `--none`.
    Price {
        /// The plan's name.
        plan: String,
        #[arg(required_unless_present = "none")]
        price: Option<String>,
        #[arg(long)]
        none: bool,
    },
}

#[derive(Debug, Subcommand)]
enum TokenAction {
    /// Create the account if it is missing and print a new token for it on stdout.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long, value_enum)]
        role: RoleArg,
        /// A label telling the account's tokens apart.
        #[arg(long, default_value = "")]
        name: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RoleArg {
    Customer,
    Operator,
}

impl From<RoleArg> for herd_db::accounts::Role {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Customer => herd_db::accounts::Role::Customer,
            RoleArg::Operator => herd_db::accounts::Role::Operator,
        }
    }
}

#[derive(Debug, Clone, Copy, Subcommand)]
enum MigrateAction {
    /// Apply every pending migration (the default).
    Up,
    /// Revert every migration. Destroys all data.
    DownAll,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref(), |name| std::env::var(name).ok()) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("herd: {err}");
            return ExitCode::from(2);
        }
    };
    logging::init(
        cli.log_format.unwrap_or(settings.log_format),
        &settings.log_filter,
    );

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("herd: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "herd stopped");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Serve => serve(settings).await,
        Command::Migrate { action } => migrate(settings, action.unwrap_or(MigrateAction::Up)).await,
        Command::Crd => {
            print!("{}", herd_kube::crd::crd_yaml());
            Ok(())
        }
        Command::Config => {
            println!("{settings:#?}");
            Ok(())
        }
        Command::Token {
            action: TokenAction::Create { email, role, name },
        } => create_token(settings, &email, role.into(), &name).await,
        Command::Seed => seed(settings).await,
        Command::Plan {
            action: PlanAction::Price { plan, price, .. },
        } => set_price(settings, &plan, price.as_deref()).await,
        Command::Fleet { action } => fleet_cli::run(&settings, action).await,
        Command::Archive { action } => archive_cli::run(action).await,
    }
}

/// A one-connection pool for the subcommands that run a few queries and exit.
fn database(settings: &Settings) -> anyhow::Result<herd_db::Pool> {
    let url = settings.require_database_url()?;
    Ok(herd_db::connect(url.expose(), 1))
}

async fn create_token(
    settings: Settings,
    email: &str,
    role: herd_db::accounts::Role,
    name: &str,
) -> anyhow::Result<()> {
    let pool = database(&settings)?;
    let mut conn = pool.get().await.context("connecting to the database")?;
    let account = herd_db::accounts::ensure_account(&mut conn, email, role).await?;
    let token = herd_db::accounts::issue_token(&mut conn, account.id, name).await?;
    tracing::info!(account = %account.id, token = %token.id, "token created");
    // The token alone on stdout, so scripts can capture it.
    println!("{}", token.secret);
    Ok(())
}

async fn seed(settings: Settings) -> anyhow::Result<()> {
    let pool = database(&settings)?;
    let mut conn = pool.get().await.context("connecting to the database")?;
    let seeded = herd_db::plans::seed_plans(&mut conn, &herd_core::plan::starter_plans()).await?;
    tracing::info!(plans = seeded, "plans seeded");
    Ok(())
}

async fn set_price(settings: Settings, plan: &str, price: Option<&str>) -> anyhow::Result<()> {
    let pool = database(&settings)?;
    let mut conn = pool.get().await.context("connecting to the database")?;
    if !herd_db::plans::set_price(&mut conn, plan, price).await? {
        anyhow::bail!("no plan is named `{plan}`");
    }
    tracing::info!(plan, price, "plan price set");
    Ok(())
}

async fn migrate(settings: Settings, action: MigrateAction) -> anyhow::Result<()> {
    let url = settings.require_database_url()?;
    let report = match action {
        MigrateAction::Up => herd_db::run_pending_migrations(url.expose()).await?,
        MigrateAction::DownAll => herd_db::revert_all_migrations(url.expose()).await?,
    };
    tracing::info!(?action, migrations = ?report.versions, "migrations done");
    Ok(())
}

fn billing_settings(config: &BillingConfig) -> anyhow::Result<Arc<BillingSettings>> {
    Ok(Arc::new(BillingSettings {
        stripe: herd_billing::Billing::new(&config.api_base, &config.secret_key)?,
        webhook_secrets: config.webhook_secrets.clone(),
        public_url: config.public_url.clone(),
        retention: chrono::Duration::days(i64::from(config.retention_days)),
    }))
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let url = settings.require_database_url()?.clone();
    let database = herd_db::connect(url.expose(), settings.database_max_connections);
    let kubernetes = herd_kube::client(settings.kubeconfig.as_deref()).await?;
    let schema = herd_db::SchemaStatus::default();
    tokio::spawn({
        let schema = schema.clone();
        async move { schema.migrate_until_current(url.expose()).await }
    });
    let archives = Arc::new(Archives::new(
        database.clone(),
        settings.require_sealer()?.clone(),
        settings.installation.clone(),
        settings.scratch_dir.clone(),
    ));
    let billing = settings
        .billing
        .as_ref()
        .map(billing_settings)
        .transpose()?;
    let background = background::start(
        &settings,
        database.clone(),
        schema.clone(),
        archives.clone(),
        billing.clone(),
    )?;
    let api = herd_api::ApiState {
        pool: database.clone(),
        archives,
        billing,
        import_from_private_addresses: settings.import_from_private_addresses,
    };
    let probes = herd_api::Probes {
        database,
        schema,
        kubernetes,
    };

    tracing::info!(address = %settings.listen_addr, "serving HTTP");
    HttpServer::new(move || {
        App::new()
            .wrap(middleware::Logger::new("%r %s %Dms").log_target("herd::http"))
            .configure(herd_api::configure(probes.clone(), api.clone()))
    })
    .bind(settings.listen_addr)
    .with_context(|| format!("binding {}", settings.listen_addr))?
    .run()
    .await?;
    // Jobs in progress stay leased and are resumed by whichever worker claims them next.
    background.cancel();
    Ok(())
}
