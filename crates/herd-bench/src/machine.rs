//! Facts about the machine and processes, from `/proc`.

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
