//! Upgrading a fleet in waves: a canary first, alone, then waves of a fixed
//! size, each started once the one before it has finished. After every wave
//! the failures so far decide whether to go on: past the bound the upgrade
//! pauses, for an operator to look before more instances are touched.

use thiserror::Error;

/// How the members of a fleet upgrade are split and when it stops by itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WavePolicy {
    /// Members upgraded first, in a wave of their own; 0 for none.
    pub canary: u32,
    /// Members per wave after the canary.
    pub wave_size: u32,
    /// The share of failed members among the finished ones the upgrade
    /// tolerates; passing it pauses the upgrade.
    pub max_failure_ratio: f64,
}

#[derive(Debug, Clone, PartialEq, Error)]
pub enum WavePolicyError {
    #[error("a wave holds at least one instance")]
    EmptyWave,
    #[error("the failure ratio is a share between 0 and 1, not {0}")]
    Ratio(f64),
}

impl WavePolicy {
    pub fn validate(&self) -> Result<(), WavePolicyError> {
        if self.wave_size == 0 {
            return Err(WavePolicyError::EmptyWave);
        }
        if !(0.0..=1.0).contains(&self.max_failure_ratio) {
            return Err(WavePolicyError::Ratio(self.max_failure_ratio));
        }
        Ok(())
    }

    /// The members in waves, in the order given: the canary first (fewer
    /// when there are fewer members), then waves of `wave_size`, the last
    /// one holding what is left.
    pub fn waves<T>(&self, members: Vec<T>) -> Vec<Vec<T>> {
        let mut remaining = members.into_iter().peekable();
        let mut waves = Vec::new();
        let canary: Vec<T> = remaining.by_ref().take(self.canary as usize).collect();
        if !canary.is_empty() {
            waves.push(canary);
        }
        let size = self.wave_size.max(1) as usize;
        while remaining.peek().is_some() {
            waves.push(remaining.by_ref().take(size).collect());
        }
        waves
    }

    /// What to do once a wave has finished, from the outcomes of all members so far.
    pub fn decide(&self, outcomes: &Outcomes) -> WaveDecision {
        if outcomes.failure_ratio() > self.max_failure_ratio {
            return WaveDecision::Pause {
                reason: format!(
                    "{} of {} upgraded instances failed ({:.0}%), more than the bound of {:.0}%",
                    outcomes.failed,
                    outcomes.finished(),
                    outcomes.failure_ratio() * 100.0,
                    self.max_failure_ratio * 100.0
                ),
            };
        }
        if outcomes.pending > 0 {
            WaveDecision::Continue
        } else {
            WaveDecision::Complete
        }
    }
}

/// Where the members of a fleet upgrade stand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcomes {
    /// Not started yet, or to be started again.
    pub pending: u32,
    pub succeeded: u32,
    pub failed: u32,
    /// Left out because their instance was no longer running on the version
    /// upgraded from when its wave came; they count neither way.
    pub skipped: u32,
}

impl Outcomes {
    /// Members whose upgrade ended, one way or the other.
    pub fn finished(&self) -> u32 {
        self.succeeded + self.failed
    }

    /// The share of failures among the finished members; 0 before any finished.
    pub fn failure_ratio(&self) -> f64 {
        match self.finished() {
            0 => 0.0,
            finished => f64::from(self.failed) / f64::from(finished),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaveDecision {
    /// Start the next wave.
    Continue,
    /// Stop starting upgrades until an operator resumes.
    Pause { reason: String },
    /// Every member is done and the failures stayed within the bound.
    Complete,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(canary: u32, wave_size: u32, max_failure_ratio: f64) -> WavePolicy {
        WavePolicy {
            canary,
            wave_size,
            max_failure_ratio,
        }
    }

    fn outcomes(pending: u32, succeeded: u32, failed: u32) -> Outcomes {
        Outcomes {
            pending,
            succeeded,
            failed,
            skipped: 0,
        }
    }

    #[test]
    fn the_canary_goes_alone_then_waves_of_the_size() {
        let waves = policy(1, 2, 0.25).waves((1..=6).collect());
        assert_eq!(waves, vec![vec![1], vec![2, 3], vec![4, 5], vec![6]]);
        let waves = policy(0, 3, 0.0).waves((1..=6).collect());
        assert_eq!(waves, vec![vec![1, 2, 3], vec![4, 5, 6]]);
        let waves = policy(5, 2, 0.0).waves(vec![1, 2]);
        assert_eq!(waves, vec![vec![1, 2]], "a canary larger than the fleet");
        assert!(policy(1, 2, 0.0).waves(Vec::<u8>::new()).is_empty());
    }

    #[test]
    fn a_policy_needs_a_wave_size_and_a_share() {
        assert_eq!(
            policy(1, 0, 0.1).validate(),
            Err(WavePolicyError::EmptyWave)
        );
        assert_eq!(
            policy(1, 1, 1.5).validate(),
            Err(WavePolicyError::Ratio(1.5))
        );
        assert!(policy(1, 1, f64::NAN).validate().is_err());
        assert_eq!(policy(0, 1, 0.0).validate(), Ok(()));
        assert_eq!(policy(0, 1, 1.0).validate(), Ok(()));
    }

    #[test]
    fn waves_go_on_while_failures_stay_within_the_bound() {
        let bounded = policy(1, 2, 0.25);
        assert_eq!(bounded.decide(&outcomes(5, 1, 0)), WaveDecision::Continue);
        assert_eq!(bounded.decide(&outcomes(1, 4, 1)), WaveDecision::Continue);
        assert_eq!(bounded.decide(&outcomes(0, 6, 0)), WaveDecision::Complete);
        assert_eq!(
            bounded.decide(&outcomes(0, 3, 1)),
            WaveDecision::Complete,
            "exactly at the bound is within it"
        );
    }

    #[test]
    fn passing_the_bound_pauses_with_the_reason() {
        let bounded = policy(1, 2, 0.25);
        let WaveDecision::Pause { reason } = bounded.decide(&outcomes(3, 1, 2)) else {
            panic!("two of three failed");
        };
        assert_eq!(
            reason,
            "2 of 3 upgraded instances failed (67%), more than the bound of 25%"
        );
        assert!(matches!(
            policy(1, 2, 0.0).decide(&outcomes(5, 0, 1)),
            WaveDecision::Pause { .. }
        ));
        assert!(
            matches!(
                bounded.decide(&outcomes(0, 1, 1)),
                WaveDecision::Pause { .. }
            ),
            "an upgrade whose last wave passes the bound pauses rather than completes"
        );
        assert_eq!(
            policy(1, 2, 1.0).decide(&outcomes(0, 0, 6)),
            WaveDecision::Complete
        );
    }

    #[test]
    fn skipped_members_count_neither_way() {
        let mostly_skipped = Outcomes {
            pending: 0,
            succeeded: 1,
            failed: 0,
            skipped: 5,
        };
        assert_eq!(mostly_skipped.failure_ratio(), 0.0);
        assert_eq!(Outcomes::default().failure_ratio(), 0.0);
        assert_eq!(
            policy(0, 1, 0.0).decide(&mostly_skipped),
            WaveDecision::Complete
        );
    }
}
