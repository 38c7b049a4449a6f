//! What a fixture holds, as pure functions of the seed and a row's index.
//!
//! Every row is computed from its own random stream, so each table is written
//! in one pass that needs neither the other tables in memory nor any state
//! carried between passes: a fixture of any size takes the same memory.

use crate::rng::Rng;

/// Rows per unit of scale. One unit is a few MB of database and about 28 MB
/// of media; the size grows linearly with the scale.
pub const ACCOUNTS_PER_UNIT: u64 = 50;
pub const STATUSES_PER_UNIT: u64 = 2_000;
pub const TAGS_PER_UNIT: u64 = 20;
pub const DOMAIN_BLOCKS_PER_UNIT: u64 = 5;

/// 2022-11-01T00:00:00Z: accounts are created over the first 30 days,
/// statuses over the three years after.
const EPOCH_MS: i64 = 1_667_260_800_000;
const DAY_MS: i64 = 86_400_000;
const ACCOUNT_SPAN_MS: i64 = 30 * DAY_MS;
const STATUS_SPAN_MS: i64 = 3 * 365 * DAY_MS;

pub const REMOTE_DOMAINS: &[&str] = &[
    "mastodon.social",
    "fosstodon.org",
    "xn--r8jz45g.xn--zckzah",
    "social.example.co.uk",
    "mstdn.jp",
];

/// Words statuses, notes and names are made of: scripts, emoji sequences,
/// combining marks, and text that trips up careless escaping.
pub const WORDS: &[&str] = &[
    "mastodon",
    "fediverse",
    "toot",
    "hello",
    "world",
    "🦣",
    "🐘",
    "👍🏽",
    "👨‍👩‍👧‍👦",
    "🏳️‍🌈",
    "مرحبا",
    "بالعالم",
    "שלום",
    "עולם",
    "\u{200f}",
    "你好",
    "世界",
    "こんにちは",
    "안녕하세요",
    "e\u{301}",
    "n\u{303}",
    "Z\u{324}\u{354}a\u{308}\u{356}l\u{36e}g\u{30c}o",
    "café",
    "Ελληνικά",
    "Кириллица",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "\u{feff}",
    "\u{2028}",
    "\\N",
    "back\\slash",
    "tab\there",
    "line\nbreak",
    "cr\rlf",
    "\"quoted\"",
    "'single'",
    "<p>html</p>",
    "&amp;",
    "#fixture",
    "@user0",
    "https://example.com/a?b=c&d=e",
    "{curly,\"array\"}",
    "%s",
    "$1",
    "--",
    "/* */",
];

/// Values at the edges of what a `timestamp` column holds.
pub const EDGE_TIMES: &[&str] = &[
    "1970-01-01 00:00:00",
    "2000-02-29 23:59:59.999999",
    "2038-01-19 03:14:08",
    "9999-12-31 23:59:59.999999",
    "0001-01-01 00:00:00",
    "0044-03-15 12:00:00 BC",
    "infinity",
    "-infinity",
];

pub const LANGUAGES: &[&str] = &["en", "ja", "ar", "he", "de", "zh-CN", "ko"];

#[derive(Debug, Clone)]
pub struct Scale {
    pub seed: u64,
    /// Object sizes in percent of the usual ones.
    pub media_percent: u64,
    pub accounts: u64,
    pub statuses: u64,
    pub tags: u64,
    pub domain_blocks: u64,
}

impl Scale {
    pub fn new(seed: u64, units: u64, media_percent: u64) -> Scale {
        let units = units.max(1);
        Scale {
            seed,
            media_percent,
            accounts: ACCOUNTS_PER_UNIT * units,
            statuses: STATUSES_PER_UNIT * units,
            tags: TAGS_PER_UNIT * units,
            domain_blocks: DOMAIN_BLOCKS_PER_UNIT * units,
        }
    }

    pub fn rng(&self, purpose: &str, index: u64) -> Rng {
        Rng::derive(self.seed, purpose, index)
    }

    pub fn account(&self, index: u64) -> Account {
        let mut rng = self.rng("account", index);
        let step = (ACCOUNT_SPAN_MS / self.accounts as i64).max(1);
        let created_ms = EPOCH_MS + index as i64 * step + rng.below(step as u64) as i64;
        // Account 0 is the local owner; every fifth account lives elsewhere.
        let domain =
            (index % 5 == 4).then(|| REMOTE_DOMAINS[(index / 5) as usize % REMOTE_DOMAINS.len()]);
        let id = snowflake(created_ms, rng.next_u64());
        let avatar = (index % 3 != 1).then(|| Object {
            key: format!(
                "{}accounts/avatars/{}/original/{}.png",
                cache_prefix(domain.is_none()),
                id_partition(id),
                rng.hex(8)
            ),
            // One empty file: copies must keep zero-byte objects too.
            size: if index == 2 {
                0
            } else {
                self.object_size(&mut rng, 1 << 10, 64 << 10)
            },
            content_type: "image/png",
        });
        Account {
            index,
            id,
            created_ms,
            username: format!("user{index}"),
            domain,
            avatar,
        }
    }

    /// The ordinal of a local account's user row (users ids start at 1).
    pub fn user_id(&self, account: &Account) -> Option<i64> {
        account
            .domain
            .is_none()
            .then(|| (account.index + 1 - (account.index + 1) / 5) as i64)
    }

    pub fn status(&self, index: u64) -> Status {
        let mut rng = self.rng("status", index);
        let step = (STATUS_SPAN_MS / self.statuses as i64).max(1);
        let created_ms =
            EPOCH_MS + ACCOUNT_SPAN_MS + index as i64 * step + rng.below(step as u64) as i64;
        let account = rng.below(self.accounts);
        let kind = match (self.raw_kind(index), index.checked_sub(1)) {
            (raw @ (Kind::Reblog(_) | Kind::Reply(_)), Some(_)) => {
                let target = index - 1 - rng.below(index.min(500));
                // Nobody replies to or boosts a boost: only originals are targets.
                if matches!(self.raw_kind(target), Kind::Reblog(_)) {
                    Kind::Original
                } else if matches!(raw, Kind::Reblog(_)) {
                    Kind::Reblog(target)
                } else {
                    Kind::Reply(target)
                }
            }
            _ => Kind::Original,
        };
        let media = if matches!(kind, Kind::Reblog(_)) || !rng.percent(3) {
            0
        } else {
            1 + rng.below(4)
        };
        Status {
            index,
            id: snowflake(created_ms, rng.next_u64()),
            created_ms,
            account,
            kind,
            media,
            media_tail: rng.next_u64(),
        }
    }

    /// The kind a status rolls before its target is looked at; deciding on
    /// it alone keeps `status` from recursing through chains of targets.
    fn raw_kind(&self, index: u64) -> Kind {
        match self.rng("status-kind", index).below(100) {
            0..10 => Kind::Reblog(0),
            10..30 => Kind::Reply(0),
            _ => Kind::Original,
        }
    }

    /// The attachments of a status, and now and then one uploaded but never
    /// attached (`status_id` NULL).
    pub fn media(&self, status: &Status) -> Vec<Media> {
        let local = self.account(status.account).domain.is_none();
        let unattached = usize::from(status.index % 97 == 13);
        (0..status.media as usize + unattached)
            .map(|position| {
                let mut rng = self.rng("media", status.index * 8 + position as u64);
                let id = snowflake(status.created_ms, status.media_tail + position as u64);
                let (kind, extension, content_type) = rng.pick(&[
                    (0, "jpeg", "image/jpeg"),
                    (0, "png", "image/png"),
                    (1, "mp4", "video/mp4"),
                    (2, "mp4", "video/mp4"),
                ]);
                let name = rng.hex(8);
                let directory = format!(
                    "{}media_attachments/files/{}",
                    cache_prefix(local),
                    id_partition(id)
                );
                // Thumbnails of videos are still images.
                let small_extension = if extension == "mp4" { "png" } else { extension };
                Media {
                    id,
                    attached: position < status.media as usize,
                    kind,
                    local,
                    file_name: format!("{name}.{extension}"),
                    original: Object {
                        key: format!("{directory}/original/{name}.{extension}"),
                        size: self.object_size(&mut rng, 2 << 10, 1 << 20),
                        content_type,
                    },
                    small: Object {
                        key: format!("{directory}/small/{name}.{small_extension}"),
                        size: self.object_size(&mut rng, 1 << 10, 32 << 10),
                        content_type: if extension == "mp4" {
                            "image/png"
                        } else {
                            content_type
                        },
                    },
                }
            })
            .collect()
    }

    fn object_size(&self, rng: &mut Rng, low: u64, high: u64) -> u64 {
        rng.log_uniform(low, high) * self.media_percent / 100
    }

    /// Every object of the fixture, computed lazily in a fixed order.
    pub fn objects(&self) -> impl Iterator<Item = Object> + '_ {
        let avatars = (0..self.accounts).filter_map(|index| self.account(index).avatar);
        let media = (0..self.statuses).flat_map(|index| {
            let status = self.status(index);
            self.media(&status)
                .into_iter()
                .flat_map(|media| [media.original, media.small])
        });
        avatars.chain(media)
    }
}

#[derive(Debug, Clone)]
pub struct Account {
    pub index: u64,
    pub id: i64,
    pub created_ms: i64,
    pub username: String,
    /// `None` for local accounts, as in Mastodon.
    pub domain: Option<&'static str>,
    pub avatar: Option<Object>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Original,
    Reply(u64),
    Reblog(u64),
}

#[derive(Debug, Clone)]
pub struct Status {
    pub index: u64,
    pub id: i64,
    pub created_ms: i64,
    pub account: u64,
    pub kind: Kind,
    pub media: u64,
    media_tail: u64,
}

#[derive(Debug, Clone)]
pub struct Media {
    pub id: i64,
    pub attached: bool,
    pub kind: i64,
    pub local: bool,
    pub file_name: String,
    pub original: Object,
    pub small: Object,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub key: String,
    pub size: u64,
    pub content_type: &'static str,
}

/// An id as `timestamp_id` makes it: milliseconds in the high bits, a 16-bit
/// tail below.
pub fn snowflake(created_ms: i64, tail: u64) -> i64 {
    (created_ms << 16) | (tail & 0xffff) as i64
}

/// Paperclip's `:id_partition`: the id padded to nine digits, cut in groups of
/// three (a trailing partial group is dropped, as Ruby's `scan` drops it).
pub fn id_partition(id: i64) -> String {
    let digits = format!("{id:09}");
    digits
        .as_bytes()
        .chunks_exact(3)
        .map(|group| std::str::from_utf8(group).expect("digits are ASCII"))
        .collect::<Vec<_>>()
        .join("/")
}

/// Remote accounts' files are a cache Mastodon can fetch again.
fn cache_prefix(local: bool) -> &'static str {
    if local { "" } else { "cache/" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_partition_matches_paperclip() {
        assert_eq!(id_partition(1), "000/000/001");
        assert_eq!(id_partition(1234567890), "123/456/789");
        assert_eq!(
            id_partition(109_876_543_210_987_654),
            "109/876/543/210/987/654"
        );
    }

    #[test]
    fn ids_are_unique_and_ordered_by_time() {
        let scale = Scale::new(3, 1, 100);
        let ids: Vec<i64> = (0..scale.statuses).map(|i| scale.status(i).id).collect();
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
        let accounts: Vec<i64> = (0..scale.accounts).map(|i| scale.account(i).id).collect();
        assert!(accounts.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn targets_are_earlier_originals() {
        let scale = Scale::new(5, 1, 100);
        for index in 0..scale.statuses {
            if let Kind::Reply(target) | Kind::Reblog(target) = scale.status(index).kind {
                assert!(target < index);
                assert!(!matches!(scale.status(target).kind, Kind::Reblog(_)));
            }
        }
    }

    #[test]
    fn remote_files_are_under_the_cache() {
        let scale = Scale::new(9, 1, 100);
        for index in 0..scale.accounts {
            let account = scale.account(index);
            if let Some(avatar) = account.avatar {
                assert_eq!(avatar.key.starts_with("cache/"), account.domain.is_some());
            }
        }
        assert!(
            scale
                .objects()
                .any(|object| object.key.starts_with("cache/media_attachments/"))
        );
        assert!(
            scale
                .objects()
                .any(|object| object.key.starts_with("media_attachments/files/"))
        );
    }
}
