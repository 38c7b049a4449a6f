//! E-mail addresses of the Mastodon owner accounts an order creates.
//!
//! Mastodon sends the owner a confirmation mail, so an address that cannot
//! receive one leaves a server nobody can log into. The check is the
//! practical subset of RFC 5321 that mail systems accept: a dot-atom local
//! part and a domain Herd could host itself.

use herd_core::domain::Domain;

const MAX_LENGTH: usize = 254;
const MAX_LOCAL_LENGTH: usize = 64;
const LOCAL_SPECIALS: &str = "!#$%&'*+/=?^_`{|}~-";

/// The address with its domain in canonical form, or why it is refused.
pub fn check_email(input: &str) -> Result<String, String> {
    let address = input.trim();
    if address.is_empty() {
        return Err("the address is empty".into());
    }
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Err("the address has no `@`".into());
    };
    check_local_part(local)?;
    let domain = Domain::parse(domain).map_err(|err| format!("after `@`: {err}"))?;
    let canonical = format!("{local}@{domain}");
    if canonical.len() > MAX_LENGTH {
        return Err(format!(
            "the address is {} characters long; at most {MAX_LENGTH} are allowed",
            canonical.len()
        ));
    }
    Ok(canonical)
}

fn check_local_part(local: &str) -> Result<(), String> {
    if local.is_empty() || local.len() > MAX_LOCAL_LENGTH {
        return Err(format!(
            "the part before `@` must be 1 to {MAX_LOCAL_LENGTH} characters"
        ));
    }
    let allowed = local
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || LOCAL_SPECIALS.contains(c));
    if !allowed || local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(format!("`{local}` is not a valid part before `@`"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_addresses_and_canonicalises_the_domain() {
        assert_eq!(
            check_email(" Owner+herd@Example.Social ").unwrap(),
            "Owner+herd@example.social"
        );
        assert_eq!(
            check_email("first.last@bücher.example").unwrap(),
            "first.last@xn--bcher-kva.example"
        );
    }

    #[test]
    fn refuses_what_cannot_receive_mail() {
        for bad in [
            "",
            "owner",
            "@example.social",
            "owner@",
            "owner@localhost",
            "owner@10.0.0.1",
            "two@at@example.social",
            ".owner@example.social",
            "owner.@example.social",
            "ow..ner@example.social",
            "o wner@example.social",
            "owner@exa mple.social",
            "\"quoted\"@example.social",
        ] {
            assert!(check_email(bad).is_err(), "{bad:?} was accepted");
        }
        let long_local = format!("{}@example.social", "a".repeat(65));
        assert!(check_email(&long_local).is_err());
        let long_domain = format!("owner@{}.example", vec!["a".repeat(60); 4].join("."));
        assert!(check_email(&long_domain).is_err());
    }
}
