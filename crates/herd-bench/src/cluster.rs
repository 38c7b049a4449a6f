//! The cluster as `kubectl` with the stack's admin kubeconfig sees it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;
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

/// The API server's `apiserver_request_total` counter by verb, and where the
/// stack keeps the API server's audit log (`HERD_KUBE_AUDIT_LOG`), how far it
/// reached. The counter counts the requests of every client: the controllers,
/// the scheduler and kwok's fake kubelets as well as the one being measured;
/// the audit log tells them apart.
#[derive(Debug, Clone, Default)]
pub struct Requests {
    by_verb: BTreeMap<String, f64>,
    audit_log: Option<AuditMark>,
}

/// A position in the audit log: every event before `offset` was written
/// before the mark was taken (the stack's API server writes each event
/// before it answers).
#[derive(Debug, Clone)]
struct AuditMark {
    path: PathBuf,
    offset: u64,
}

/// The fields of an audit event that name the client and what it did.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuditEvent {
    verb: String,
    #[serde(default)]
    user_agent: String,
    user: AuditUser,
    #[serde(rename = "requestURI")]
    request_uri: String,
}

#[derive(Deserialize)]
struct AuditUser {
    #[serde(default)]
    username: String,
}

impl AuditEvent {
    /// The program behind the request: the product of its user agent
    /// (`herd/0.1.0`, `kubectl/v1.37.2 ...`), or the user it authenticated as
    /// when it sent none. The local stack's Kubernetes components are one
    /// binary, `herd-kube`, whose subcommand names the component.
    fn client(&self) -> String {
        match self.user_agent.split('/').next() {
            Some(product) if !product.is_empty() => match product.strip_prefix("herd-kube ") {
                Some(component) => format!("kube-{component}"),
                None => product.to_owned(),
            },
            _ => self.user.username.clone(),
        }
    }

    /// The benchmark's own scrapes of the request counter.
    fn is_measurement(&self) -> bool {
        self.request_uri == "/metrics"
    }
}

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
        let audit_log = match std::env::var_os("HERD_KUBE_AUDIT_LOG") {
            Some(path) => {
                let path = PathBuf::from(path);
                let offset = tokio::fs::metadata(&path)
                    .await
                    .with_context(|| format!("reading the audit log {}", path.display()))?
                    .len();
                Some(AuditMark { path, offset })
            }
            None => None,
        };
        Ok(Requests { by_verb, audit_log })
    }

    /// What happened between `earlier` and `self`, per instance: in all,
    /// by verb, and by client when the audit log is there.
    pub fn since(&self, earlier: &Requests, instances: usize) -> anyhow::Result<Value> {
        let per_instance = |count: f64| crate::round(count / instances as f64);
        let by_verb: BTreeMap<&str, f64> = self
            .by_verb
            .iter()
            .map(|(verb, count)| {
                let before = earlier.by_verb.get(verb).copied().unwrap_or(0.0);
                (verb.as_str(), per_instance(count - before))
            })
            .filter(|(_, count)| *count > 0.0)
            .collect();
        let total: f64 = self.by_verb.values().sum::<f64>() - earlier.by_verb.values().sum::<f64>();
        let mut report = json!({
            "total": total,
            "per_instance": per_instance(total),
            "per_instance_by_verb": by_verb,
        });
        if let (Some(from), Some(to)) = (&earlier.audit_log, &self.audit_log) {
            let by_client = audited_requests(&from.path, from.offset, to.offset)?;
            report["by_client"] = by_client
                .into_iter()
                .map(|(client, verbs)| {
                    let total: f64 = verbs.values().sum();
                    let verbs: BTreeMap<String, f64> = verbs
                        .into_iter()
                        .map(|(verb, count)| (verb, per_instance(count)))
                        .collect();
                    let counts = json!({
                        "per_instance": per_instance(total),
                        "per_instance_by_verb": verbs,
                    });
                    (client, counts)
                })
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
        Ok(report)
    }
}

/// The requests in the audit log between two offsets, counted by client and
/// verb.
fn audited_requests(
    path: &Path,
    from: u64,
    to: u64,
) -> anyhow::Result<BTreeMap<String, BTreeMap<String, f64>>> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    file.seek(SeekFrom::Start(from))?;
    let mut counts: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for line in BufReader::new(file.take(to - from)).lines() {
        let event: AuditEvent = serde_json::from_str(&line?)
            .with_context(|| format!("an audit event in {}", path.display()))?;
        if event.is_measurement() {
            continue;
        }
        *counts
            .entry(event.client())
            .or_default()
            .entry(event.verb)
            .or_insert(0.0) += 1.0;
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(user_agent: &str) -> AuditEvent {
        serde_json::from_value(json!({
            "kind": "Event",
            "verb": "patch",
            "userAgent": user_agent,
            "user": {"username": "admin", "groups": ["system:masters"]},
            "requestURI": "/apis/apps/v1/namespaces/t/deployments/web",
        }))
        .unwrap()
    }

    #[test]
    fn clients_are_named_by_their_program() {
        assert_eq!(event("herd/0.1.0").client(), "herd");
        assert_eq!(
            event("kubectl/v1.37.2 (linux/amd64) kubernetes/abc").client(),
            "kubectl"
        );
        assert_eq!(
            event("herd-kube controller-manager/v1.37.2 (linux/amd64) kubernetes/abc/system:serviceaccount:kube-system:replicaset-controller").client(),
            "kube-controller-manager"
        );
        assert_eq!(event("").client(), "admin");
    }
}
