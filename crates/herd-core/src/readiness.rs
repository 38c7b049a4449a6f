//! Whether Herd can serve: the verdict over the dependencies it needs.

use serde::Serialize;

/// A dependency Herd cannot work without.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dependency {
    Database,
    Kubernetes,
}

impl Dependency {
    pub fn name(self) -> &'static str {
        match self {
            Dependency::Database => "database",
            Dependency::Kubernetes => "kubernetes",
        }
    }
}

/// What one probe of a dependency found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Probe {
    pub dependency: Dependency,
    pub reachable: bool,
    /// What the probe learnt: the server version when reachable, the failure otherwise.
    pub detail: String,
}

impl Probe {
    pub fn reachable(dependency: Dependency, detail: impl Into<String>) -> Self {
        Probe {
            dependency,
            reachable: true,
            detail: detail.into(),
        }
    }

    pub fn unreachable(dependency: Dependency, detail: impl Into<String>) -> Self {
        Probe {
            dependency,
            reachable: false,
            detail: detail.into(),
        }
    }
}

/// The verdict over all probes: ready only when every dependency is reachable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub dependencies: Vec<Probe>,
}

impl Readiness {
    pub fn from_probes(dependencies: Vec<Probe>) -> Self {
        let ready = dependencies.iter().all(|probe| probe.reachable);
        Readiness {
            ready,
            dependencies,
        }
    }

    /// The dependencies that failed, by name, in probe order.
    pub fn failing(&self) -> Vec<&'static str> {
        self.dependencies
            .iter()
            .filter(|probe| !probe.reachable)
            .map(|probe| probe.dependency.name())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_when_every_dependency_is_reachable() {
        let readiness = Readiness::from_probes(vec![
            Probe::reachable(Dependency::Database, "PostgreSQL 15"),
            Probe::reachable(Dependency::Kubernetes, "v1.37.0"),
        ]);
        assert!(readiness.ready);
        assert!(readiness.failing().is_empty());
    }

    #[test]
    fn names_every_unreachable_dependency() {
        let readiness = Readiness::from_probes(vec![
            Probe::unreachable(Dependency::Database, "connection refused"),
            Probe::reachable(Dependency::Kubernetes, "v1.37.0"),
        ]);
        assert!(!readiness.ready);
        assert_eq!(readiness.failing(), vec!["database"]);

        let both = Readiness::from_probes(vec![
            Probe::unreachable(Dependency::Database, "timeout"),
            Probe::unreachable(Dependency::Kubernetes, "timeout"),
        ]);
        assert_eq!(both.failing(), vec!["database", "kubernetes"]);
    }

    #[test]
    fn no_probes_means_nothing_is_missing() {
        assert!(Readiness::from_probes(vec![]).ready);
    }
}
