//! Process limits a node holding many logs needs raised.

/// Raises this process's soft limit on open files (`RLIMIT_NOFILE`) to its hard limit and
/// returns the soft limit now in force (`u64::MAX` when unlimited). A log holds two files open
/// per segment (store and index), so a node holding many partitions needs more than the usual
/// soft limit of 1,024. The server calls it at start-up. A no-op returning `Ok(u64::MAX)` under
/// madsim (the simulated disk opens no files) and off Unix.
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    #[cfg(all(unix, not(madsim)))]
    {
        raise_unix()
    }
    #[cfg(any(not(unix), madsim))]
    {
        Ok(u64::MAX)
    }
}

#[cfg(all(unix, not(madsim)))]
#[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not everywhere.
fn raise_unix() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` through a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // macOS refuses a soft limit above OPEN_MAX (10,240), even when the hard limit is unlimited.
    #[cfg(target_os = "macos")]
    let wanted = limit.rlim_max.min(10_240);
    #[cfg(not(target_os = "macos"))]
    let wanted = limit.rlim_max;
    if limit.rlim_cur < wanted {
        let raised = libc::rlimit {
            rlim_cur: wanted,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads one `rlimit` through a valid pointer.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        limit.rlim_cur = wanted;
    }
    Ok(match limit.rlim_cur {
        libc::RLIM_INFINITY => u64::MAX,
        n => n as u64,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_soft_limit_reaches_the_hard_limit() {
        let soft = super::raise_open_file_limit().unwrap();
        assert!(soft >= 64, "{soft}");
        assert_eq!(super::raise_open_file_limit().unwrap(), soft, "idempotent");
    }
}
