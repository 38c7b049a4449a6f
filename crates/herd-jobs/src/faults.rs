//! Crash points, to prove that a process killed in the middle of an operation
//! loses nothing. Off unless `HERD_FAULT_CRASH` names a point, e.g.
//! `provision_instance/tenant_bucket/before-checkpoint`: the process then
//! aborts there, as abruptly as a `kill -9`.

/// Where in a step the process may be made to die.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// The step's effects happened but are not recorded: the rerun must be idempotent.
    BeforeCheckpoint,
    /// The step is recorded: the rerun must skip it.
    AfterCheckpoint,
}

#[derive(Debug, Clone, Default)]
pub struct Faults {
    crash_at: Option<String>,
}

impl Faults {
    pub fn from_env() -> Self {
        Faults {
            crash_at: std::env::var("HERD_FAULT_CRASH")
                .ok()
                .filter(|v| !v.is_empty()),
        }
    }

    pub fn crash_if_armed(&self, kind: &str, step: &str, point: Point) {
        let point_name = match point {
            Point::BeforeCheckpoint => "before-checkpoint",
            Point::AfterCheckpoint => "after-checkpoint",
        };
        if self.crash_at.as_deref() == Some(format!("{kind}/{step}/{point_name}").as_str()) {
            tracing::error!(kind, step, point = point_name, "injected crash");
            std::process::abort();
        }
    }
}
