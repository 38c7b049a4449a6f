//! `herd fleet ...`: registering the clusters, database servers and object
//! stores instances are placed on. Credentials are read from files or the
//! environment, never from arguments, which any user can see in `ps`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use herd_db::fleet::{NewCluster, NewDatabaseServer, NewObjectStore};

use crate::config::Settings;

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Register a Kubernetes cluster, or update the one with this name.
    AddCluster {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "default")]
        region: String,
        /// A kubeconfig file granting Herd cluster-admin on the cluster.
        #[arg(long)]
        kubeconfig: PathBuf,
        /// How many instances the cluster takes.
        #[arg(long, default_value_t = 1000)]
        capacity: i32,
    },
    /// Register a PostgreSQL server tenant databases are created on.
    AddDatabaseServer {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "default")]
        region: String,
        /// A superuser URL Herd administers the server with.
        #[arg(long, env = "HERD_FLEET_ADMIN_URL", hide_env_values = true)]
        admin_url: String,
        /// Where tenants' pods reach the server.
        #[arg(long)]
        tenant_host: String,
        #[arg(long, default_value_t = 5432)]
        tenant_port: i32,
        #[arg(long, default_value_t = 1000)]
        capacity: i32,
    },
    /// Register a Garage S3 store tenant buckets are created on.
    AddObjectStore {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "default")]
        region: String,
        #[arg(long)]
        s3_endpoint: String,
        #[arg(long, default_value = "garage")]
        s3_region: String,
        #[arg(long)]
        admin_endpoint: String,
        #[arg(long, env = "HERD_FLEET_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: String,
    },
    /// Reserve a domain (and everything below it) so no customer can order it.
    ReserveDomain {
        domain: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

pub async fn run(settings: &Settings, command: FleetCommand) -> anyhow::Result<()> {
    let url = settings.require_database_url()?;
    let sealer = settings.require_sealer()?;
    let pool = herd_db::connect(url.expose(), 2);
    let mut conn = pool.get().await.context("connecting to the database")?;
    match command {
        FleetCommand::AddCluster {
            name,
            region,
            kubeconfig,
            capacity,
        } => {
            let kubeconfig = std::fs::read_to_string(&kubeconfig)
                .with_context(|| format!("reading {}", kubeconfig.display()))?;
            // A kubeconfig that does not even parse is refused here, not at the first provisioning.
            herd_jobs::client_from_kubeconfig(&kubeconfig).await?;
            let new = NewCluster {
                name: &name,
                region: &region,
                kubeconfig: &kubeconfig,
                capacity_instances: capacity,
            };
            let id = herd_db::fleet::register_cluster(&mut conn, sealer, new).await?;
            println!("{id}");
        }
        FleetCommand::AddDatabaseServer {
            name,
            region,
            admin_url,
            tenant_host,
            tenant_port,
            capacity,
        } => {
            herd_tenancy::DatabaseServer::new(&admin_url)?;
            let new = NewDatabaseServer {
                name: &name,
                region: &region,
                tenant_host: &tenant_host,
                tenant_port,
                admin_url: &admin_url,
                capacity_databases: capacity,
            };
            let id = herd_db::fleet::register_database_server(&mut conn, sealer, new).await?;
            println!("{id}");
        }
        FleetCommand::AddObjectStore {
            name,
            region,
            s3_endpoint,
            s3_region,
            admin_endpoint,
            admin_token,
        } => {
            let new = NewObjectStore {
                name: &name,
                region: &region,
                s3_endpoint: &s3_endpoint,
                s3_region: &s3_region,
                admin_endpoint: &admin_endpoint,
                admin_token: &admin_token,
            };
            let id = herd_db::fleet::register_object_store(&mut conn, sealer, new).await?;
            println!("{id}");
        }
        FleetCommand::ReserveDomain { domain, reason } => {
            let domain = herd_core::domain::Domain::parse(&domain)?;
            herd_db::instances::reserve_domain(&mut conn, domain.as_str(), &reason).await?;
        }
    }
    Ok(())
}
