//! `rask::progress`: on a terminal (a pseudo-terminal here) it draws a bar that ends at
//! "4/4 tasks"; with standard error sent to a pipe it draws nothing. The program that
//! calls it is this test binary itself, run again as [`progress_of_four_tasks`].

mod common;

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};

use common::{within, Proc, DEADLINE};

/// Set in the environment of the process that plays [`progress_of_four_tasks`].
const CHILD: &str = "RASK_TEST_PROGRESS_CHILD";

/// The program the other tests run in a process of their own (it does nothing when run
/// as a test): four tasks on a local cluster, waited for with `rask::progress`.
#[test]
fn progress_of_four_tasks() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let cluster = rask::LocalCluster::builder().n_workers(1).build().unwrap();
    let client = rask::Client::for_cluster(cluster).unwrap();
    let futures = client
        .map("inc", (0..4i64).map(|i| [rask::Arg::from(i)]))
        .unwrap();
    if std::env::var_os("RASK_TEST_PROGRESS_BY_GATHER").is_some() {
        // No call to `progress`: `gather` draws the bar by itself on a terminal.
        let values: Vec<rask::Value> = client.gather(&futures).unwrap();
        assert_eq!(values.len(), 4);
        return;
    }
    rask::progress(&futures).unwrap();
    assert!(futures.iter().all(|f| f.done()));
    let values: Vec<i64> = futures.iter().map(|f| f.result_as().unwrap()).collect();
    assert_eq!(values, [1, 2, 3, 4]);
}

/// This binary, set to run only [`progress_of_four_tasks`] as the program, its standard
/// output (the test harness's) discarded.
fn child() -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["progress_of_four_tasks", "--exact", "--nocapture"])
        .env(CHILD, "1")
        // A terminal that can draw: indicatif draws nothing on a `dumb` one.
        .env("TERM", "xterm-256color")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    cmd
}

/// A pseudo-terminal of 24 rows and 80 columns: (its master side, its slave side), both
/// closed on exec (the child gets the slave as its standard error only).
fn pty() -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (-1, -1);
    let size = libc::winsize {
        ws_row: 24,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two descriptors into `master` and `slave`; the name and
    // terminal settings may be null, and `size` outlives the call.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
    for fd in [master, slave] {
        // SAFETY: `fd` is a descriptor openpty just opened; F_SETFD takes an int flag.
        let r = unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        assert_eq!(r, 0, "fcntl: {}", std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just opened here and nothing else owns them.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// Everything written to the terminal whose master side is `master`, until its slave
/// side is closed by every process that had it (Linux then fails the read with EIO).
fn read_terminal(master: OwnedFd) -> Vec<u8> {
    let mut f = std::fs::File::from(master);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("reading the terminal: {e}"),
        }
    }
    out
}

#[test]
fn on_a_terminal_the_bar_is_drawn_up_to_all_done() {
    within(DEADLINE, || {
        let (master, slave) = pty();
        let mut cmd = child();
        cmd.stderr(Stdio::from(slave));
        let mut p = Proc::new(cmd.spawn().expect("start the program"));
        // The command holds this process's copy of the slave side: without it, the
        // terminal ends when the program does.
        drop(cmd);
        let screen = String::from_utf8_lossy(&read_terminal(master)).into_owned();
        let status = p.0.wait().unwrap();
        assert!(status.success(), "{status}: {screen}");
        assert!(screen.contains("4/4 tasks"), "{screen:?}");
        assert!(screen.contains("100%"), "{screen:?}");
    });
}

/// What the program draws on a terminal with `env` set.
fn screen_with(env: &[(&str, &str)]) -> String {
    let (master, slave) = pty();
    let mut cmd = child();
    cmd.envs(env.iter().copied()).stderr(Stdio::from(slave));
    let mut p = Proc::new(cmd.spawn().expect("start the program"));
    drop(cmd);
    let screen = String::from_utf8_lossy(&read_terminal(master)).into_owned();
    let status = p.0.wait().unwrap();
    assert!(status.success(), "{status}: {screen}");
    screen
}

#[test]
fn gather_draws_the_bar_by_itself_on_a_terminal_unless_told_not_to() {
    within(DEADLINE, || {
        let screen = screen_with(&[("RASK_TEST_PROGRESS_BY_GATHER", "1")]);
        assert!(screen.contains("4/4 tasks"), "{screen:?}");
        let quiet = screen_with(&[
            ("RASK_TEST_PROGRESS_BY_GATHER", "1"),
            ("RASK_PROGRESS", "off"),
        ]);
        assert!(!quiet.contains("tasks"), "{quiet:?}");
    });
}

#[test]
fn without_a_terminal_nothing_is_drawn() {
    within(DEADLINE, || {
        let out = common::output(&mut child());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {err}", out.status);
        assert!(!err.contains("tasks"), "{err:?}");
        assert!(!err.contains('\x1b'), "{err:?}");
    });
}
