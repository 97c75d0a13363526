//! Benchmarks behind `loghouse bench`: they print tables, they assert nothing.

pub mod cluster;
pub mod embedded;
pub mod grpc;
pub mod local_cluster;
pub mod log;

/// Peak resident memory (VmHWM) of a process, from /proc.
pub fn peak_rss_of(pid: u32) -> Option<String> {
    read_vm_hwm(&format!("/proc/{pid}/status"))
}

pub fn peak_rss_of_self() -> Option<String> {
    read_vm_hwm("/proc/self/status")
}

fn read_vm_hwm(path: &str) -> Option<String> {
    let status = std::fs::read_to_string(path).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(format!("{:.1} MiB", kib as f64 / 1024.0))
}
