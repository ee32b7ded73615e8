//! Probes of this process and machine in `/proc`.

/// Total memory of the machine, in bytes (0 if unknown).
pub fn total_memory() -> u64 {
    proc_kib("/proc/meminfo", "MemTotal:") * 1024
}

/// A `Field:  N kB` line of a /proc file, in KiB (0 if unknown).
pub(crate) fn proc_kib(path: &str, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// This process's private resident memory (`RssAnon`: heap, stacks; not shared memory
/// or mapped files), in bytes (0 if unknown).
pub fn private_heap_bytes() -> u64 {
    proc_kib("/proc/self/status", "RssAnon:") * 1024
}

/// This process's resident memory, in bytes (0 if unknown).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}
