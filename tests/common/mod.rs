//! Helpers shared by the end-to-end tests: child processes that die with the test, a
//! scheduler on a free port, waiting for a condition, random payloads.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const RASK: &str = env!("CARGO_BIN_EXE_rask");

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `cond` (backing off to 50 ms) until it holds; fails after 60 s.
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut delay = Duration::from_millis(1);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}

/// A path in the temporary directory, unique to this test process.
pub fn tmpfile(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("rask-test-{}-{name}", std::process::id()))
}

/// Starts `rask scheduler` on a free port (after `prefix`, e.g. `ip netns exec NS`, and
/// with `extra` options); returns it and its address.
pub fn scheduler_with(prefix: &[&str], extra: &[&str]) -> (Proc, String) {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let file = tmpfile(&format!("sched-{}", NEXT.fetch_add(1, Ordering::Relaxed)));
    let _ = std::fs::remove_file(&file);
    let mut cmd = Command::new(prefix.first().copied().unwrap_or(RASK));
    if !prefix.is_empty() {
        cmd.args(&prefix[1..]).arg(RASK);
    }
    let child = cmd
        .args(["scheduler", "--port", "0", "--scheduler-file"])
        .arg(&file)
        .args(extra)
        .env("RASK_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .expect("start rask scheduler");
    let mut p = Proc(child);
    let mut addr = String::new();
    eventually(
        &format!("the scheduler writes its address to {}", file.display()),
        || {
            if let Ok(Some(status)) = p.0.try_wait() {
                panic!("the scheduler exited: {status}");
            }
            addr = std::fs::read_to_string(&file)
                .unwrap_or_default()
                .trim()
                .to_string();
            !addr.is_empty()
        },
    );
    let _ = std::fs::remove_file(&file);
    (p, addr)
}

/// Starts `rask scheduler` on a free port on 127.0.0.1.
pub fn scheduler(extra: &[&str]) -> (Proc, String) {
    scheduler_with(&[], extra)
}

/// Starts `rask worker` for `addr` with one thread and the given options (after
/// `prefix`, e.g. `ip netns exec NS`).
pub fn worker_with(prefix: &[&str], addr: &str, name: &str, extra: &[&str]) -> Proc {
    let mut cmd = Command::new(prefix.first().copied().unwrap_or(RASK));
    if !prefix.is_empty() {
        cmd.args(&prefix[1..]).arg(RASK);
    }
    Proc(
        cmd.args(["worker", addr, "--nthreads", "1", "--name", name])
            .args(extra)
            .env("RASK_LOG", "warn")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rask worker"),
    )
}

/// `rask worker` for `addr` with one thread, the given options, and its standard error
/// captured: for tests that read why it stopped.
pub fn worker_reporting(addr: &str, name: &str, extra: &[&str]) -> Child {
    Command::new(RASK)
        .args(["worker", addr, "--nthreads", "1", "--name", name])
        .args(extra)
        .env("RASK_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rask worker")
}

/// Pseudo-random bytes from a seed (xorshift).
pub fn random_bytes(len: usize, mut x: u64) -> Vec<u8> {
    x |= 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A fresh seed, printed so a failure can be replayed.
pub fn seed() -> u64 {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("seed {s}");
    s
}

/// Computes `x` (2-d, f64) and `y`, checks `y` = x · xᵀ to 1e-12 relative, and returns x.
pub fn check_gram(
    c: &rask::Client,
    x: &rask::array::Array,
    y: &rask::array::Array,
) -> ndarray::Array2<f64> {
    let xs = c
        .compute_array::<f64>(x)
        .unwrap()
        .into_dimensionality::<ndarray::Ix2>()
        .unwrap();
    let ys = c.compute_array::<f64>(y).unwrap();
    let want = xs.dot(&xs.t());
    assert_eq!(ys.shape(), want.shape());
    for (a, b) in ys.iter().zip(want.iter()) {
        assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "{a} vs {b}");
    }
    xs
}
