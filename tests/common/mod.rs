//! Helpers shared by the end-to-end tests: child processes that die with the test, a
//! deadline that fails a test instead of letting it hang, a scheduler on a free port,
//! waiting for a condition, random payloads.
#![allow(dead_code)]

use std::cell::Cell;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

pub const RASK: &str = env!("CARGO_BIN_EXE_rask");

/// The deadline of a multi-process test: far longer than any of them takes on a loaded
/// machine, so reaching it means something stalled.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// Children started through [`Proc::new`], with the test that started them (see
/// [`within`]), so that a test past its deadline can have them killed. A pid leaves when
/// its [`Proc`] is dropped, before the drop reaps it; only a test that reaps a child itself
/// (`.0.wait()`) leaves a moment in which the pid could be reused.
static CHILDREN: Mutex<Vec<(u64, u32)>> = Mutex::new(Vec::new());

thread_local! {
    /// The test run by [`within`] on this thread (0: none).
    static TEST: Cell<u64> = const { Cell::new(0) };
}

fn children() -> std::sync::MutexGuard<'static, Vec<(u64, u32)>> {
    CHILDREN.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `test` on a thread of its own and returns what it returns; a panic in it fails
/// the caller with the same message. If it has not finished within `limit`, the processes
/// it started are killed (which also ends its waits on them) and the caller fails: a
/// stalled cluster fails the test instead of stalling the suite.
pub fn within<T: Send + 'static>(limit: Duration, test: impl FnOnce() -> T + Send + 'static) -> T {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = std::thread::current().name().unwrap_or("test").to_string();
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            TEST.with(|t| t.set(id));
            let _ = tx.send(test());
        })
        .expect("start the test's thread");
    match rx.recv_timeout(limit) {
        Ok(v) => {
            let _ = thread.join();
            v
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match thread.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the test's thread ended without a result or a panic"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            let mut killed = 0;
            for &(_, pid) in children().iter().filter(|(t, _)| *t == id) {
                if kill_process(
                    Pid::from_raw(pid as i32).expect("a child's pid"),
                    Signal::KILL,
                )
                .is_ok()
                {
                    killed += 1;
                }
            }
            panic!(
                "{name} did not finish within {limit:?} (killed the {killed} processes it started)"
            );
        }
    }
}

/// A child process killed when dropped (or when its test passes its deadline).
pub struct Proc(pub Child);

impl Proc {
    /// Takes charge of a started child.
    pub fn new(child: Child) -> Proc {
        children().push((TEST.with(Cell::get), child.id()));
        Proc(child)
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.0.id() as i32).expect("a child's pid")
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill(self) {
        drop(self);
    }

    /// Freezes the process with SIGSTOP and returns once the kernel reports it stopped:
    /// its sockets stay open, but it reads, sends and computes nothing until
    /// [`Proc::thaw`] (or a SIGKILL).
    pub fn freeze(&self) {
        kill_process(self.pid(), Signal::STOP).expect("SIGSTOP a child");
        let stat = format!("/proc/{}/stat", self.0.id());
        eventually("a frozen process is reported stopped", || {
            let s = std::fs::read_to_string(&stat).expect("read /proc/PID/stat");
            // The state follows the command name, which is in parentheses.
            s.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('T'))
        });
    }

    /// Lets a frozen process run again (SIGCONT).
    pub fn thaw(&self) {
        kill_process(self.pid(), Signal::CONT).expect("SIGCONT a child");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = self.0.id();
        children().retain(|&(_, p)| p != pid);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `cmd` to its end and returns its exit status and output, as `Command::output`
/// does, with the process in the charge of the test (killed if it passes its deadline).
pub fn output(cmd: &mut Command) -> std::process::Output {
    use std::io::Read;
    let mut p = Proc::new(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start a command"),
    );
    let mut err_pipe = p.0.stderr.take().expect("piped standard error");
    let err = std::thread::spawn(move || {
        let mut err = Vec::new();
        let _ = err_pipe.read_to_end(&mut err);
        err
    });
    let mut stdout = Vec::new();
    let _ =
        p.0.stdout
            .take()
            .expect("piped standard output")
            .read_to_end(&mut stdout);
    let status = p.0.wait().expect("wait for a command");
    std::process::Output {
        status,
        stdout,
        stderr: err.join().expect("read standard error"),
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

/// A client of the scheduler at `addr`, which may still be starting.
pub fn connect_retrying(addr: &str) -> rask::Client {
    let mut client = None;
    eventually(&format!("the scheduler at {addr} answers"), || {
        client = rask::Client::connect(addr).ok();
        client.is_some()
    });
    client.unwrap()
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
    cmd.arg("scheduler");
    if !extra.contains(&"--port") {
        cmd.args(["--port", "0"]);
    }
    let child = cmd
        .arg("--scheduler-file")
        .arg(&file)
        .args(extra)
        .env("RASK_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .expect("start rask scheduler");
    let mut p = Proc::new(child);
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
    Proc::new(
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
pub fn worker_reporting(addr: &str, name: &str, extra: &[&str]) -> Proc {
    Proc::new(
        Command::new(RASK)
            .args(["worker", addr, "--nthreads", "1", "--name", name])
            .args(extra)
            .env("RASK_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start rask worker"),
    )
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

/// FNV-1a (64-bit) as published, written out here so that expected checksums do not
/// come from the code under test.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The scheduler's view of the worker called `name`.
pub fn worker_info(c: &rask::Client, name: &str) -> rask::WorkerInfoMsg {
    let info = c.scheduler_info().unwrap();
    info.workers
        .into_iter()
        .find(|w| w.name == name)
        .unwrap_or_else(|| panic!("no worker {name}"))
}

/// Tasks the worker called `name` has run, as of its last heartbeat.
pub fn tasks_run_by(c: &rask::Client, name: &str) -> u64 {
    worker_info(c, name).ran.iter().map(|(_, n)| n).sum()
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

/// Runs `ip` with `args`; its error output on failure.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A test that cannot run here: says why (a `SKIPPED` line the test runner lists) and
/// returns, or, where `RASK_REQUIRE_DAEMONS` is set (CI, which installs what the test
/// needs), fails with the reason.
pub fn cannot_run(reason: &str) {
    if std::env::var_os("RASK_REQUIRE_DAEMONS").is_some() {
        panic!("cannot run (RASK_REQUIRE_DAEMONS is set): {reason}");
    }
    println!("SKIPPED: {reason}");
}

/// "Hosts" on a bridge: network namespaces made by the test, each with `eth0` on
/// 10.214.N.0/24 (this namespace is .1 on the bridge); removed when dropped.
pub struct Lan {
    /// The bridge in this namespace (10.214.N.1).
    pub bridge: String,
    /// Each host's namespace and address.
    pub hosts: Vec<(String, String)>,
}

impl Drop for Lan {
    fn drop(&mut self) {
        for (ns, _) in &self.hosts {
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

pub fn make_lan(n: usize) -> Result<(Lan, String), String> {
    let id = std::process::id() % 100_000;
    let subnet = format!("10.214.{}", id % 250);
    let mut lan = Lan {
        bridge: format!("rkbr{id}"),
        hosts: Vec::new(),
    };
    ip(&["link", "add", &lan.bridge, "type", "bridge"])?;
    ip(&["addr", "add", &format!("{subnet}.1/24"), "dev", &lan.bridge])?;
    ip(&["link", "set", &lan.bridge, "up"])?;
    for i in 0..n {
        let ns = format!("rask-lan-{id}-{i}");
        let veth = format!("rk{id}h{i}");
        let addr = format!("{subnet}.{}", i + 2);
        ip(&["netns", "add", &ns])?;
        lan.hosts.push((ns.clone(), addr.clone()));
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])?;
        ip(&["link", "set", &veth, "master", &lan.bridge, "up"])?;
        for args in [
            vec!["addr", "add", &format!("{addr}/24"), "dev", "eth0"],
            vec!["link", "set", "eth0", "up"],
            vec!["link", "set", "lo", "up"],
        ] {
            let mut a = vec!["netns", "exec", &ns, "ip"];
            a.extend(args);
            ip(&a)?;
        }
    }
    Ok((lan, format!("{subnet}.1")))
}

/// An example of this crate, built (or found up to date) by cargo.
pub fn example(name: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = output(
        Command::new(cargo)
            .args(["build", "--quiet", "--example", name])
            .current_dir(env!("CARGO_MANIFEST_DIR")),
    );
    assert!(
        out.status.success(),
        "building the {name} example: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A test is target/<profile>/deps/NAME-…; the examples are beside deps.
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// What a plain-HTTP GET of `url` (`http://` or `https://HOST:PORT/PATH`, sent as plain
/// HTTP either way) is answered: head and body.
pub fn plain_http_get(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .expect("an http:// or https:// URL");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Whether `program` is on the PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A hello for a test speaking the protocol itself, as `role`, from another host (no
/// shared memory with the cluster); tests alter its fields to be refused.
pub fn raw_hello(role: rask_proto::msg::Role, name: &str) -> rask_proto::msg::Hello {
    rask_proto::msg::Hello {
        protocol: rask_proto::PROTOCOL_VERSION,
        schema: rask_proto::PROTOCOL_SCHEMA,
        rask_version: rask_proto::RASK_VERSION.into(),
        role,
        name: name.into(),
        host_id: "elsewhere".into(),
        pid: 0,
        nonce: [0; 32],
        registry: None,
        worker: None,
        program: None,
        resume: None,
    }
}
