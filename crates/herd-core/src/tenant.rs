//! Names of an instance's data services, derived from its id alone: never from
//! the domain, so they are unique across the fleet, valid everywhere, and
//! reveal nothing about the customer.

/// The database, its role and the bucket of one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantNames {
    pub database: String,
    pub role: String,
    pub bucket: String,
}

impl TenantNames {
    /// `instance_id` in any form a UUID prints in; only its hex digits count.
    pub fn for_instance(instance_id: &str) -> TenantNames {
        let hex: String = instance_id
            .chars()
            .filter(char::is_ascii_hexdigit)
            .map(|c| c.to_ascii_lowercase())
            .collect();
        TenantNames {
            database: format!("mastodon_{hex}"),
            role: format!("mastodon_{hex}"),
            bucket: format!("mastodon-{hex}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_postgres_and_s3_rules() {
        let names = TenantNames::for_instance("0193A2B4-5C6D-7E8F-9A0B-1C2D3E4F5A6B");
        assert_eq!(names.database, "mastodon_0193a2b45c6d7e8f9a0b1c2d3e4f5a6b");
        assert!(names.database.len() <= 63 && names.bucket.len() <= 63);
        assert!(
            names
                .bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        );
    }
}
