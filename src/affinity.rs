//! CPUs for worker processes: each GPU's worker runs on the CPUs close to its GPU, among
//! those its launcher may use (so that a launcher started under `taskset` or in a cpuset
//! keeps its workers inside it, and `sched_setaffinity` is never asked for CPUs outside
//! the cpuset, which it refuses).

use rustix::thread::CpuSet;

/// The CPUs this process may run on, if known.
pub fn allowed() -> Option<Vec<usize>> {
    rustix::thread::sched_getaffinity(None)
        .ok()
        .map(|set| (0..CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect())
}

/// The CPUs near a GPU that this process may use (`allowed`, if known) and that a CPU set
/// can hold. Empty when none is left: the worker then runs wherever its launcher may,
/// rather than not at all.
pub fn near(near_gpu: &[usize], allowed: Option<&[usize]>) -> Vec<usize> {
    near_gpu
        .iter()
        .copied()
        .filter(|c| *c < CpuSet::MAX_CPU)
        .filter(|c| allowed.is_none_or(|a| a.contains(c)))
        .collect()
}

/// Makes `cmd`'s process run on `cpus` (nothing when empty).
pub fn pin(cmd: &mut std::process::Command, cpus: &[usize]) {
    use std::os::unix::process::CommandExt;
    if cpus.is_empty() {
        return;
    }
    let mut set = CpuSet::new();
    for &c in cpus {
        set.set(c);
    }
    // SAFETY: sched_setaffinity is async-signal-safe; nothing else runs in the child
    // between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            rustix::thread::sched_setaffinity(None, &set).map_err(std::io::Error::from)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_near_a_gpu_stay_inside_the_allowed_ones_and_a_cpu_set() {
        assert_eq!(near(&[0, 1, 2, 3], Some(&[2, 3, 4])), [2, 3]);
        assert_eq!(near(&[0, 1], None), [0, 1]);
        assert!(near(&[0, 1], Some(&[5])).is_empty());
        let max = CpuSet::MAX_CPU;
        assert_eq!(
            near(&[max - 2, max - 1, max, max + 7], None),
            [max - 2, max - 1]
        );
        let mine = allowed().expect("this process's CPUs");
        assert!(!mine.is_empty());
    }

    #[test]
    fn a_pinned_child_runs_on_the_cpus_given() {
        let cpu = allowed().unwrap()[0];
        let mut cmd = std::process::Command::new("grep");
        cmd.args(["Cpus_allowed_list", "/proc/self/status"]);
        pin(&mut cmd, &[cpu]);
        let out = String::from_utf8(cmd.output().unwrap().stdout).unwrap();
        assert_eq!(
            out.split_whitespace().nth(1),
            Some(cpu.to_string().as_str()),
            "{out}"
        );
    }
}
