//! Typed ops across processes, and programs shipped to a cluster of stock workers: the
//! `typed` example program runs against `rask scheduler` + `rask worker` processes
//! started here, which receive it, cache it once per host, start workers of it, and keep
//! the workers of two builds with the same op names apart.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use common::{output, scheduler, tmpfile, within, Proc, DEADLINE, RASK};
use rask_proto::msg::{
    Hello, OpInfo, ProgramInfo, RegistryInfo, Role, TaskSpec, ToClient, ToScheduler, UpdateGraphMsg,
};
use rask_proto::Datum;

/// The `typed` example, built (or found up to date) once per test process.
fn typed_program() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| common::example("typed")).clone()
}

/// A copy of the `typed` example whose `flavour` op returns other text: the same op
/// names, other code.
fn changed_program() -> PathBuf {
    let mut bytes = std::fs::read(typed_program()).unwrap();
    let (from, to) = (b"flavour-original-0001", b"flavour-changed--0001");
    let mut n = 0;
    let mut i = 0;
    while let Some(at) = bytes[i..].windows(from.len()).position(|w| w == from) {
        bytes[i + at..i + at + from.len()].copy_from_slice(to);
        i += at + from.len();
        n += 1;
    }
    assert!(n > 0, "the flavour text is not in the program");
    let path = tmpfile("typed-changed");
    std::fs::write(&path, &bytes).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A stock `rask worker` with its own program cache (`cache`, shared by the workers of
/// one "host").
fn stock_worker(addr: &str, name: &str, cache: &Path) -> Proc {
    Proc::new(
        Command::new(RASK)
            .args(["worker", addr, "--nthreads", "1", "--name", name])
            .env("RASK_LOG", "warn")
            .env("RASK_PROGRAM_CACHE", cache)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rask worker"),
    )
}

/// `name = value` lines of a program's output.
fn lines(out: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(out)
        .lines()
        .filter_map(|l| l.split_once(" = "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn value<'a>(lines: &'a [(String, String)], key: &str) -> &'a str {
    lines
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key:?} in {lines:?}"))
}

/// Runs the typed program against `addr` and returns its lines (it must succeed).
fn run_typed(program: &Path, addr: &str, args: &[&str]) -> Vec<(String, String)> {
    let out = output(
        Command::new(program)
            .args(args)
            .env("RASK_SCHEDULER_ADDRESS", addr)
            .env("RASK_LOG", "warn"),
    );
    assert!(
        out.status.success(),
        "{} failed: {}\n{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    lines(&out.stdout)
}

/// What every run of the typed program must print, wherever its ops ran.
fn check_typed(l: &[(String, String)], flavour: &str) {
    assert_eq!(value(l, "perimeter"), "16");
    assert_eq!(
        value(l, "description"),
        "kite irregular(0.25) {\"colour\": 7, \"corners\": 4} Some(340282366920938463463374607431768211454) (-8, 65535, -70000)"
    );
    assert_eq!(
        value(l, "merged"),
        "{\"a\": 4, \"b\": 1, \"c\": 1, \"is\": 2, \"rose\": 3}"
    );
    // Σ i·0.5·4 for i < 4096.
    assert_eq!(value(l, "scaled sum"), "16773120");
    assert_eq!(value(l, "sqrt"), "1.5");
    let e = value(l, "sqrt error");
    assert!(e.contains("no real square root of -1"), "{e}");
    let e = value(l, "mismatch");
    assert!(
        e.contains("typed::perimeter")
            && e.contains("(typed::Shape,)")
            && e.contains("found a str"),
        "{e}"
    );
    assert_eq!(value(l, "ran elsewhere"), "true");
    assert_eq!(value(l, "flavour"), flavour);
}

fn info(addr: &str) -> rask::SchedulerInfoMsg {
    rask::Client::connect(addr)
        .unwrap()
        .scheduler_info()
        .unwrap()
}

#[test]
fn typed_ops_run_on_worker_processes_of_the_program_itself() {
    let program = typed_program();
    within(DEADLINE, move || {
        let out = output(
            Command::new(&program)
                .arg("--processes")
                .env_remove("RASK_SCHEDULER_ADDRESS")
                .env("RASK_LOG", "warn"),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        check_typed(&lines(&out.stdout), "flavour-original-0001");
    });
}

#[test]
fn stock_workers_run_a_clients_typed_ops_from_the_program_it_sends_once_per_host() {
    let program = typed_program();
    within(DEADLINE, move || {
        let cache = tmpfile("cache-once");
        let _ = std::fs::remove_dir_all(&cache);
        let (_s, addr) = scheduler(&[]);
        let _w1 = stock_worker(&addr, "w1", &cache);
        let _w2 = stock_worker(&addr, "w2", &cache);
        rask::Client::connect(&addr)
            .unwrap()
            .wait_for_workers(2)
            .unwrap();

        check_typed(&run_typed(&program, &addr, &[]), "flavour-original-0001");
        let i = info(&addr);
        assert_eq!(i.programs.len(), 1, "{:?}", i.programs);
        let p = &i.programs[0];
        assert_eq!(
            (p.name.as_str(), p.uploads, p.downloads),
            ("typed", 1, 1),
            "{p:?}"
        );
        assert_eq!(p.size, std::fs::metadata(&program).unwrap().len());
        // The copy on the "host" is the program itself.
        let cached = cache.join(format!("{:016x}", p.code));
        assert_eq!(
            std::fs::read(&cached).unwrap(),
            std::fs::read(&program).unwrap()
        );

        // Again: the scheduler kept it, the host has it.
        check_typed(&run_typed(&program, &addr, &[]), "flavour-original-0001");
        let p = &info(&addr).programs[0];
        assert_eq!((p.uploads, p.downloads), (1, 1), "{p:?}");

        // A new cluster on the same host: the workers start it from their cache, and
        // nothing is sent at all.
        drop((_w1, _w2, _s));
        let (_s, addr) = scheduler(&[]);
        let _w1 = stock_worker(&addr, "w1", &cache);
        let _w2 = stock_worker(&addr, "w2", &cache);
        rask::Client::connect(&addr)
            .unwrap()
            .wait_for_workers(2)
            .unwrap();
        check_typed(&run_typed(&program, &addr, &[]), "flavour-original-0001");
        let p = &info(&addr).programs[0];
        assert_eq!((p.uploads, p.downloads), (0, 0), "{p:?}");

        // A cached copy that is not the program is replaced, not run. (Written beside it
        // and renamed over it: the copy the last cluster's program workers ran from may
        // still be executing while they exit, and a running file cannot be written.)
        let stale = cache.join("stale");
        std::fs::write(&stale, b"\x7fELF but not the program").unwrap();
        std::fs::rename(&stale, &cached).unwrap();
        drop((_w1, _w2, _s));
        let (_s, addr) = scheduler(&[]);
        let _w1 = stock_worker(&addr, "w1", &cache);
        rask::Client::connect(&addr)
            .unwrap()
            .wait_for_workers(1)
            .unwrap();
        check_typed(&run_typed(&program, &addr, &[]), "flavour-original-0001");
        let p = &info(&addr).programs[0];
        assert_eq!((p.uploads, p.downloads), (1, 1), "{p:?}");
        assert_eq!(
            std::fs::read(&cached).unwrap(),
            std::fs::read(&program).unwrap()
        );
        let _ = std::fs::remove_dir_all(&cache);
    });
}

/// A program started with `--hold`, once its checks are done: its lines so far, and the
/// process (which finishes when its input closes).
fn held(program: &Path, addr: &str) -> (Vec<(String, String)>, Proc) {
    let mut p = Proc::new(
        Command::new(program)
            .arg("--hold")
            .env("RASK_SCHEDULER_ADDRESS", addr)
            .env("RASK_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut out = BufReader::new(p.0.stdout.take().unwrap());
    let mut text = Vec::new();
    loop {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the program ended before holding: {}",
            String::from_utf8_lossy(&text)
        );
        if line.trim() == "holding" {
            break;
        }
        text.extend_from_slice(line.as_bytes());
    }
    p.0.stdout = Some(out.into_inner());
    (lines(&text), p)
}

/// Closes a held program's input and returns its remaining lines.
fn release(mut p: Proc) -> Vec<(String, String)> {
    use std::io::Read;
    drop(p.0.stdin.take());
    let mut rest = Vec::new();
    p.0.stdout.take().unwrap().read_to_end(&mut rest).unwrap();
    assert!(p.0.wait().unwrap().success());
    lines(&rest)
}

#[test]
fn two_builds_with_the_same_ops_share_a_cluster_and_never_serve_each_others_tasks() {
    let (original, changed) = (typed_program(), changed_program());
    within(DEADLINE, move || {
        let cache = tmpfile("cache-two");
        let _ = std::fs::remove_dir_all(&cache);
        let (_s, addr) = scheduler(&[]);
        let _w1 = stock_worker(&addr, "w1", &cache);
        let _w2 = stock_worker(&addr, "w2", &cache);
        rask::Client::connect(&addr)
            .unwrap()
            .wait_for_workers(2)
            .unwrap();

        let (a, pa) = held(&original, &addr);
        check_typed(&a, "flavour-original-0001");
        // The second build joins while the first one's workers run.
        let (b, pb) = held(&changed, &addr);
        check_typed(&b, "flavour-changed--0001");
        assert_eq!(value(&b, "local flavour"), "flavour-changed--0001");

        // Each stock worker starts a worker of each program; the tasks may have run on
        // the first to join, before the second one is up.
        common::eventually("each program has a worker on each stock worker", || {
            let i = info(&addr);
            i.programs.len() == 2 && i.programs.iter().all(|p| p.workers == 2)
        });
        let i = info(&addr);
        assert_eq!(i.programs.len(), 2, "{:?}", i.programs);
        assert_ne!(i.programs[0].code, i.programs[1].code);
        for p in &i.programs {
            assert_eq!(
                (p.workers, p.clients, p.error.as_str()),
                (2, 1, ""),
                "{p:?}"
            );
        }
        // Two stock workers and two workers of each program.
        assert_eq!(i.workers.len(), 6);

        // Each still gets its own code's answer with the other one's workers running.
        assert_eq!(
            value(&release(pa), "flavour after"),
            "flavour-original-0001"
        );
        assert_eq!(
            value(&release(pb), "flavour after"),
            "flavour-changed--0001"
        );
        // Their workers stop with their clients.
        common::eventually("the programs' workers stop", || {
            info(&addr).workers.len() == 2
        });
        let _ = std::fs::remove_file(&changed);
        let _ = std::fs::remove_dir_all(&cache);
    });
}

/// A client of its own (raw protocol) that runs a "program": one typed op `fake::op` of
/// `code`, `size` bytes. Returns the error of its one task, answering the scheduler's
/// request for the executable with `upload`.
fn fake_program_task(addr: &str, code: u64, upload: Vec<u8>, shippable: bool) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut hello = Hello::new(Role::Client, "fake", "elsewhere");
        hello.registry = Some(RegistryInfo {
            fingerprint: 0,
            ops: vec![OpInfo {
                name: "fake::op".into(),
                version: 1,
                program: true,
            }],
        });
        hello.program = Some(ProgramInfo {
            code,
            size: upload.len() as u64,
            name: "fake".into(),
            platform: rask_worker::this_platform(),
            shippable,
        });
        let (mut reader, w, _) =
            rask_transport::connect(addr, &hello, rask_transport::ConnConfig::default())
                .await
                .unwrap();
        let tx = rask_transport::spawn_writer::<ToScheduler, _>(w);
        tx.send(ToScheduler::UpdateGraph(UpdateGraphMsg {
            tasks: vec![TaskSpec {
                key: "t".into(),
                op: "fake::op".into(),
                args: Datum::List(vec![]),
                deps: vec![],
                resources: vec![],
            }],
            wanted: vec!["t".into()],
            more: false,
        }))
        .unwrap();
        loop {
            let batch = reader.read_batch::<ToClient>().await.unwrap().unwrap();
            for m in batch.msgs {
                match m {
                    ToClient::SendProgram { code: asked } => {
                        assert_eq!(asked, code);
                        let msg = ToScheduler::ProgramPart {
                            code,
                            offset: 0,
                            size: upload.len() as u64,
                            buf: 0,
                        };
                        tx.send_with(msg, vec![upload.clone().into()]).unwrap();
                    }
                    ToClient::KeyErred { key, error } => {
                        assert_eq!(key, "t");
                        return error.message;
                    }
                    ToClient::GraphRejected { message, .. } => return message,
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
    })
}

#[test]
fn a_program_the_workers_cannot_run_fails_its_tasks_with_why_and_the_workers_live_on() {
    within(DEADLINE, move || {
        let cache = tmpfile("cache-bad");
        let _ = std::fs::remove_dir_all(&cache);
        let (_s, addr) = scheduler(&[]);
        let mut w1 = stock_worker(&addr, "w1", &cache);
        let _w2 = stock_worker(&addr, "w2", &cache);
        let client = rask::Client::connect(&addr).unwrap();
        client.wait_for_workers(2).unwrap();

        // Not an executable at all.
        let e = fake_program_task(&addr, 0x1234, b"garbage, not a program".to_vec(), true);
        assert!(
            e.contains("fake (0000000000001234) cannot run")
                && e.contains("w1")
                && e.contains("not an executable (ELF)"),
            "{e}"
        );
        // An executable, but not the program announced (its code differs).
        let real = std::fs::read(RASK).unwrap();
        let rask_code = rask_kernels::code_identity_of(Path::new(RASK)).unwrap();
        let e = fake_program_task(&addr, 0x5678, real, true);
        assert!(
            e.contains("not the program")
                && e.contains(&format!("its code is {rask_code:016x}"))
                && e.contains("0000000000005678"),
            "{e}"
        );
        // A program that cannot be started as a worker is not sent anywhere.
        let e = fake_program_task(&addr, 0x9abc, b"unused".to_vec(), false);
        assert!(e.contains("rask::worker_entry()"), "{e}");
        assert_eq!(
            info(&addr).programs.iter().map(|p| p.uploads).sum::<u32>(),
            2
        );

        // Nothing was kept, and the workers still serve the cluster's ops.
        assert!(!cache.join(format!("{:016x}", 0x1234)).exists());
        assert!(w1.0.try_wait().unwrap().is_none(), "a worker went down");
        let x = client.submit("inc", [rask::Arg::from(41)]).unwrap();
        assert_eq!(x.result_as::<i64>().unwrap(), 42);
        let _ = std::fs::remove_dir_all(&cache);
    });
}

#[test]
fn a_program_worker_stops_when_the_worker_that_started_it_dies() {
    let program = typed_program();
    within(DEADLINE, move || {
        let cache = tmpfile("cache-orphan");
        let _ = std::fs::remove_dir_all(&cache);
        let (_s, addr) = scheduler(&[]);
        let w1 = stock_worker(&addr, "w1", &cache);
        let client = rask::Client::connect(&addr).unwrap();
        client.wait_for_workers(1).unwrap();
        let (_, p) = held(&program, &addr);
        let child = info(&addr)
            .workers
            .iter()
            .find(|w| w.name.starts_with("w1/"))
            .map(|w| w.pid)
            .expect("the program's worker");
        w1.kill();
        common::eventually("the program's worker exits with its supervisor", || {
            !Path::new(&format!("/proc/{child}")).exists()
                || std::fs::read_to_string(format!("/proc/{child}/stat"))
                    .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')))
        });
        drop(p);
        let _ = std::fs::remove_dir_all(&cache);
    });
}

/// The π of the README: 1,000 tasks of a typed op and a typed sum, embedded and on stock
/// workers that receive the program.
#[test]
fn the_pi_example_is_within_a_hundredth_embedded_and_on_stock_workers() {
    let program = common::example("pi");
    within(DEADLINE, move || {
        let pi = |out: std::process::Output| -> f64 {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let v = text
                .trim()
                .strip_prefix("pi = ")
                .unwrap_or_else(|| panic!("no `pi = ` line in {text:?}"));
            v.parse().unwrap()
        };
        // 1,000 × 10,000 samples: the estimate's standard deviation is about 0.0005.
        let embedded = pi(output(
            Command::new(&program)
                .arg("10000")
                .env_remove("RASK_SCHEDULER_ADDRESS")
                .env("RASK_LOG", "warn"),
        ));
        assert!((embedded - std::f64::consts::PI).abs() < 0.01, "{embedded}");

        let cache = tmpfile("cache-pi");
        let _ = std::fs::remove_dir_all(&cache);
        let (_s, addr) = scheduler(&[]);
        let _w = stock_worker(&addr, "w1", &cache);
        rask::Client::connect(&addr)
            .unwrap()
            .wait_for_workers(1)
            .unwrap();
        let on_cluster = pi(output(
            Command::new(&program)
                .arg("10000")
                .env("RASK_SCHEDULER_ADDRESS", &addr)
                .env("RASK_LOG", "warn"),
        ));
        // The same seeds give the same counts wherever they run.
        assert_eq!(on_cluster, embedded);
        let p = &info(&addr).programs[0];
        assert_eq!((p.name.as_str(), p.uploads), ("pi", 1), "{p:?}");
        let _ = std::fs::remove_dir_all(&cache);
    });
}
