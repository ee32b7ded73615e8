//! Probes of this process and machine in `/proc`.

/// Total memory of the machine, in bytes (0 if unknown).
pub fn total_memory() -> u64 {
    proc_kib("/proc/meminfo", "MemTotal:") * 1024
}

/// Memory this process may use, in bytes: the machine's, or its control group's limit
/// (a container's, a Slurm job's) when that is lower. What `auto` memory limits share
/// out, so that a containerized worker spills before the OOM killer comes.
pub fn available_memory() -> u64 {
    let total = total_memory();
    let read = |p: &str| std::fs::read_to_string(p).ok();
    match (read("/proc/self/cgroup"), read("/proc/self/mountinfo")) {
        (Some(cgroup), Some(mountinfo)) => match cgroup_memory_limit(&cgroup, &mountinfo, read) {
            Some(limit) if total == 0 || limit < total => limit,
            _ => total,
        },
        _ => total,
    }
}

/// The lowest memory limit of this process's control group and its ancestors, from
/// `/proc/self/cgroup`, `/proc/self/mountinfo` and the files `read` returns: cgroup v2's
/// `memory.max` or v1's `memory.limit_in_bytes`. `None`: no limit (or none found).
pub fn cgroup_memory_limit(
    cgroup: &str,
    mountinfo: &str,
    read: impl Fn(&str) -> Option<String>,
) -> Option<u64> {
    // Where each hierarchy is mounted, and which of its cgroups is that mount's root.
    let mut v1: Option<(String, String)> = None;
    let mut v2: Option<(String, String)> = None;
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let f: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if f.len() < 5 || r.len() < 3 {
            continue;
        }
        let (root, point) = (f[3].to_string(), unescape_mount(f[4]));
        match r[0] {
            "cgroup2" if v2.is_none() => v2 = Some((root, point)),
            "cgroup" if v1.is_none() && r[2].split(',').any(|o| o == "memory") => {
                v1 = Some((root, point))
            }
            _ => {}
        }
    }
    let mut lowest: Option<u64> = None;
    for line in cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (mount, file) = if controllers.is_empty() {
            (v2.as_ref(), "memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            (v1.as_ref(), "memory.limit_in_bytes")
        } else {
            continue;
        };
        let Some((root, point)) = mount else {
            continue;
        };
        // The cgroup's path below the mount's root (a container sees its own cgroup as
        // `/`, or the host's path with the mount rooted at it).
        let below = path
            .strip_prefix(root.as_str())
            .unwrap_or(path)
            .trim_matches('/');
        let mut dir = below.to_string();
        loop {
            let at = if dir.is_empty() {
                format!("{point}/{file}")
            } else {
                format!("{point}/{dir}/{file}")
            };
            // "max" (v2) or a huge number (v1's unlimited) is no limit.
            if let Some(v) = read(&at).and_then(|t| t.trim().parse::<u64>().ok()) {
                if v < 1 << 60 {
                    lowest = Some(lowest.map_or(v, |l| l.min(v)));
                }
            }
            match dir.rfind('/') {
                Some(i) => dir.truncate(i),
                None if !dir.is_empty() => dir.clear(),
                None => break,
            }
        }
    }
    lowest
}

/// A mount point as mountinfo writes it (`\040` for a space, and so on).
fn unescape_mount(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 4);
        match code.and_then(|c| u8::from_str_radix(c, 8).ok()) {
            Some(b) => {
                out.push(b as char);
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn files(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |p| m.get(p).cloned()
    }

    const V1_MOUNTS: &str = "\
35 25 0:30 / /sys/fs/cgroup/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu
36 25 0:31 / /sys/fs/cgroup/memory rw,relatime shared:10 - cgroup cgroup rw,memory
37 25 0:32 / /sys/fs/cgroup/unified rw,relatime shared:11 - cgroup2 cgroup2 rw
";

    #[test]
    fn a_v1_limit_of_the_cgroup_or_an_ancestor_counts_and_unlimited_does_not() {
        let cgroup = "4:memory:/jobs/job7\n1:cpu:/\n0::/\n";
        let read = files(&[
            (
                "/sys/fs/cgroup/memory/jobs/job7/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
            (
                "/sys/fs/cgroup/memory/jobs/memory.limit_in_bytes",
                "2147483648\n",
            ),
            (
                "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
        ]);
        assert_eq!(cgroup_memory_limit(cgroup, V1_MOUNTS, read), Some(2 << 30));

        let read = files(&[(
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "9223372036854771712\n",
        )]);
        assert_eq!(cgroup_memory_limit(cgroup, V1_MOUNTS, read), None);
    }

    #[test]
    fn a_v2_memory_max_counts_and_max_is_no_limit() {
        let mounts = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let cgroup = "0::/kubepods/pod1/c1\n";
        let read = files(&[
            ("/sys/fs/cgroup/kubepods/pod1/c1/memory.max", "max\n"),
            ("/sys/fs/cgroup/kubepods/pod1/memory.max", "1073741824\n"),
            ("/sys/fs/cgroup/kubepods/memory.max", "4294967296\n"),
        ]);
        assert_eq!(cgroup_memory_limit(cgroup, mounts, read), Some(1 << 30));
        let read = files(&[("/sys/fs/cgroup/kubepods/pod1/c1/memory.max", "max\n")]);
        assert_eq!(cgroup_memory_limit(cgroup, mounts, read), None);
    }

    #[test]
    fn a_container_sees_its_cgroup_at_the_mounts_root() {
        // The mount is rooted at the container's cgroup; /proc/self/cgroup names it
        // by its host path.
        let mounts = "36 25 0:31 /docker/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n";
        let cgroup = "4:memory:/docker/abc\n";
        let read = files(&[("/sys/fs/cgroup/memory/memory.limit_in_bytes", "536870912")]);
        assert_eq!(cgroup_memory_limit(cgroup, mounts, read), Some(512 << 20));
    }

    #[test]
    fn mount_points_with_escapes_are_read_back() {
        assert_eq!(unescape_mount("/a\\040b/c"), "/a b/c");
        assert_eq!(unescape_mount("/plain"), "/plain");
        assert_eq!(unescape_mount("/odd\\x"), "/odd\\x");
    }

    #[test]
    fn available_memory_is_at_most_the_machines() {
        let total = total_memory();
        assert!(total > 0);
        assert!(available_memory() <= total);
    }
}
