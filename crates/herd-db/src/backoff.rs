use std::time::Duration;

/// How long a failed job waits before its next attempt: exponential in the
/// attempt number, capped, with jitter so that jobs failing together (an
/// outage of a shared dependency) do not retry together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling after the first failed attempt.
    pub base: Duration,
    /// No wait is ever longer than this.
    pub cap: Duration,
}

impl Backoff {
    /// The longest wait after `attempt` failed attempts (counting from 1):
    /// `base * 2^(attempt - 1)`, at most `cap`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1);
        let factor = 2u32.checked_pow(doublings).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The wait after `attempt` failed attempts, between half the ceiling and
    /// the ceiling. Half stays fixed so a retry never comes at once; the other
    /// half is drawn from `seed` and `attempt`, so the same job and attempt
    /// always wait the same (reproducible in tests and logs) while different
    /// seeds spread out.
    pub fn delay(&self, attempt: u32, seed: u64) -> Duration {
        let ceiling = self.ceiling(attempt);
        let half = ceiling / 2;
        half + (ceiling - half).mul_f64(unit_interval(seed, attempt))
    }
}

/// A number in [0, 1) that looks random but is a pure function of its inputs
/// (SplitMix64's finaliser over the seed and the attempt).
fn unit_interval(seed: u64, attempt: u32) -> f64 {
    let mut z = seed
        .wrapping_add(u64::from(attempt).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    // The top 53 bits fill an f64 mantissa exactly, so the result stays below 1.
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKOFF: Backoff = Backoff {
        base: Duration::from_secs(10),
        cap: Duration::from_secs(600),
    };

    #[test]
    fn ceiling_doubles_per_attempt_up_to_the_cap() {
        let ceilings: Vec<u64> = (1..=8).map(|a| BACKOFF.ceiling(a).as_secs()).collect();
        assert_eq!(ceilings, [10, 20, 40, 80, 160, 320, 600, 600]);
    }

    #[test]
    fn attempt_zero_is_treated_as_the_first() {
        assert_eq!(BACKOFF.ceiling(0), BACKOFF.base);
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        assert_eq!(BACKOFF.ceiling(u32::MAX), BACKOFF.cap);
        assert!(BACKOFF.delay(u32::MAX, u64::MAX) <= BACKOFF.cap);
        let unbounded = Backoff {
            base: Duration::MAX,
            cap: Duration::MAX,
        };
        assert_eq!(unbounded.ceiling(40), Duration::MAX);
    }

    #[test]
    fn delay_stays_between_half_the_ceiling_and_the_ceiling() {
        for seed in 0..500u64 {
            for attempt in 1..=10 {
                let delay = BACKOFF.delay(attempt, seed.wrapping_mul(0x2545_F491_4F6C_DD1D));
                let ceiling = BACKOFF.ceiling(attempt);
                assert!(
                    delay >= ceiling / 2 && delay <= ceiling,
                    "{delay:?} outside [{:?}, {ceiling:?}]",
                    ceiling / 2
                );
            }
        }
    }

    #[test]
    fn delay_is_deterministic_given_the_seed() {
        for attempt in 1..=10 {
            assert_eq!(BACKOFF.delay(attempt, 42), BACKOFF.delay(attempt, 42));
        }
    }

    #[test]
    fn different_seeds_spread_the_retries() {
        let delays: std::collections::BTreeSet<Duration> =
            (0..100).map(|seed| BACKOFF.delay(3, seed)).collect();
        assert!(
            delays.len() > 90,
            "only {} distinct delays of 100",
            delays.len()
        );
        let (low, high) = (delays.first().unwrap(), delays.last().unwrap());
        let ceiling = BACKOFF.ceiling(3);
        // The draws cover most of the jitter window rather than clustering.
        assert!(*low < ceiling / 2 + ceiling / 8 && *high > ceiling - ceiling / 8);
    }

    #[test]
    fn unit_interval_is_in_range() {
        for seed in [0, 1, u64::MAX, 0x8000_0000_0000_0000] {
            for attempt in [0, 1, u32::MAX] {
                let unit = unit_interval(seed, attempt);
                assert!((0.0..1.0).contains(&unit), "{unit}");
            }
        }
    }
}
