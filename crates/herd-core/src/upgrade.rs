//! Which version jumps Herd takes: Mastodon's migrations are written to run
//! from one minor release to the next, so a server moves up one minor
//! release at a time, never across a major release without its own guide,
//! and never down. An import onto a newer version is such a jump too.

use thiserror::Error;

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
}
