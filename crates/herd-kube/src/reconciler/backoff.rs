//! Per-object exponential backoff: kube's Controller retries a failed object
//! only when told, so repeated failures of one instance would otherwise retry
//! at a fixed pace while others wait behind it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug)]
pub(crate) struct FailureBackoff {
    base: Duration,
    max: Duration,
    failures: Mutex<HashMap<String, u32>>,
}

impl FailureBackoff {
    pub(crate) fn new(base: Duration, max: Duration) -> FailureBackoff {
        FailureBackoff {
            base,
            max,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one more failure of `name` and returns how long to wait before
    /// the next try: `base`, doubling with each failure in a row, at most `max`.
    pub(crate) fn failed(&self, name: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let count = failures.entry(name.to_owned()).or_insert(0);
        *count = count.saturating_add(1);
        let factor = 2u32.saturating_pow(*count - 1);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// Forgets the failures of `name`: its next failure waits `base` again.
    pub(crate) fn succeeded(&self, name: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff() -> FailureBackoff {
        FailureBackoff::new(Duration::from_secs(1), Duration::from_secs(60))
    }

    #[test]
    fn doubles_with_each_failure_up_to_the_cap() {
        let backoff = backoff();
        let waits: Vec<u64> = (0..9).map(|_| backoff.failed("a").as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn never_overflows() {
        let backoff = backoff();
        for _ in 0..100 {
            backoff.failed("a");
        }
        assert_eq!(backoff.failed("a"), Duration::from_secs(60));
    }

    #[test]
    fn success_resets_only_that_object() {
        let backoff = backoff();
        for _ in 0..3 {
            backoff.failed("a");
            backoff.failed("b");
        }
        backoff.succeeded("a");
        assert_eq!(backoff.failed("a"), Duration::from_secs(1));
        assert_eq!(backoff.failed("b"), Duration::from_secs(8));
    }
}
