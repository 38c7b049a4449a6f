//! Which version jumps Herd takes: Mastodon's migrations are written to run
//! from one minor release to the next, so a server moves up one minor
//! release at a time, never across a major release without its own guide,
//! and never down. An import onto a newer version is such a jump too.

use thiserror::Error;

use crate::spec::{MigrationPhase, MigrationRun};
use crate::version::MastodonVersion;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UpgradeRefused {
    #[error("{from} is already at {to} or newer; Herd never downgrades")]
    NotNewer {
        from: MastodonVersion,
        to: MastodonVersion,
    },
    #[error("Mastodon {to} is not hosted")]
    Unsupported { to: MastodonVersion },
    #[error(
        "{from} to {to} skips a release: Mastodon's migrations are upgraded one minor release at a time ({from} to {next}.x first)"
    )]
    SkipsRelease {
        from: MastodonVersion,
        to: MastodonVersion,
        next: String,
    },
    #[error("{from} to {to} crosses a major release, which needs its own migration guide")]
    CrossesMajor {
        from: MastodonVersion,
        to: MastodonVersion,
    },
}

/// Whether an instance at `from` may be upgraded straight to `to`: newer,
/// hosted, within one major release and at most one minor release on.
pub fn check_jump(from: MastodonVersion, to: MastodonVersion) -> Result<(), UpgradeRefused> {
    if to <= from {
        return Err(UpgradeRefused::NotNewer { from, to });
    }
    if !to.is_supported() {
        return Err(UpgradeRefused::Unsupported { to });
    }
    if to.major != from.major {
        return Err(UpgradeRefused::CrossesMajor { from, to });
    }
    if to.minor > from.minor + 1 {
        return Err(UpgradeRefused::SkipsRelease {
            from,
            to,
            next: format!("{}.{}", from.major, from.minor + 1),
        });
    }
    Ok(())
}

/// Where an upgrade stands, in Mastodon's own order: a backup, the
/// pre-deploy migrations under the old code, the new code, the post-deploy
/// migrations. Until the post-deploy migrations run, the old code still
/// fits the schema, so a rollout that does not become ready is rolled back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeStage {
    Backup,
    PreDeploy,
    Rollout,
    PostDeploy,
    /// Back to the old version after a failure before the post-deploy migrations.
    RollingBack,
    Succeeded,
    RolledBack,
    /// The post-deploy migrations failed: no way back, an operator looks.
    Failed,
}

impl UpgradeStage {
    pub const ALL: [UpgradeStage; 8] = [
        UpgradeStage::Backup,
        UpgradeStage::PreDeploy,
        UpgradeStage::Rollout,
        UpgradeStage::PostDeploy,
        UpgradeStage::RollingBack,
        UpgradeStage::Succeeded,
        UpgradeStage::RolledBack,
        UpgradeStage::Failed,
    ];

    /// The stable name, as stored.
    pub fn name(self) -> &'static str {
        match self {
            UpgradeStage::Backup => "backup",
            UpgradeStage::PreDeploy => "pre_deploy",
            UpgradeStage::Rollout => "rollout",
            UpgradeStage::PostDeploy => "post_deploy",
            UpgradeStage::RollingBack => "rolling_back",
            UpgradeStage::Succeeded => "succeeded",
            UpgradeStage::RolledBack => "rolled_back",
            UpgradeStage::Failed => "failed",
        }
    }

    pub fn parse(stored: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|stage| stage.name() == stored)
    }

    /// Whether the upgrade still drives the instance.
    pub fn is_active(self) -> bool {
        !matches!(
            self,
            UpgradeStage::Succeeded | UpgradeStage::RolledBack | UpgradeStage::Failed
        )
    }

    /// Whether the instance's workloads follow this stage rather than the
    /// version on record: while it is under way, and after a failure past
    /// the point of no return. A finished upgrade is in the record.
    pub fn shapes_the_workloads(self) -> bool {
        self.is_active() || self == UpgradeStage::Failed
    }

    /// The version web, streaming and sidekiq run in this stage.
    pub fn workload_version(self, from: MastodonVersion, to: MastodonVersion) -> MastodonVersion {
        match self {
            UpgradeStage::Backup
            | UpgradeStage::PreDeploy
            | UpgradeStage::RollingBack
            | UpgradeStage::RolledBack => from,
            UpgradeStage::Rollout
            | UpgradeStage::PostDeploy
            | UpgradeStage::Succeeded
            | UpgradeStage::Failed => to,
        }
    }

    /// The migration Job this stage runs. A failed upgrade keeps its failed
    /// post-deploy Job, so the instance's status shows what failed.
    pub fn migration(self, to: MastodonVersion) -> Option<MigrationRun> {
        let phase = match self {
            UpgradeStage::PreDeploy => MigrationPhase::PreDeploy,
            UpgradeStage::PostDeploy | UpgradeStage::Failed => MigrationPhase::PostDeploy,
            _ => return None,
        };
        Some(MigrationRun {
            version: to.to_string(),
            phase,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> MastodonVersion {
        text.parse().unwrap()
    }

    #[test]
    fn supported_jumps_pass() {
        for (from, to) in [("4.4.3", "4.4.5"), ("4.4.8", "4.5.0"), ("4.3.0", "4.4.2")] {
            assert_eq!(check_jump(v(from), v(to)), Ok(()), "{from} -> {to}");
        }
    }

    #[test]
    fn unsupported_jumps_are_refused_with_the_reason() {
        assert!(matches!(
            check_jump(v("4.5.2"), v("4.5.2")),
            Err(UpgradeRefused::NotNewer { .. })
        ));
        assert!(matches!(
            check_jump(v("4.5.2"), v("4.4.0")),
            Err(UpgradeRefused::NotNewer { .. })
        ));
        let skip = check_jump(v("4.3.1"), v("4.5.0")).unwrap_err();
        assert!(skip.to_string().contains("4.4.x first"), "{skip}");
        assert!(matches!(
            check_jump(v("4.5.2"), v("5.0.0")),
            Err(UpgradeRefused::CrossesMajor { .. })
        ));
    }

    #[test]
    fn stages_keep_their_stored_names() {
        for stage in UpgradeStage::ALL {
            assert_eq!(UpgradeStage::parse(stage.name()), Some(stage));
        }
        assert_eq!(UpgradeStage::parse("done"), None);
    }

    #[test]
    fn the_new_code_runs_only_between_the_two_migrations_and_after() {
        let (from, to) = (v("4.4.3"), v("4.5.2"));
        let runs = |stage: UpgradeStage| {
            (
                stage.workload_version(from, to).to_string(),
                stage.migration(to).map(|m| m.phase),
            )
        };
        assert_eq!(runs(UpgradeStage::Backup), ("4.4.3".into(), None));
        assert_eq!(
            runs(UpgradeStage::PreDeploy),
            ("4.4.3".into(), Some(MigrationPhase::PreDeploy))
        );
        assert_eq!(runs(UpgradeStage::Rollout), ("4.5.2".into(), None));
        assert_eq!(
            runs(UpgradeStage::PostDeploy),
            ("4.5.2".into(), Some(MigrationPhase::PostDeploy))
        );
        assert_eq!(runs(UpgradeStage::RollingBack), ("4.4.3".into(), None));
        assert_eq!(runs(UpgradeStage::RolledBack), ("4.4.3".into(), None));
        assert_eq!(runs(UpgradeStage::Succeeded), ("4.5.2".into(), None));
        assert_eq!(
            UpgradeStage::PreDeploy.migration(to).unwrap().version,
            "4.5.2"
        );
    }

    #[test]
    fn only_unfinished_stages_are_active() {
        let active: Vec<_> = UpgradeStage::ALL
            .into_iter()
            .filter(|stage| stage.is_active())
            .collect();
        assert_eq!(
            active,
            [
                UpgradeStage::Backup,
                UpgradeStage::PreDeploy,
                UpgradeStage::Rollout,
                UpgradeStage::PostDeploy,
                UpgradeStage::RollingBack
            ]
        );
    }
}
