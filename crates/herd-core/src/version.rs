//! Mastodon release versions.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("`{0}` is not a Mastodon version like 4.5.2")]
pub struct VersionError(pub String);

/// A released Mastodon version. Pre-releases are not hosted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MastodonVersion {
    pub major: u16,
    pub minor: u16,
    pub patch: u16,
}

/// The version new instances get when the order names none.
pub const DEFAULT_VERSION: MastodonVersion = MastodonVersion {
    major: 4,
    minor: 5,
    patch: 2,
};
/// The oldest version Herd hosts: older releases lack what Herd relies on
/// (active record encryption keys in the environment, since 4.3).
pub const OLDEST_SUPPORTED: MastodonVersion = MastodonVersion {
    major: 4,
    minor: 3,
    patch: 0,
};

impl MastodonVersion {
    /// The image tag Mastodon publishes for this version.
    pub fn image_tag(&self) -> String {
        format!("v{self}")
    }

    pub fn is_supported(&self) -> bool {
        *self >= OLDEST_SUPPORTED
    }
}

impl FromStr for MastodonVersion {
    type Err = VersionError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let error = || VersionError(input.to_owned());
        let digits = input.strip_prefix('v').unwrap_or(input);
        let parts: Vec<&str> = digits.split('.').collect();
        let [major, minor, patch] = parts.as_slice() else {
            return Err(error());
        };
        let number = |part: &str| {
            if part.is_empty() || part.len() > 4 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(error());
            }
            part.parse::<u16>().map_err(|_| error())
        };
        Ok(MastodonVersion {
            major: number(major)?,
            minor: number(minor)?,
            patch: number(patch)?,
        })
    }
}

impl fmt::Display for MastodonVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl TryFrom<String> for MastodonVersion {
    type Error = VersionError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<MastodonVersion> for String {
    fn from(version: MastodonVersion) -> Self {
        version.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_or_without_v() {
        let v: MastodonVersion = "v4.5.2".parse().unwrap();
        assert_eq!(v, "4.5.2".parse().unwrap());
        assert_eq!(v.image_tag(), "v4.5.2");
        assert_eq!(v.to_string(), "4.5.2");
    }

    #[test]
    fn refuses_anything_else() {
        for bad in [
            "",
            "4.5",
            "4.5.2.1",
            "4.5.x",
            "4.5.2-rc1",
            "latest",
            "4..2",
            "+4.5.2",
            "99999.0.0",
        ] {
            assert!(bad.parse::<MastodonVersion>().is_err(), "{bad}");
        }
    }

    #[test]
    fn orders_numerically() {
        let older: MastodonVersion = "4.10.0".parse().unwrap();
        assert!(older > "4.9.9".parse().unwrap());
        assert!(DEFAULT_VERSION.is_supported());
        assert!(!"4.2.9".parse::<MastodonVersion>().unwrap().is_supported());
    }
}
