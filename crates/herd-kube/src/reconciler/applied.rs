//! What this process last applied for each instance, so that a pass woken by
//! a child's status change can tell that there is nothing to write.
//!
//! Kept in memory rather than in the resource's status: a process that takes
//! over, after a restart or a change of lease holder, cannot know what
//! happened to the children while nobody watched them (edits by hand,
//! builders of another version of Herd), so it applies every instance once
//! anyway; a hash in the status would only add a write per spec change.

use std::collections::HashMap;
use std::hash::{BuildHasher, DefaultHasher, Hash, Hasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ResourceQuota;

use super::stores::{ChildStores, is_kind};
use crate::children::Child;

/// Everything is applied again this often, whatever the watches reported:
/// it repairs what the watches cannot tell from the cluster's own work, such
/// as labels edited by hand on a workload or a quota's spec. Edits of a spec
/// and of the kinds nothing else writes are repaired at once (see [`due`]),
/// so this is a safety net, and a rare one: a fleet of thousands resyncing
/// every few minutes would keep the API server busy with writes that change
/// nothing.
const RESYNC: Duration = Duration::from_secs(3600);
/// Spreads the resyncs of instances created together over this much more.
const RESYNC_JITTER: Duration = Duration::from_secs(600);
/// How long a child just written may be missing from its watch before it
/// counts as gone. Deletions arrive as events and need no wait; this covers
/// a watch that lost its place and listed again, which drops what was
/// deleted meanwhile without a word.
pub(crate) const WATCH_LAG: Duration = Duration::from_secs(30);

/// One child of an instance: every child lives in the instance's namespace
/// or is that namespace, so kind and name tell them apart.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ChildKey {
    pub group: String,
    pub kind: String,
    pub name: String,
}

impl ChildKey {
    pub(crate) fn of(child: &Child) -> ChildKey {
        ChildKey {
            group: child.resource.group.clone(),
            kind: child.resource.kind.clone(),
            name: child.name().to_owned(),
        }
    }
}

/// A child as the API server answered the write: the object a watch must
/// show before its status is worth reading, and the digest of what was
/// written, so a change of the desired set writes only the children it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Written {
    pub uid: String,
    pub generation: Option<i64>,
    pub resource_version: Option<String>,
    pub digest: u64,
}

/// One pass over an instance that succeeded.
#[derive(Debug)]
pub(crate) struct Applied {
    /// Of the desired set, see [`desired_hash`].
    pub hash: u64,
    pub at: Instant,
    pub resync_at: Instant,
    pub children: HashMap<ChildKey, Written>,
}

/// A digest of one child as the builders produced it, secrets included.
/// Never leaves the process, so the hasher need not be stable across versions.
pub(crate) fn child_digest(child: &Child) -> u64 {
    let mut hasher = DefaultHasher::new();
    child.resource.api_version.hash(&mut hasher);
    child.resource.kind.hash(&mut hasher);
    serde_json::to_vec(&child.object)
        .expect("a built child always serialises")
        .hash(&mut hasher);
    hasher.finish()
}

/// A digest of everything the builders produced, so any change to what
/// should be in the cluster is noticed.
pub(crate) fn desired_hash(children: &[Child]) -> u64 {
    let mut hasher = DefaultHasher::new();
    for child in children {
        child_digest(child).hash(&mut hasher);
    }
    hasher.finish()
}

/// The children a pass for `reason` writes: after a change of the desired
/// set only those that changed or are new, after a drift the drifted one,
/// otherwise every one.
pub(crate) fn to_write<'c>(
    reason: &Due,
    last: Option<&Applied>,
    children: &'c [Child],
) -> Vec<&'c Child> {
    match (reason, last) {
        (Due::Changed, Some(last)) => children
            .iter()
            .filter(|child| {
                last.children
                    .get(&ChildKey::of(child))
                    .is_none_or(|written| written.digest != child_digest(child))
            })
            .collect(),
        (Due::Drift { child: drifted, .. }, Some(_)) => children
            .iter()
            .filter(|child| ChildKey::of(child) == *drifted)
            .collect(),
        _ => children.iter().collect(),
    }
}

/// Why a pass writes children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Due {
    /// Nothing recorded: this process has not applied the instance yet, its
    /// last pass failed, or a child it wrote was deleted since.
    Unrecorded,
    /// The desired set changed: the spec, or the secrets. Only the children
    /// that changed are written.
    Changed,
    Resync,
    /// A child is gone from its watch, or someone else (an autoscaler, a
    /// person) changed its spec: that child alone is written again.
    Drift {
        child: ChildKey,
        what: String,
    },
}

impl Due {
    fn drift(child: &Child, what: &str) -> Due {
        Due::Drift {
            child: ChildKey::of(child),
            what: format!("{} {} {what}", child.resource.kind, child.name()),
        }
    }
}

/// Whether what `last` recorded still stands at `now`, given what the
/// watches show; `None` when nothing needs writing.
pub(crate) fn due(
    last: Option<&Applied>,
    hash: u64,
    now: Instant,
    children: &[Child],
    stores: &ChildStores,
) -> Option<Due> {
    let Some(last) = last else {
        return Some(Due::Unrecorded);
    };
    if last.hash != hash {
        return Some(Due::Changed);
    }
    if now >= last.resync_at {
        return Some(Due::Resync);
    }
    let settled = now.saturating_duration_since(last.at) >= WATCH_LAG;
    for child in children {
        let Some(written) = last.children.get(&ChildKey::of(child)) else {
            return Some(Due::Changed);
        };
        match stores.seen(child) {
            Some(seen) if seen.uid.as_deref() == Some(written.uid.as_str()) => {
                match (seen.generation, written.generation) {
                    // Generations only grow, and only with the spec: one past
                    // what this process wrote is an edit by someone else.
                    (Some(seen), Some(written)) if seen > written => {
                        return Some(Due::drift(child, "was changed"));
                    }
                    // Without a generation, any new version of a kind nothing
                    // else writes is an edit; once the watch has caught up
                    // with the write, it no longer shows an older one.
                    (None, _)
                        if settled
                            && only_written_by_herd(child)
                            && seen.resource_version != written.resource_version =>
                    {
                        return Some(Due::drift(child, "was changed"));
                    }
                    _ => {}
                }
            }
            _ if settled => return Some(Due::drift(child, "is missing")),
            // Written moments ago and not yet reported by its watch.
            _ => {}
        }
    }
    None
}

/// Whether every new version of `child` is an edit of what Herd wrote: not
/// so for a ResourceQuota, whose status follows every pod of the namespace.
fn only_written_by_herd(child: &Child) -> bool {
    !is_kind::<ResourceQuota>(&child.resource)
}

#[derive(Debug, Default)]
struct Entry {
    applied: Option<Arc<Applied>>,
    /// Bumped by every deletion of a child, so a pass that was writing while
    /// one happened does not record a set that no longer stands.
    deletions: u64,
}

/// The last full pass of every instance, keyed by instance id.
#[derive(Debug, Default)]
pub(crate) struct AppliedSets {
    instances: Mutex<HashMap<String, Entry>>,
    /// Seeded per process: two processes do not resync in step.
    jitter: RandomState,
}

/// Handed out when a full pass starts and checked when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket(u64);

impl AppliedSets {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.instances.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn get(&self, instance_id: &str) -> Option<Arc<Applied>> {
        self.lock().get(instance_id)?.applied.clone()
    }

    /// Starts a full pass; deletions from now on void what it records.
    pub(crate) fn begin(&self, instance_id: &str) -> Ticket {
        Ticket(
            self.lock()
                .entry(instance_id.to_owned())
                .or_default()
                .deletions,
        )
    }

    /// Records a full pass, unless a child was deleted since `ticket` was
    /// handed out: the next pass must then write again.
    pub(crate) fn record(&self, instance_id: &str, ticket: Ticket, applied: Arc<Applied>) {
        let mut instances = self.lock();
        let entry = instances.entry(instance_id.to_owned()).or_default();
        entry.applied = (entry.deletions == ticket.0).then_some(applied);
    }

    /// A watch saw a child of the instance go. Only a child this process
    /// wrote, or one deleted while a pass was writing, matters: objects the
    /// prune removed are no longer recorded.
    pub(crate) fn child_deleted(&self, instance_id: &str, key: &ChildKey, uid: Option<&str>) {
        let mut instances = self.lock();
        let Some(entry) = instances.get_mut(instance_id) else {
            return;
        };
        let recorded = entry.applied.as_ref().map(|applied| {
            applied
                .children
                .get(key)
                .is_some_and(|written| Some(written.uid.as_str()) == uid)
        });
        if recorded != Some(false) {
            entry.applied = None;
            entry.deletions += 1;
        }
    }

    /// The instance is gone: its entry with it.
    pub(crate) fn forget(&self, instance_id: &str) {
        self.lock().remove(instance_id);
    }

    /// When a pass completed at `now` is due again, at the latest.
    pub(crate) fn resync_at(&self, instance_id: &str, now: Instant) -> Instant {
        let spread = self.jitter.hash_one(instance_id) % RESYNC_JITTER.as_millis() as u64;
        now + RESYNC + Duration::from_millis(spread)
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kube::api::DynamicObject;

    use super::*;
    use crate::reconciler::stores::fake::FakeStores;

    fn config_map(name: &str, value: &str) -> Child {
        Child::from_typed(&ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("mi-i1".into()),
                ..ObjectMeta::default()
            },
            data: Some([("KEY".to_owned(), value.to_owned())].into()),
            ..ConfigMap::default()
        })
    }

    fn applied(children: &[Child]) -> Arc<Applied> {
        let now = Instant::now();
        Arc::new(Applied {
            hash: desired_hash(children),
            at: now,
            resync_at: now + RESYNC,
            children: children
                .iter()
                .map(|c| {
                    let written = Written {
                        uid: format!("uid-{}", c.name()),
                        generation: Some(1),
                        resource_version: Some("1".into()),
                        digest: child_digest(c),
                    };
                    (ChildKey::of(c), written)
                })
                .collect(),
        })
    }

    fn web() -> Child {
        Child::from_typed(&Deployment {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("mi-i1".into()),
                ..ObjectMeta::default()
            },
            ..Deployment::default()
        })
    }

    /// `child` as the API server would hold it.
    fn stored(child: &Child, uid: &str, generation: i64) -> DynamicObject {
        let mut object = child.object.clone();
        object.metadata.uid = Some(uid.into());
        object.metadata.generation = Some(generation);
        object
    }

    /// Two children written a second ago at generation 2, and watches that
    /// show them so.
    fn settled() -> (Vec<Child>, Applied, FakeStores) {
        let children = vec![config_map("config", "one"), web()];
        let now = Instant::now();
        let mut applied = Arc::into_inner(applied(&children)).unwrap();
        applied.at = now - Duration::from_secs(1);
        let mut fake = FakeStores::new();
        for child in &children {
            let written = applied.children.get_mut(&ChildKey::of(child)).unwrap();
            written.generation = Some(2);
            fake.put(&child.resource, stored(child, &written.uid, 2));
        }
        (children, applied, fake)
    }

    #[test]
    fn nothing_is_due_while_the_watches_show_what_was_written() {
        let (children, applied, fake) = settled();
        let hash = desired_hash(&children);
        let now = Instant::now();
        assert_eq!(
            due(Some(&applied), hash, now, &children, &fake.stores()),
            None
        );
        // A watch behind the last write is no reason to write again.
        let mut fake = fake;
        fake.put(&children[1].resource, stored(&children[1], "uid-web", 1));
        assert_eq!(
            due(Some(&applied), hash, now, &children, &fake.stores()),
            None
        );
    }

    #[test]
    fn no_record_a_new_desired_set_or_a_resync_writes_everything() {
        let (children, applied, fake) = settled();
        let stores = fake.stores();
        let hash = desired_hash(&children);
        let now = Instant::now();
        assert_eq!(
            due(None, hash, now, &children, &stores),
            Some(Due::Unrecorded)
        );
        assert_eq!(
            due(Some(&applied), hash + 1, now, &children, &stores),
            Some(Due::Changed)
        );
        assert_eq!(
            due(Some(&applied), hash, applied.resync_at, &children, &stores),
            Some(Due::Resync)
        );
    }

    #[test]
    fn a_child_gone_from_its_watch_is_drift_once_the_watch_could_have_shown_it() {
        let (children, applied, mut fake) = settled();
        let hash = desired_hash(&children);
        fake.remove(&children[1]);
        let stores = fake.stores();
        let just_written = applied.at;
        assert_eq!(
            due(Some(&applied), hash, just_written, &children, &stores),
            None
        );
        let later = applied.at + WATCH_LAG;
        let missing = Some(Due::drift(&children[1], "is missing"));
        assert_eq!(
            due(Some(&applied), hash, later, &children, &stores),
            missing
        );

        // Another object of the same name is not the one written.
        fake.put(
            &children[1].resource,
            stored(&children[1], "another-uid", 1),
        );
        assert_eq!(
            due(Some(&applied), hash, later, &children, &fake.stores()),
            missing
        );
    }

    /// A child without a generation, written at `resource_version` a second
    /// ago, and a watch showing it at `seen_version`.
    fn versioned(child: Child, seen_version: &str) -> (Vec<Child>, Applied, FakeStores) {
        let children = vec![child];
        let mut applied = Arc::into_inner(applied(&children)).unwrap();
        applied.at = Instant::now() - Duration::from_secs(1);
        let written = applied
            .children
            .get_mut(&ChildKey::of(&children[0]))
            .unwrap();
        written.generation = None;
        written.resource_version = Some("7".into());
        let mut object = children[0].object.clone();
        object.metadata.uid = Some(written.uid.clone());
        object.metadata.resource_version = Some(seen_version.into());
        let mut fake = FakeStores::new();
        fake.put(&children[0].resource, object);
        (children, applied, fake)
    }

    #[test]
    fn a_new_version_of_a_kind_only_herd_writes_is_drift_once_the_watch_caught_up() {
        let (children, applied, fake) = versioned(config_map("config", "one"), "7");
        let hash = desired_hash(&children);
        let later = applied.at + WATCH_LAG;
        assert_eq!(
            due(Some(&applied), hash, later, &children, &fake.stores()),
            None
        );
        let (children, applied, fake) = versioned(config_map("config", "one"), "9");
        let later = applied.at + WATCH_LAG;
        // Right after the write the watch may still show an older version.
        assert_eq!(
            due(Some(&applied), hash, applied.at, &children, &fake.stores()),
            None
        );
        assert_eq!(
            due(Some(&applied), hash, later, &children, &fake.stores()),
            Some(Due::drift(&children[0], "was changed"))
        );
    }

    #[test]
    fn a_quota_whose_usage_moved_is_not_drift() {
        let quota = Child::from_typed(&ResourceQuota {
            metadata: ObjectMeta {
                name: Some("quota".into()),
                namespace: Some("mi-i1".into()),
                ..ObjectMeta::default()
            },
            ..ResourceQuota::default()
        });
        let (children, applied, fake) = versioned(quota, "9");
        assert_eq!(
            due(
                Some(&applied),
                desired_hash(&children),
                applied.at + WATCH_LAG,
                &children,
                &fake.stores()
            ),
            None
        );
    }

    #[test]
    fn a_spec_changed_by_someone_else_is_drift_at_once() {
        let (children, applied, mut fake) = settled();
        fake.put(&children[1].resource, stored(&children[1], "uid-web", 3));
        assert_eq!(
            due(
                Some(&applied),
                desired_hash(&children),
                applied.at,
                &children,
                &fake.stores()
            ),
            Some(Due::drift(&children[1], "was changed"))
        );
    }

    #[test]
    fn the_hash_follows_every_field_and_nothing_else() {
        let a = [config_map("config", "one")];
        assert_eq!(
            desired_hash(&a),
            desired_hash(&[config_map("config", "one")])
        );
        assert_ne!(
            desired_hash(&a),
            desired_hash(&[config_map("config", "two")])
        );
        assert_ne!(
            desired_hash(&a),
            desired_hash(&[config_map("other", "one")])
        );
        assert_ne!(desired_hash(&a), desired_hash(&[]));
    }

    #[test]
    fn a_deleted_child_voids_the_record_and_a_pruned_one_does_not() {
        let sets = AppliedSets::default();
        let children = [config_map("config", "one")];
        let key = ChildKey::of(&children[0]);
        let ticket = sets.begin("i1");
        sets.record("i1", ticket, applied(&children));
        assert!(sets.get("i1").is_some());

        // An older object of the same name, or one pruned: not what was written.
        sets.child_deleted("i1", &key, Some("another-uid"));
        let other = ChildKey {
            name: "gone".into(),
            ..key.clone()
        };
        sets.child_deleted("i1", &other, Some("uid-gone"));
        assert!(sets.get("i1").is_some());

        sets.child_deleted("i1", &key, Some("uid-config"));
        assert!(sets.get("i1").is_none());
    }

    #[test]
    fn a_deletion_during_a_pass_keeps_it_from_being_recorded() {
        let sets = AppliedSets::default();
        let children = [config_map("config", "one")];
        let ticket = sets.begin("i1");
        sets.child_deleted("i1", &ChildKey::of(&children[0]), Some("uid-config"));
        sets.record("i1", ticket, applied(&children));
        assert!(sets.get("i1").is_none(), "the next pass writes again");

        let ticket = sets.begin("i1");
        sets.record("i1", ticket, applied(&children));
        assert!(sets.get("i1").is_some());
    }

    #[test]
    fn deletions_of_unknown_instances_leave_nothing_behind() {
        let sets = AppliedSets::default();
        let key = ChildKey::of(&config_map("config", "one"));
        sets.child_deleted("i1", &key, Some("uid-config"));
        assert!(sets.lock().is_empty());

        let ticket = sets.begin("i1");
        sets.record("i1", ticket, applied(&[config_map("config", "one")]));
        sets.forget("i1");
        assert!(sets.lock().is_empty());
    }

    #[test]
    fn resyncs_are_spread_but_bounded() {
        let sets = AppliedSets::default();
        let now = Instant::now();
        let due: Vec<Duration> = (0..50)
            .map(|i| sets.resync_at(&format!("i{i}"), now) - now)
            .collect();
        assert!(
            due.iter()
                .all(|d| *d >= RESYNC && *d < RESYNC + RESYNC_JITTER)
        );
        assert!(due.iter().any(|d| *d != due[0]), "{due:?}");
        assert_eq!(sets.resync_at("i1", now), sets.resync_at("i1", now));
    }

    #[test]
    fn a_change_writes_only_the_children_it_changed() {
        let (children, applied, _) = settled();
        let changed = vec![
            config_map("config", "two"),
            web(),
            config_map("extra", "new"),
        ];
        let names = |writes: Vec<&Child>| -> Vec<String> {
            writes.iter().map(|c| c.name().to_owned()).collect()
        };
        assert_eq!(
            names(to_write(&Due::Changed, Some(&applied), &changed)),
            ["config", "extra"]
        );
        assert_eq!(
            names(to_write(&Due::Changed, Some(&applied), &children)),
            Vec::<String>::new()
        );
        assert_eq!(
            names(to_write(
                &Due::drift(&web(), "was changed"),
                Some(&applied),
                &changed
            )),
            ["web"]
        );
        for reason in [Due::Unrecorded, Due::Resync] {
            assert_eq!(
                names(to_write(&reason, Some(&applied), &changed)),
                ["config", "web", "extra"],
                "{reason:?}"
            );
        }
    }
}
