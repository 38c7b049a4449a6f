//! Surge autoscaling of Sidekiq groups on queue latency: how long the oldest
//! job of a queue has waited. Latency, not queue length, because a thousand
//! quick jobs are no surge and ten slow ones can be.
//!
//! The decision has hysteresis so it never flaps: a group grows when its
//! latency is above an upper threshold, at most once per cooldown; it shrinks
//! one replica at a time, and only after its latency stayed below a lower
//! threshold for a whole window since it was last calm and last changed;
//! between the thresholds it holds. Replicas always stay within the group's
//! bounds, and the group that consumes `scheduler` is never autoscaled.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::plan::SidekiqGroup;

/// Thresholds and windows of the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoscalePolicy {
    /// Latency above which a group grows.
    pub scale_up_latency: Duration,
    /// Latency below which a group counts as calm and may shrink.
    pub scale_down_latency: Duration,
    /// The least time between a change and the next growth, so new
    /// replicas start and take work before their effect is judged.
    pub scale_up_cooldown: Duration,
    /// How long a group must stay calm, and unchanged, before it loses a replica.
    pub scale_down_window: Duration,
}

impl Default for AutoscalePolicy {
    fn default() -> Self {
        AutoscalePolicy {
            scale_up_latency: Duration::from_secs(30),
            scale_down_latency: Duration::from_secs(5),
            scale_up_cooldown: Duration::from_secs(60),
            scale_down_window: Duration::from_secs(300),
        }
    }
}

/// Whether the autoscaler owns the group's replica count: a group of fixed
/// size has its replicas set by the reconciler, and two `scheduler`
/// processes would run every scheduled job twice.
pub fn is_autoscaled(group: &SidekiqGroup) -> bool {
    !group.holds_scheduler() && group.max_replicas > group.min_replicas
}

/// What is known of a group at one look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// The replicas its Deployment asks for now.
    pub replicas: u32,
    /// The highest latency among its queues; `None` when it could not be
    /// read, which corrects the bounds but neither grows nor shrinks.
    pub latency: Option<Duration>,
    /// When the autoscaler last changed its replicas, if it ever did.
    pub last_change: Option<SystemTime>,
    /// Since when its latency has been below the lower threshold, as the
    /// previous decision answered; `None` when it was not calm.
    pub calm_since: Option<SystemTime>,
}

/// Why the replicas change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleReason {
    /// Outside the group's bounds, after the plan or the scaling changed or
    /// when the instance resumed: corrected at once.
    OutOfBounds,
    /// The oldest job waited longer than the upper threshold.
    Surge,
    /// The latency stayed below the lower threshold for the whole window.
    Calm,
}

impl ScaleReason {
    /// The stable name, as recorded in events and the audit trail.
    pub fn name(self) -> &'static str {
        match self {
            ScaleReason::OutOfBounds => "out_of_bounds",
            ScaleReason::Surge => "surge",
            ScaleReason::Calm => "calm",
        }
    }
}

/// The answer for one group at one look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The replicas to set, when they change.
    pub scale: Option<(u32, ScaleReason)>,
    /// To pass as [`Observation::calm_since`] to the next decision.
    pub calm_since: Option<SystemTime>,
}

impl Decision {
    fn hold(calm_since: Option<SystemTime>) -> Decision {
        Decision {
            scale: None,
            calm_since,
        }
    }
}

/// Decides the replicas of `group` at `now`. A surge doubles the replicas
/// (at least one more), so a small group catches up in a few cooldowns.
pub fn decide(
    policy: &AutoscalePolicy,
    group: &SidekiqGroup,
    observed: &Observation,
    now: SystemTime,
) -> Decision {
    if !is_autoscaled(group) {
        return Decision::hold(None);
    }
    let (min, max) = (group.min_replicas, group.max_replicas);
    let calm_since = observed
        .latency
        .is_some_and(|latency| latency < policy.scale_down_latency)
        .then(|| observed.calm_since.unwrap_or(now));
    let change = |to: u32, reason| Decision {
        scale: Some((to, reason)),
        calm_since,
    };
    if observed.replicas < min || observed.replicas > max {
        return change(observed.replicas.clamp(min, max), ScaleReason::OutOfBounds);
    }
    let elapsed_since = |moment: SystemTime| now.duration_since(moment).unwrap_or_default();
    let cooled_down = observed
        .last_change
        .is_none_or(|changed| elapsed_since(changed) >= policy.scale_up_cooldown);
    if observed
        .latency
        .is_some_and(|latency| latency > policy.scale_up_latency)
    {
        if observed.replicas < max && cooled_down {
            let doubled = observed
                .replicas
                .saturating_mul(2)
                .max(observed.replicas + 1);
            return change(doubled.min(max), ScaleReason::Surge);
        }
        return Decision::hold(calm_since);
    }
    if let Some(calm) = calm_since {
        let quiet_from = observed
            .last_change
            .map_or(calm, |changed| changed.max(calm));
        if observed.replicas > min && elapsed_since(quiet_from) >= policy.scale_down_window {
            return change(observed.replicas - 1, ScaleReason::Calm);
        }
    }
    Decision::hold(calm_since)
}

/// When the job Sidekiq serialised as `job` was enqueued. Sidekiq 7 writes
/// `enqueued_at` as float epoch seconds, Sidekiq 8 as integer epoch
/// milliseconds; Sidekiq itself tells them apart by the number's type.
pub fn enqueued_at(job: &str) -> Option<SystemTime> {
    let job: Value = serde_json::from_str(job).ok()?;
    let value = job.get("enqueued_at")?;
    let since_epoch = if let Some(millis) = value.as_u64() {
        Duration::from_millis(millis)
    } else {
        Duration::try_from_secs_f64(value.as_f64()?).ok()?
    };
    SystemTime::UNIX_EPOCH.checked_add(since_epoch)
}

/// How long the oldest job of a queue has waited at `now`, from the job at
/// the queue's tail (Sidekiq pushes to the head): zero for an empty queue or
/// a job without a readable time, as Sidekiq's own `Queue#latency` answers.
pub fn queue_latency(oldest_job: Option<&str>, now: SystemTime) -> Duration {
    oldest_job
        .and_then(enqueued_at)
        .and_then(|enqueued| now.duration_since(enqueued).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::starter_plans;

    const T0: Duration = Duration::from_secs(1_800_000_000);

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + T0 + Duration::from_secs(seconds)
    }

    fn secs(seconds: u64) -> Duration {
        Duration::from_secs(seconds)
    }

    fn group(min: u32, max: u32) -> SidekiqGroup {
        let mut group = starter_plans().remove(0).sidekiq.remove(0);
        assert!(!group.holds_scheduler());
        group.min_replicas = min;
        group.max_replicas = max;
        group
    }

    fn scheduler() -> SidekiqGroup {
        starter_plans()
            .remove(0)
            .sidekiq
            .into_iter()
            .find(SidekiqGroup::holds_scheduler)
            .unwrap()
    }

    fn observe(replicas: u32, latency: u64) -> Observation {
        Observation {
            replicas,
            latency: Some(secs(latency)),
            last_change: None,
            calm_since: None,
        }
    }

    /// Runs the decision every 15 s over `latencies`, applying what it
    /// answers, and returns the replicas after each look.
    fn run(group: &SidekiqGroup, start: u32, latencies: &[u64]) -> Vec<u32> {
        let policy = AutoscalePolicy::default();
        let mut observed = observe(start, 0);
        let mut seen = Vec::new();
        for (look, latency) in latencies.iter().enumerate() {
            let now = at(15 * look as u64);
            observed.latency = Some(secs(*latency));
            let decision = decide(&policy, group, &observed, now);
            observed.calm_since = decision.calm_since;
            if let Some((to, _)) = decision.scale {
                observed.replicas = to;
                observed.last_change = Some(now);
            }
            seen.push(observed.replicas);
        }
        seen
    }

    #[test]
    fn a_surge_grows_the_group_up_to_its_maximum() {
        let decision = decide(
            &AutoscalePolicy::default(),
            &group(1, 4),
            &observe(1, 45),
            at(0),
        );
        assert_eq!(decision.scale, Some((2, ScaleReason::Surge)));
        assert_eq!(run(&group(1, 6), 1, &[120; 20]).last(), Some(&6));
        let grown = run(&group(1, 6), 1, &[120; 20]);
        assert!(grown.iter().all(|&replicas| replicas <= 6), "{grown:?}");
        assert_eq!(
            decide(
                &AutoscalePolicy::default(),
                &group(1, 4),
                &observe(4, 600),
                at(0)
            )
            .scale,
            None,
            "never beyond the maximum"
        );
    }

    #[test]
    fn growth_waits_for_the_cooldown() {
        let policy = AutoscalePolicy::default();
        let mut observed = observe(2, 60);
        observed.last_change = Some(at(0));
        assert_eq!(decide(&policy, &group(1, 8), &observed, at(59)).scale, None);
        assert_eq!(
            decide(&policy, &group(1, 8), &observed, at(60)).scale,
            Some((4, ScaleReason::Surge))
        );
    }

    #[test]
    fn calm_shrinks_one_step_per_window_down_to_the_minimum() {
        let policy = AutoscalePolicy::default();
        let mut observed = observe(4, 0);
        observed.last_change = Some(at(0));
        let first = decide(&policy, &group(2, 4), &observed, at(10));
        assert_eq!(first.scale, None);
        assert_eq!(first.calm_since, Some(at(10)));
        observed.calm_since = first.calm_since;
        assert_eq!(
            decide(&policy, &group(2, 4), &observed, at(309)).scale,
            None
        );
        assert_eq!(
            decide(&policy, &group(2, 4), &observed, at(310)).scale,
            Some((3, ScaleReason::Calm))
        );

        let replicas = run(&group(2, 4), 4, &[0; 100]);
        assert_eq!(replicas.last(), Some(&2), "down to the minimum, not below");
        let steps: Vec<_> = replicas.windows(2).filter(|w| w[0] != w[1]).collect();
        assert!(steps.iter().all(|w| w[0] == w[1] + 1), "{replicas:?}");
    }

    #[test]
    fn a_window_starts_again_when_the_calm_is_broken() {
        let policy = AutoscalePolicy::default();
        let g = group(1, 4);
        let mut observed = observe(3, 1);
        observed.calm_since = Some(at(0));
        observed.latency = Some(secs(10));
        let broken = decide(&policy, &g, &observed, at(200));
        assert_eq!(broken, Decision::hold(None), "between the thresholds: hold");
        observed.calm_since = broken.calm_since;
        observed.latency = Some(secs(1));
        let again = decide(&policy, &g, &observed, at(215));
        assert_eq!(again.calm_since, Some(at(215)));
        observed.calm_since = again.calm_since;
        assert_eq!(decide(&policy, &g, &observed, at(400)).scale, None);
        assert_eq!(
            decide(&policy, &g, &observed, at(515)).scale,
            Some((2, ScaleReason::Calm))
        );
    }

    #[test]
    fn oscillating_latency_does_not_flap() {
        // Latency swinging across both thresholds every look, for an hour:
        // growth is spaced by the cooldown and no calm window ever completes.
        let latencies: Vec<u64> = (0..240).map(|i| if i % 2 == 0 { 40 } else { 0 }).collect();
        let replicas = run(&group(1, 8), 1, &latencies);
        let changes = replicas.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(
            replicas.windows(2).all(|w| w[1] >= w[0]),
            "never shrinks while surges recur: {replicas:?}"
        );
        assert!(changes <= 3, "{changes} changes: {replicas:?}");

        // Latency hovering between the thresholds holds whatever the group has.
        assert_eq!(
            run(&group(1, 8), 3, &[6, 29, 12, 25, 7, 20].repeat(40)),
            [3; 240]
        );
    }

    #[test]
    fn out_of_bounds_is_corrected_at_once_whatever_the_latency() {
        let policy = AutoscalePolicy::default();
        let mut observed = observe(1, 10);
        observed.last_change = Some(at(0));
        assert_eq!(
            decide(&policy, &group(3, 6), &observed, at(1)).scale,
            Some((3, ScaleReason::OutOfBounds))
        );
        observed.replicas = 9;
        observed.latency = Some(secs(500));
        assert_eq!(
            decide(&policy, &group(3, 6), &observed, at(1)).scale,
            Some((6, ScaleReason::OutOfBounds))
        );
    }

    #[test]
    fn an_unknown_latency_only_corrects_the_bounds() {
        let policy = AutoscalePolicy::default();
        let g = group(2, 6);
        let mut observed = observe(4, 0);
        observed.latency = None;
        observed.calm_since = Some(at(0));
        assert_eq!(
            decide(&policy, &g, &observed, at(900)),
            Decision::hold(None)
        );
        observed.replicas = 1;
        assert_eq!(
            decide(&policy, &g, &observed, at(900)).scale,
            Some((2, ScaleReason::OutOfBounds))
        );
    }

    #[test]
    fn the_scheduler_and_fixed_groups_are_never_scaled() {
        let policy = AutoscalePolicy::default();
        assert!(!is_autoscaled(&scheduler()));
        for replicas in [0, 1, 2] {
            assert_eq!(
                decide(&policy, &scheduler(), &observe(replicas, 900), at(0)).scale,
                None
            );
        }
        assert!(!is_autoscaled(&group(2, 2)));
        assert_eq!(
            decide(&policy, &group(2, 2), &observe(1, 900), at(0)).scale,
            None
        );
        assert!(is_autoscaled(&group(1, 2)));
    }

    #[test]
    fn enqueued_at_of_sidekiq_7_and_8() {
        let seconds = r#"{"class":"ActivityPub::DeliveryWorker","enqueued_at":1800000000.25}"#;
        assert_eq!(
            enqueued_at(seconds),
            Some(SystemTime::UNIX_EPOCH + T0 + Duration::from_millis(250))
        );
        let millis = r#"{"class":"ActivityPub::DeliveryWorker","enqueued_at":1800000000250}"#;
        assert_eq!(enqueued_at(millis), enqueued_at(seconds));
        assert_eq!(enqueued_at(r#"{"class":"X"}"#), None);
        assert_eq!(enqueued_at("not json"), None);
        assert_eq!(enqueued_at(r#"{"enqueued_at":-1.0}"#), None);
    }

    #[test]
    fn latency_of_a_queue() {
        let job = r#"{"enqueued_at":1800000000.0}"#;
        assert_eq!(queue_latency(Some(job), at(42)), secs(42));
        assert_eq!(queue_latency(None, at(42)), Duration::ZERO);
        // A clock behind the producer's is no latency, not a panic.
        assert_eq!(queue_latency(Some(job), at(0) - secs(5)), Duration::ZERO);
    }
}
