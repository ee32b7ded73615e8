//! Shared memory is shared only between one user's processes: abstract unix sockets have
//! no file permissions, so the holder refuses a peer of another user (SO_PEERCRED), and
//! a requester refuses a listener of another user. The other user is a `python3` process
//! run as `nobody`; the tests need root to start it (and say so when they cannot).

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rask_proto::msg::{Hello, Role};
use rask_transport::shm::Arena;
use rask_transport::{ConnConfig, TransportError};

const NOBODY: u32 = 65534;
const DEADLINE: Duration = Duration::from_secs(30);

/// Whether this process may start another user's: root only.
fn can_switch_users() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        println!("SKIPPED: starting a process of another user needs root");
    }
    root
}

/// `python3 -c script` as the user `nobody`, its stdout piped.
fn as_nobody(script: &str) -> std::process::Child {
    Command::new("python3")
        .args(["-c", script])
        .uid(NOBODY)
        .gid(NOBODY)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 runs the other user's side of these tests")
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_holder_refuses_a_peer_of_another_user() {
    if !can_switch_users() {
        return;
    }
    let (listener, addr) = rask_transport::listen_unix().unwrap();
    let (retire, _) = tokio::sync::broadcast::channel(4);
    let lookup: rask_transport::data::LookupFn = Arc::new(|tasks, _| (vec![], vec![], tasks));
    tokio::spawn(rask_transport::data::serve_unix(
        listener,
        ConnConfig::default(),
        Arena::new(1 << 20),
        retire,
        lookup,
    ));
    let name = addr.strip_prefix("unix:@").unwrap().to_string();
    // The other user connects and prints the frame it is sent (a 16-byte prefix whose
    // bytes 8..12 give the text's length, then the text).
    let script = format!(
        "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.settimeout(20)\ns.connect('\\0{name}')\nout=b''\nwant=16\nwhile len(out)<want:\n    b=s.recv(4096)\n    if not b: break\n    out+=b\n    if len(out)>=16: want=16+int.from_bytes(out[8:12],'little')\nsys.stdout.write(out.decode('latin-1'))\n"
    );
    let told = tokio::task::spawn_blocking(move || {
        let mut child = KillOnDrop(as_nobody(&script));
        let mut out = String::new();
        child
            .0
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        out
    });
    let told = tokio::time::timeout(DEADLINE, told)
        .await
        .expect("deadline")
        .unwrap();
    assert!(told.starts_with("RASK"), "a refusal frame: {told:?}");
    assert!(told.contains("runs as another user"), "{told:?}");
    // This user's own connection is served.
    let hello = Hello::new(Role::Peer, "same-user", rask_transport::host_id());
    tokio::time::timeout(
        DEADLINE,
        rask_transport::connect_unix(&addr, &hello, ConnConfig::default()),
    )
    .await
    .expect("deadline")
    .expect("the same user is served");
}

#[tokio::test]
async fn a_requester_refuses_a_listener_of_another_user() {
    if !can_switch_users() {
        return;
    }
    let name = format!("rask-test-other-user-{}", std::process::id());
    let script = format!(
        "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.bind('\\0{name}')\ns.listen(4)\nprint('ready',flush=True)\nwhile True:\n    c,_=s.accept()\n    c.recv(65536)\n"
    );
    let mut child = KillOnDrop(as_nobody(&script));
    let stdout = child.0.stdout.take().unwrap();
    let ready = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    });
    let line = tokio::time::timeout(DEADLINE, ready)
        .await
        .expect("deadline")
        .unwrap();
    assert_eq!(line.trim(), "ready");
    let hello = Hello::new(Role::Peer, "requester", rask_transport::host_id());
    let e = tokio::time::timeout(
        DEADLINE,
        rask_transport::connect_unix(&format!("unix:@{name}"), &hello, ConnConfig::default()),
    )
    .await
    .expect("deadline")
    .err()
    .expect("refused");
    assert!(
        matches!(e, TransportError::OtherUser { uid: NOBODY, .. }),
        "{e}"
    );
    drop(child);
}
