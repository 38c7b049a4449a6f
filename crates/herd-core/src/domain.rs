//! Domain names customers order instances under.
//!
//! A Mastodon server's `LOCAL_DOMAIN` can never change after first boot, so
//! a bad name must be refused when the order is placed, not discovered later.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DomainError {
    #[error("the domain is empty")]
    Empty,
    #[error("`{0}` is not a valid internationalised domain name")]
    Idna(String),
    #[error("the domain is {0} characters long; at most 253 are allowed")]
    TooLong(usize),
    #[error("the label `{0}` is longer than 63 characters")]
    LabelTooLong(String),
    #[error("the domain has an empty label")]
    EmptyLabel,
    #[error("the label `{0}` may hold only letters, digits and inner hyphens")]
    InvalidLabel(String),
    #[error("a hosted domain needs at least two labels, like example.social")]
    SingleLabel,
    #[error("an IP address is not a domain")]
    IpAddress,
    #[error("the top-level label `{0}` cannot be all digits")]
    NumericTld(String),
}

/// A domain in its canonical ASCII form (lowercase, punycode for
/// internationalised labels, no trailing dot).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Domain(String);

impl Domain {
    pub fn parse(input: &str) -> Result<Self, DomainError> {
        let trimmed = input.trim().trim_end_matches('.');
        if trimmed.is_empty() {
            return Err(DomainError::Empty);
        }
        if trimmed.parse::<IpAddr>().is_ok()
            || trimmed.trim_matches(['[', ']']).parse::<IpAddr>().is_ok()
        {
            return Err(DomainError::IpAddress);
        }
        let ascii =
            idna::domain_to_ascii(trimmed).map_err(|_| DomainError::Idna(trimmed.to_owned()))?;
        if ascii.len() > 253 {
            return Err(DomainError::TooLong(ascii.len()));
        }
        let labels: Vec<&str> = ascii.split('.').collect();
        for label in &labels {
            check_label(label)?;
        }
        if labels.len() < 2 {
            return Err(DomainError::SingleLabel);
        }
        let tld = labels[labels.len() - 1];
        if tld.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DomainError::NumericTld(tld.to_owned()));
        }
        Ok(Domain(ascii))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `self` is `other` or lies below it (`a.example.social` under `example.social`).
    pub fn is_within(&self, other: &Domain) -> bool {
        self.0 == other.0 || self.0.ends_with(&format!(".{}", other.0))
    }
}

fn check_label(label: &str) -> Result<(), DomainError> {
    if label.is_empty() {
        return Err(DomainError::EmptyLabel);
    }
    if label.len() > 63 {
        return Err(DomainError::LabelTooLong(label.to_owned()));
    }
    let allowed = label
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !allowed || label.starts_with('-') || label.ends_with('-') {
        return Err(DomainError::InvalidLabel(label.to_owned()));
    }
    Ok(())
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Domain {
    type Error = DomainError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Domain::parse(&value)
    }
}

impl From<Domain> for String {
    fn from(domain: Domain) -> Self {
        domain.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonicalises_case_trailing_dot_and_unicode() {
        assert_eq!(
            Domain::parse("Example.Social.").unwrap().as_str(),
            "example.social"
        );
        assert_eq!(
            Domain::parse("  mastodon.example  ").unwrap().as_str(),
            "mastodon.example"
        );
        assert_eq!(
            Domain::parse("bücher.example").unwrap().as_str(),
            "xn--bcher-kva.example"
        );
    }

    #[test]
    fn refuses_malformed_domains() {
        assert_eq!(Domain::parse(""), Err(DomainError::Empty));
        assert_eq!(Domain::parse("localhost"), Err(DomainError::SingleLabel));
        assert_eq!(Domain::parse("10.0.0.1"), Err(DomainError::IpAddress));
        assert_eq!(Domain::parse("[::1]"), Err(DomainError::IpAddress));
        assert_eq!(Domain::parse("a..example"), Err(DomainError::EmptyLabel));
        assert!(matches!(
            Domain::parse("-bad.example"),
            Err(DomainError::InvalidLabel(_))
        ));
        assert!(matches!(
            Domain::parse("bad-.example"),
            Err(DomainError::InvalidLabel(_))
        ));
        assert!(matches!(
            Domain::parse("under_score.example"),
            Err(DomainError::InvalidLabel(_))
        ));
        assert!(Domain::parse("a b.example").is_err());
        assert!(matches!(
            Domain::parse("example.123"),
            Err(DomainError::NumericTld(_))
        ));
    }

    #[test]
    fn enforces_label_and_total_lengths() {
        let label63 = "a".repeat(63);
        assert!(Domain::parse(&format!("{label63}.example")).is_ok());
        assert!(matches!(
            Domain::parse(&format!("{}a.example", label63)),
            Err(DomainError::LabelTooLong(_))
        ));
        let long = vec!["a".repeat(60); 5].join(".");
        assert!(matches!(
            Domain::parse(&format!("{long}.example")),
            Err(DomainError::TooLong(_))
        ));
    }

    #[test]
    fn knows_subdomains() {
        let parent = Domain::parse("example.social").unwrap();
        assert!(Domain::parse("example.social").unwrap().is_within(&parent));
        assert!(
            Domain::parse("a.example.social")
                .unwrap()
                .is_within(&parent)
        );
        assert!(
            !Domain::parse("badexample.social")
                .unwrap()
                .is_within(&parent)
        );
    }

    #[test]
    fn deserialises_through_validation() {
        let ok: Domain = serde_json::from_str("\"Example.Social\"").unwrap();
        assert_eq!(ok.as_str(), "example.social");
        assert!(serde_json::from_str::<Domain>("\"not a domain\"").is_err());
    }
}
