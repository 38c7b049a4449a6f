//! Facts about the machine and processes, from `/proc`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{Value, json};

fn proc_field(file: &str, field: &str) -> Option<String> {
    std::fs::read_to_string(file)
        .ok()?
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            (name.trim() == field).then(|| value.trim().to_owned())
        })
}

/// A `/proc` size field such as `123456 kB`, in MiB.
fn mib(field: Option<String>) -> Option<f64> {
    let kib: f64 = field?.split_whitespace().next()?.parse().ok()?;
    Some(crate::round(kib / 1024.0))
}

pub fn facts() -> Value {
    json!({
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu_model": proc_field("/proc/cpuinfo", "model name"),
        "memory_mib": mib(proc_field("/proc/meminfo", "MemTotal")),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_owned()),
    })
}

/// The most memory the process ever had resident (`VmHWM`), in MiB.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    mib(proc_field(&format!("/proc/{pid}/status"), "VmHWM"))
}

/// Linux reports the CPU times of `/proc/<pid>/stat` in ticks of USER_HZ,
/// which is 100 on every architecture the stack runs on.
const TICKS_PER_SECOND: f64 = 100.0;

/// User and system CPU of one process so far, in seconds, and its process
/// group.
fn process_cpu(stat: &str) -> Option<(u32, f64)> {
    // The command name may hold spaces and parentheses; the fields after it
    // start at the last `)`: state, ppid, pgrp, ... utime (12th), stime.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let pgrp = fields.get(2)?.parse().ok()?;
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((pgrp, (utime + stime) / TICKS_PER_SECOND))
}

/// CPU seconds the process has used so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    process_cpu(&stat).map(|(_, seconds)| seconds)
}

/// CPU seconds used so far by each daemon of the local stack, every process
/// of the daemon's process group counted: the stack starts each daemon in a
/// group of its own and keeps its pid in `$HERD_STATE_DIR/pids` (a second
/// cluster's under `$HERD_STATE_DIR/<cluster>/pids`).
#[derive(Debug, Clone, Default)]
pub struct StackCpu {
    by_daemon: BTreeMap<String, f64>,
}

impl StackCpu {
    pub fn now() -> anyhow::Result<StackCpu> {
        let state = std::env::var_os("HERD_STATE_DIR")
            .map(PathBuf::from)
            .context("HERD_STATE_DIR is not set: source the stack's env file")?;
        let mut daemons = HashMap::new();
        read_pids(&state.join("pids"), "", &mut daemons)?;
        for entry in std::fs::read_dir(&state)? {
            let entry = entry?;
            let pids = entry.path().join("pids");
            if pids.is_dir() {
                let prefix = format!("{}/", entry.file_name().to_string_lossy());
                read_pids(&pids, &prefix, &mut daemons)?;
            }
        }
        let mut by_daemon = BTreeMap::new();
        for entry in std::fs::read_dir("/proc")? {
            let path = entry?.path().join("stat");
            let Ok(stat) = std::fs::read_to_string(&path) else {
                continue;
            };
            if let Some((pgrp, seconds)) = process_cpu(&stat)
                && let Some(daemon) = daemons.get(&pgrp)
            {
                *by_daemon.entry(daemon.clone()).or_default() += seconds;
            }
        }
        Ok(StackCpu { by_daemon })
    }

    /// The CPU the stack used since `earlier`, by daemon, in total and per
    /// instance, and the least time that much work takes on this machine's
    /// cores.
    pub fn since(&self, earlier: &StackCpu, instances: usize) -> Value {
        let by_daemon: BTreeMap<&str, f64> = self
            .by_daemon
            .iter()
            .map(|(daemon, seconds)| {
                let before = earlier.by_daemon.get(daemon).copied().unwrap_or_default();
                (daemon.as_str(), crate::round(seconds - before))
            })
            .collect();
        let total: f64 = by_daemon.values().sum();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        json!({
            "seconds_by_daemon": by_daemon,
            "seconds": crate::round(total),
            "seconds_per_instance": crate::round(total / instances as f64),
            "least_wall_seconds_on_all_cpus": crate::round(total / cpus as f64),
        })
    }
}

/// Adds `prefix` + name for the pid in each `<name>.pid` file of `dir`.
fn read_pids(dir: &Path, prefix: &str, daemons: &mut HashMap<u32, String>) -> anyhow::Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let (Some(name), Some("pid")) = (
            path.file_stem().and_then(|s| s.to_str()),
            path.extension().and_then(|s| s.to_str()),
        ) else {
            continue;
        };
        if let Ok(pid) = std::fs::read_to_string(&path)?.trim().parse() {
            daemons.insert(pid, format!("{prefix}{name}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_command_name() {
        let stat = "4242 (herd-kube (x) y) S 1 4240 4240 0 -1 4194560 100 0 0 0 1234 567 0 0 20 0 9 0 1 2 3";
        assert_eq!(process_cpu(stat), Some((4240, 18.01)));
    }
}
