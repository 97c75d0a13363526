//! Benchmarks behind `loghouse bench`: they print tables, they assert nothing.

pub mod cluster;
pub mod embedded;
pub mod grpc;
pub mod idle;
pub mod local_cluster;
pub mod log;

/// Peak resident memory (VmHWM) of a process, from /proc.
pub fn peak_rss_of(pid: u32) -> Option<String> {
    read_vm_hwm(&format!("/proc/{pid}/status"))
}

pub fn peak_rss_of_self() -> Option<String> {
    read_vm_hwm("/proc/self/status")
}

/// CPU time (user and system, all threads) a process has used so far, in seconds; `None` for
/// this process. From /proc/PID/stat, whose tick is USER_HZ, 100 on Linux.
pub fn cpu_seconds_of(pid: Option<u32>) -> Option<f64> {
    const TICKS_PER_SECOND: f64 = 100.0;
    let path = pid.map_or_else(|| "/proc/self/stat".into(), |p| format!("/proc/{p}/stat"));
    let stat = std::fs::read_to_string(path).ok()?;
    // The fields after the command name (which may hold spaces) start with the state, field 3;
    // utime and stime are fields 14 and 15.
    let mut fields = stat
        .get(stat.rfind(')')? + 2..)?
        .split_whitespace()
        .skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some((user + system) as f64 / TICKS_PER_SECOND)
}

fn read_vm_hwm(path: &str) -> Option<String> {
    let status = std::fs::read_to_string(path).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(format!("{:.1} MiB", kib as f64 / 1024.0))
}
