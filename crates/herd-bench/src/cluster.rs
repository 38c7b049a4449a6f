//! The cluster as `kubectl` with the stack's admin kubeconfig sees it.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::process::Command;

pub async fn kubectl(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("kubectl")
        .args(args)
        .output()
        .await
        .context("running kubectl (is it on PATH?)")?;
    if !output.status.success() {
        bail!(
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}

pub async fn server_version() -> anyhow::Result<String> {
    let version: Value = serde_json::from_str(&kubectl(&["get", "--raw", "/version"]).await?)?;
    Ok(version["gitVersion"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

pub async fn client_version() -> anyhow::Result<String> {
    let version: Value =
        serde_json::from_str(&kubectl(&["version", "--client", "-o", "json"]).await?)?;
    Ok(version["clientVersion"]["gitVersion"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

/// The API server's `apiserver_request_total` counter by verb. It counts the
/// requests of every client: the controllers, the scheduler and kwok's fake
/// kubelets as well as the one being measured.
#[derive(Debug, Clone, Default)]
pub struct Requests(BTreeMap<String, f64>);

impl Requests {
    pub async fn now() -> anyhow::Result<Requests> {
        let metrics = kubectl(&["get", "--raw", "/metrics"]).await?;
        let mut by_verb = BTreeMap::new();
        for line in metrics.lines() {
            let Some(labels) = line.strip_prefix("apiserver_request_total{") else {
                continue;
            };
            let Some((labels, value)) = labels.rsplit_once("} ") else {
                continue;
            };
            let verb = labels
                .split(',')
                .find_map(|label| label.strip_prefix("verb=\""))
                .map(|verb| verb.trim_end_matches('"'))
                .unwrap_or("unknown");
            *by_verb.entry(verb.to_owned()).or_insert(0.0) += value.parse::<f64>()?;
        }
        Ok(Requests(by_verb))
    }

    /// What happened between `earlier` and `self`, per instance.
    pub fn since(&self, earlier: &Requests, instances: usize) -> Value {
        let per_instance = |count: f64| crate::round(count / instances as f64);
        let by_verb: BTreeMap<&str, f64> = self
            .0
            .iter()
            .map(|(verb, count)| {
                let before = earlier.0.get(verb).copied().unwrap_or(0.0);
                (verb.as_str(), per_instance(count - before))
            })
            .filter(|(_, count)| *count > 0.0)
            .collect();
        let total: f64 = self.0.values().sum::<f64>() - earlier.0.values().sum::<f64>();
        json!({
            "total": total,
            "per_instance": per_instance(total),
            "per_instance_by_verb": by_verb,
        })
    }
}
