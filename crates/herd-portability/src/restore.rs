//! `RESTORE.md`, the steps to restore an archive by hand, written into
//! every archive so that the archive explains itself without Herd.

use herd_core::archive::{ConsistencyMethod, Description};

/// The text of `RESTORE.md` with `{{name}}` placeholders for the instance.
pub const RESTORE_TEMPLATE: &str = include_str!("restore.md");

/// `RESTORE.md` for one archive.
pub fn render_restore(description: &Description) -> String {
    let method = match description.consistency.method {
        ConsistencyMethod::Snapshot => "a snapshot taken while the server ran",
        ConsistencyMethod::MaintenanceWindow => "read while the server was stopped",
    };
    let left_out = if description.left_out.is_empty() {
        "- nothing.".to_owned()
    } else {
        description
            .left_out
            .iter()
            .map(|l| format!("- `{}`: {}. Rebuilt: {}.", l.path, l.reason, l.rebuild))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let values = [
        ("local_domain", description.local_domain.to_string()),
        ("web_domain", description.web_domain.to_string()),
        ("created_at", description.created_at.clone()),
        ("mastodon_version", description.mastodon_version.to_string()),
        (
            "schema_migration_version",
            description.schema_migration_version.to_string(),
        ),
        ("herd_version", description.herd_version.clone()),
        (
            "consistency",
            format!("{method} ({})", description.consistency.detail),
        ),
        ("left_out", left_out),
    ];
    // One pass, so a value that happens to contain `{{...}}` stays as it is.
    let mut text = String::with_capacity(RESTORE_TEMPLATE.len() + 1024);
    let mut rest = RESTORE_TEMPLATE;
    while let Some(start) = rest.find("{{") {
        text.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .expect("placeholders in the template are closed");
        let name = &after[..end];
        let (_, value) = values
            .iter()
            .find(|(n, _)| *n == name)
            .expect("every placeholder in the template has a value");
        text.push_str(value);
        rest = &after[end + 2..];
    }
    text.push_str(rest);
    text
}

#[cfg(test)]
mod tests {
    use herd_core::archive::{Consistency, LeftOut};
    use herd_core::domain::Domain;

    use super::*;

    #[test]
    fn every_placeholder_is_filled() {
        let description = Description {
            herd_version: "0.1.0".to_owned(),
            local_domain: Domain::parse("example.social").unwrap(),
            web_domain: Domain::parse("social.example.org").unwrap(),
            mastodon_version: "4.5.2".parse().unwrap(),
            schema_migration_version: 20_250_728_104_413,
            created_at: "2026-11-23T14:00:00Z".to_owned(),
            consistency: Consistency {
                method: ConsistencyMethod::MaintenanceWindow,
                detail: "stopped {{web_domain}} at 14:00".to_owned(),
            },
            left_out: vec![LeftOut::remote_media_cache()],
        };
        let text = render_restore(&description);
        assert!(text.starts_with("# Restoring example.social\n"), "{text}");
        assert!(text.contains("Mastodon 4.5.2, database schema\n20250728104413"));
        assert!(
            text.contains("read while the server was stopped (stopped {{web_domain}} at 14:00)")
        );
        assert!(text.contains("- `system/cache/`: copies of media"));
        assert_eq!(
            text.matches("{{").count(),
            1,
            "only the one inside the detail"
        );
    }
}
