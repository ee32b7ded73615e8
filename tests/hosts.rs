//! Workers as a multi-host deployment starts them: before their scheduler, through a
//! scheduler file, across a scheduler restart, several per process (`--nworkers`), and
//! inside a memory-limited control group (a container, a Slurm job).

use std::process::{Command, Stdio};

use rask::{Arg, Client};

mod common;

use common::{eventually, output, tmpfile, within, Proc, DEADLINE, RASK};

/// A port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `rask scheduler` on `port`, optionally writing `file`.
fn scheduler_on(port: u16, file: Option<&std::path::Path>) -> Proc {
    let mut cmd = Command::new(RASK);
    cmd.args(["scheduler", "--port", &port.to_string()]);
    if let Some(f) = file {
        cmd.arg("--scheduler-file").arg(f);
    }
    Proc::new(
        cmd.env("RASK_LOG", "warn")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// A worker logging at info level, once it has said (on standard error) a line
/// containing `said`.
fn worker_once_it_says(args: &[&str], said: &str) -> Proc {
    use std::io::BufRead;
    let mut p = Proc::new(
        Command::new(RASK)
            .arg("worker")
            .args(args)
            .env("RASK_LOG", "info")
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut err = std::io::BufReader::new(p.0.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "the worker ended without saying {said:?}: {seen}"
        );
        seen.push_str(&line);
        if line.contains(said) {
            break;
        }
    }
    // Keep draining its log so that it never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    p
}

fn worker(args: &[&str]) -> Proc {
    Proc::new(
        Command::new(RASK)
            .arg("worker")
            .args(args)
            .env("RASK_LOG", "warn")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Squares of 0..n summed on the cluster at `addr`.
fn sum_of_squares(c: &Client, n: i64) -> i64 {
    let squares = c
        .map("mul", (0..n).map(|i| [Arg::from(i), Arg::from(i)]))
        .unwrap();
    squares.iter().map(|f| f.result_as::<i64>().unwrap()).sum()
}

#[test]
fn a_worker_started_before_its_scheduler_joins_it_when_it_comes_up() {
    within(DEADLINE, || {
        let port = free_port();
        let addr = format!("tcp://127.0.0.1:{port}");
        // Nothing listens yet: the worker says so and keeps trying.
        let _w = worker_once_it_says(
            &[&addr, "--name", "early", "--death-timeout", "60"],
            "trying again",
        );
        let _s = scheduler_on(port, None);
        let c = common::connect_retrying(&addr);
        c.wait_for_workers(1).unwrap();
        assert_eq!(c.scheduler_info().unwrap().workers[0].name, "early");
        assert_eq!(sum_of_squares(&c, 100), 328_350);
    });
}

#[test]
fn workers_and_clients_find_the_scheduler_through_its_file() {
    within(DEADLINE, || {
        let file = tmpfile("scheduler-file");
        let _ = std::fs::remove_file(&file);
        // The worker starts first and waits for the file.
        let _w = worker_once_it_says(
            &[
                "--scheduler-file",
                file.to_str().unwrap(),
                "--name",
                "by-file",
            ],
            "waiting for the scheduler's address",
        );
        let _s = scheduler_on(0, Some(&file));
        eventually("the scheduler writes its file", || file.exists());
        let c = Client::from_scheduler_file(&file).unwrap();
        c.wait_for_workers(1).unwrap();
        assert_eq!(c.scheduler_info().unwrap().workers[0].name, "by-file");
        assert_eq!(sum_of_squares(&c, 10), 285);
        let _ = std::fs::remove_file(&file);
    });
}

#[test]
fn a_worker_gives_up_after_its_death_timeout_naming_the_scheduler() {
    within(DEADLINE, || {
        let addr = format!("tcp://127.0.0.1:{}", free_port());
        let out = output(
            Command::new(RASK)
                .args(["worker", &addr, "--death-timeout", "1"])
                .env("RASK_LOG", "error")
                .stdin(Stdio::null()),
        );
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&addr) && err.contains("cannot reach the scheduler"),
            "{err}"
        );
        // And a missing scheduler file, naming the file.
        let file = tmpfile("never-written");
        let out = output(
            Command::new(RASK)
                .args(["worker", "--death-timeout", "1", "--scheduler-file"])
                .arg(&file)
                .env("RASK_LOG", "error")
                .stdin(Stdio::null()),
        );
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(file.to_str().unwrap()), "{err}");
    });
}

#[test]
fn a_worker_that_loses_its_scheduler_joins_the_next_one_at_the_same_address() {
    within(DEADLINE, || {
        let port = free_port();
        let addr = format!("tcp://127.0.0.1:{port}");
        let s = scheduler_on(port, None);
        let mut w = worker(&[&addr, "--name", "faithful"]);
        let c = common::connect_retrying(&addr);
        c.wait_for_workers(1).unwrap();
        drop(c);
        // The scheduler dies without a word (SIGKILL), and another takes its place.
        drop(s);
        let _s = scheduler_on(port, None);
        let c = common::connect_retrying(&addr);
        c.wait_for_workers(1).unwrap();
        assert_eq!(c.scheduler_info().unwrap().workers[0].name, "faithful");
        assert_eq!(sum_of_squares(&c, 50), 40_425);
        assert!(
            w.0.try_wait().unwrap().is_none(),
            "the worker process lives on"
        );
    });
}

#[test]
fn nworkers_starts_supervised_workers_that_share_the_cores_and_memory() {
    within(DEADLINE, || {
        let (_s, addr) = common::scheduler(&[]);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut sup = worker(&[&addr, "--nworkers", "2", "--name", "pair"]);
        let c = Client::connect(&addr).unwrap();
        c.wait_for_workers(2).unwrap();
        let info = c.scheduler_info().unwrap();
        let mut names: Vec<&str> = info.workers.iter().map(|w| w.name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["pair-0", "pair-1"]);
        let available = rask_worker::available_memory();
        for w in &info.workers {
            assert_eq!(w.nthreads as usize, (cores / 2).max(1), "{}", w.name);
            assert_eq!(w.memory_limit, available / 2, "{}", w.name);
            assert_ne!(w.pid, sup.0.id(), "each worker is a process of its own");
        }
        assert_eq!(sum_of_squares(&c, 20), 2_470);

        // A worker that dies is started again.
        let victim = info.workers[0].pid;
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(victim as i32).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
        eventually("the killed worker is replaced", || {
            let i = c.scheduler_info().unwrap();
            i.workers.len() == 2 && i.workers.iter().all(|w| w.pid != victim)
        });

        // SIGTERM to the supervisor stops them all, and it.
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(sup.0.id() as i32).unwrap(),
            rustix::process::Signal::TERM,
        )
        .unwrap();
        assert!(sup.0.wait().unwrap().success());
        eventually("the workers leave", || {
            c.scheduler_info().unwrap().workers.is_empty()
        });

        // A supervisor killed outright takes its workers with it: none is orphaned.
        let sup = worker(&[&addr, "--nworkers", "2", "--name", "orphans"]);
        c.wait_for_workers(2).unwrap();
        let pids: Vec<u32> = c
            .scheduler_info()
            .unwrap()
            .workers
            .iter()
            .map(|w| w.pid)
            .collect();
        drop(sup);
        eventually("the killed supervisor's workers leave", || {
            c.scheduler_info().unwrap().workers.is_empty()
        });
        for pid in pids {
            eventually(&format!("worker process {pid} ends"), || {
                !std::path::Path::new(&format!("/proc/{pid}")).exists()
                    || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                        .is_ok_and(|s| s.contains(") Z "))
            });
        }
    });
}

#[test]
fn memory_limits_read_in_every_unit_and_fraction() {
    within(DEADLINE, || {
        let (_s, addr) = common::scheduler(&[]);
        let available = rask_worker::available_memory();
        let _a = worker(&[&addr, "--name", "gib", "--memory-limit", "4GiB"]);
        let _b = worker(&[&addr, "--name", "gb", "--memory-limit", "4GB"]);
        let _c = worker(&[&addr, "--name", "half", "--memory-limit", "0.5"]);
        let _d = worker(&[&addr, "--name", "auto"]);
        let c = Client::connect(&addr).unwrap();
        c.wait_for_workers(4).unwrap();
        let info = c.scheduler_info().unwrap();
        let limit = |n: &str| {
            info.workers
                .iter()
                .find(|w| w.name == n)
                .unwrap()
                .memory_limit
        };
        assert_eq!(limit("gib"), 4 << 30);
        assert_eq!(limit("gb"), 4_000_000_000);
        assert_eq!(limit("half"), available / 2);
        assert_eq!(limit("auto"), available);
        // A size that does not read is refused before anything starts, naming it.
        let out = output(
            Command::new(RASK)
                .args(["worker", &addr, "--memory-limit", "4 XB"])
                .stdin(Stdio::null()),
        );
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("4 XB"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// A memory control group made for the test (cgroup v1 or v2), removed when dropped.
struct Cgroup(std::path::PathBuf);

impl Cgroup {
    fn new(limit: u64) -> Result<Cgroup, String> {
        let name = format!("rask-test-{}", std::process::id());
        let (dir, file) = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            (
                std::path::Path::new("/sys/fs/cgroup").join(&name),
                "memory.max",
            )
        } else {
            (
                std::path::Path::new("/sys/fs/cgroup/memory").join(&name),
                "memory.limit_in_bytes",
            )
        };
        std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let g = Cgroup(dir);
        std::fs::write(g.0.join(file), limit.to_string())
            .map_err(|e| format!("{}: {e}", g.0.join(file).display()))?;
        Ok(g)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn a_worker_in_a_memory_limited_cgroup_takes_its_limit_as_its_memory() {
    within(DEADLINE, || {
        let limit: u64 = 768 << 20;
        let group = match Cgroup::new(limit) {
            Ok(g) => g,
            Err(e) => {
                common::cannot_run(&format!("cannot make a memory control group here ({e}); this test needs root and a writable cgroup file system"));
                return;
            }
        };
        assert!(limit < rask_worker::total_memory());
        let (_s, addr) = common::scheduler(&[]);
        // The worker enters the group before it starts, as in a container.
        let procs = group.0.join("cgroup.procs");
        let w = Proc::new(
            Command::new("sh")
                .args([
                    "-c",
                    "echo $$ > \"$1\" && exec \"$2\" worker \"$3\" --name contained",
                    "sh",
                ])
                .arg(&procs)
                .args([RASK, &addr])
                .env("RASK_LOG", "warn")
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let c = Client::connect(&addr).unwrap();
        c.wait_for_workers(1).unwrap();
        let info = c.scheduler_info().unwrap();
        assert_eq!(info.workers[0].memory_limit, limit);
        drop(c);
        drop(w);
        // The group can go once its process has.
        eventually("the group empties", || {
            std::fs::read_to_string(&procs).map_or(true, |s| s.trim().is_empty())
        });
        drop(group);
    });
}

#[test]
fn configuration_files_and_environment_set_what_the_command_line_does_not() {
    within(DEADLINE, || {
        let (_s, addr) = common::scheduler(&[]);
        let file = tmpfile("rask.toml");
        std::fs::write(
            &file,
            format!(
                "[worker]\nscheduler = \"{addr}\"\nnthreads = 3\nmemory-limit = \"3GiB\"\nresources = [\"fast=2\"]\n"
            ),
        )
        .unwrap();
        // The file gives the scheduler, threads, memory and resources; the environment
        // overrides the memory; the command line names the worker.
        let _w = Proc::new(
            Command::new(RASK)
                .args(["worker", "--name", "configured"])
                .env("RASK_CONFIG", &file)
                .env("RASK_WORKER_MEMORY_LIMIT", "2GiB")
                .env("RASK_LOG", "warn")
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let c = Client::connect(&addr).unwrap();
        c.wait_for_workers(1).unwrap();
        let w = &c.scheduler_info().unwrap().workers[0];
        assert_eq!(
            (w.name.as_str(), w.nthreads, w.memory_limit),
            ("configured", 3, 2 << 30)
        );
        assert!(
            w.resources
                .iter()
                .any(|r| r.name == "fast" && r.amount == 2.0),
            "{:?}",
            w.resources
        );

        // `rask config` says where each value came from.
        let out = output(
            Command::new(RASK)
                .arg("config")
                .env("RASK_CONFIG", &file)
                .env("RASK_WORKER_MEMORY_LIMIT", "2GiB"),
        );
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        let line = |key: &str| -> String {
            let mut in_worker = false;
            for l in text.lines() {
                if l.starts_with('[') {
                    in_worker = l == "[worker]";
                } else if in_worker && l.starts_with(&format!("{key} =")) {
                    return l.to_string();
                }
            }
            panic!("no worker {key} in {text}");
        };
        assert!(
            line("nthreads").contains("\"3\"") && line("nthreads").contains(file.to_str().unwrap())
        );
        assert!(line("memory-limit").contains("environment RASK_WORKER_MEMORY_LIMIT"));
        assert!(line("death-timeout").ends_with("# default"));

        // A typo in the file stops the worker before it starts, naming the key.
        std::fs::write(&file, "[worker]\nnthread = 3\n").unwrap();
        let out = output(
            Command::new(RASK)
                .args(["worker", &addr])
                .env("RASK_CONFIG", &file)
                .stdin(Stdio::null()),
        );
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("nthread") && err.contains(file.to_str().unwrap()),
            "{err}"
        );
        let _ = std::fs::remove_file(&file);
    });
}

#[test]
fn a_cluster_shut_down_by_a_client_or_by_sigterm_ends_with_its_workers() {
    within(DEADLINE, || {
        for by_client in [true, false] {
            let port = free_port();
            let addr = format!("tcp://127.0.0.1:{port}");
            let mut s = scheduler_on(port, None);
            let mut w1 = worker(&[&addr, "--name", "w1"]);
            let mut w2 = worker(&[&addr, "--name", "w2"]);
            let c = common::connect_retrying(&addr);
            c.wait_for_workers(2).unwrap();
            if by_client {
                c.shutdown().unwrap();
            } else {
                rustix::process::kill_process(
                    rustix::process::Pid::from_raw(s.0.id() as i32).unwrap(),
                    rustix::process::Signal::TERM,
                )
                .unwrap();
            }
            // Told to close, the workers end at once and cleanly: they do not wait for
            // a scheduler that is not coming back (their death timeout is 60 s).
            assert!(s.0.wait().unwrap().success());
            assert!(w1.0.wait().unwrap().success());
            assert!(w2.0.wait().unwrap().success());
        }
    });
}
