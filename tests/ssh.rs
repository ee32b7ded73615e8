//! A cluster started over SSH on three "hosts": network namespaces made by the test, each
//! running its own sshd (key-only, root, on port 22 of its own address). `SshCluster`
//! and `rask ssh` start the scheduler and workers over real ssh sessions; the test runs
//! work on them and checks that closing the cluster leaves no remote process. Needs root,
//! iproute2, openssh-server and openssh-client (ci/test.sh installs them).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rask::{Arg, Client};

mod common;

use common::{eventually, tmpfile, within, Proc, DEADLINE, RASK};

/// A key pair, host key and sshd per host: the daemons stop when dropped.
struct Sshd {
    dir: PathBuf,
    _daemons: Vec<Proc>,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self._daemons.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn sshd_on(lan: &common::Lan) -> Result<Sshd, String> {
    let sshd = Path::new("/usr/sbin/sshd");
    if !sshd.exists() {
        return Err("no /usr/sbin/sshd (openssh-server)".into());
    }
    let dir = tmpfile("ssh");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    std::fs::create_dir_all("/run/sshd").map_err(|e| format!("/run/sshd: {e}"))?;
    for key in ["hostkey", "id"] {
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(dir.join(key)))?;
    }
    std::fs::copy(dir.join("id.pub"), dir.join("authorized_keys")).map_err(|e| e.to_string())?;
    let mut daemons = Vec::new();
    for (i, (ns, addr)) in lan.hosts.iter().enumerate() {
        let config = dir.join(format!("sshd_config-{i}"));
        std::fs::write(
            &config,
            format!(
                "Port 22\nListenAddress {addr}\nHostKey {d}/hostkey\nPidFile {d}/sshd-{i}.pid\n\
                 AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 StrictModes no\n",
                d = dir.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        run(Command::new(sshd).arg("-t").arg("-f").arg(&config))?;
        daemons.push(Proc::new(
            Command::new("ip")
                .args(["netns", "exec", ns])
                .arg(sshd)
                .args(["-D", "-f"])
                .arg(&config)
                .arg("-E")
                .arg(dir.join(format!("sshd-{i}.log")))
                .stdin(Stdio::null())
                .spawn()
                .map_err(|e| format!("sshd: {e}"))?,
        ));
    }
    for (_, addr) in &lan.hosts {
        eventually(&format!("sshd listens on {addr}:22"), || {
            std::net::TcpStream::connect((addr.as_str(), 22)).is_ok()
        });
    }
    Ok(Sshd {
        dir,
        _daemons: daemons,
    })
}

fn options(sshd: &Sshd) -> rask::ssh::SshOptions {
    rask::ssh::SshOptions {
        user: Some("root".into()),
        identity: Some(sshd.dir.join("id")),
        options: vec![
            "StrictHostKeyChecking=no".into(),
            format!(
                "UserKnownHostsFile={}",
                sshd.dir.join("known_hosts").display()
            ),
            "LogLevel=ERROR".into(),
        ],
        remote_rask: RASK.into(),
        ..Default::default()
    }
}

/// The processes of this machine whose command line contains `text`.
fn processes_with(text: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        if stat.contains(") Z ") {
            continue;
        }
        if String::from_utf8_lossy(&cmdline)
            .replace('\0', " ")
            .contains(text)
        {
            out.push(pid);
        }
    }
    out
}

fn check_cluster(c: &Client, lan: &common::Lan, workers: usize) {
    c.wait_for_workers(workers).unwrap();
    let info = c.scheduler_info().unwrap();
    assert_eq!(info.workers.len(), workers);
    for w in &info.workers {
        // Named after its host, and announcing that host's address.
        let host = w.name.rsplit_once('-').unwrap().0;
        assert!(
            lan.hosts[1..].iter().any(|(_, a)| a == host),
            "{} is not on a worker host",
            w.name
        );
        assert!(w.addr.starts_with(&format!("tcp://{host}:")), "{w:?}");
    }
    let squares = c
        .map("mul", (0..200i64).map(|i| [Arg::from(i), Arg::from(i)]))
        .unwrap();
    let args: Vec<Arg> = squares.iter().map(Arg::from).collect();
    let total = c.submit("sum", args).unwrap();
    assert_eq!(total.result_as::<i64>().unwrap(), 2_646_700);
}

#[test]
fn ssh_cluster_starts_a_scheduler_and_workers_over_ssh_and_stops_them_all() {
    within(DEADLINE, || {
        let (lan, _) = match common::make_lan(3) {
            Ok(l) => l,
            Err(e) => return common::cannot_run(&format!("no network namespaces here: {e}")),
        };
        let sshd = match sshd_on(&lan) {
            Ok(s) => s,
            Err(e) => return common::cannot_run(&format!("no sshd here: {e}")),
        };
        let ips: Vec<String> = lan.hosts.iter().map(|(_, a)| a.clone()).collect();
        // The scheduler on the first host, a worker on the second, two on the third.
        let cluster = rask::ssh::SshCluster::builder([&ips[0], &ips[1], &ips[2], &ips[2]])
            .ssh_options(options(&sshd))
            .build()
            .unwrap();
        let addr = cluster.scheduler_address().to_string();
        assert!(
            addr.starts_with(&format!("tcp://{}:8786", ips[0])),
            "{addr}"
        );
        assert!(!processes_with(&addr).is_empty());
        let c = cluster.client().unwrap();
        check_cluster(&c, &lan, 3);
        drop(c);

        // Closing stops the remote processes, not only the ssh clients.
        cluster.close();
        eventually("no worker of the cluster is left", || {
            processes_with(&addr).is_empty()
        });
        assert!(
            std::net::TcpStream::connect((ips[0].as_str(), 8786)).is_err(),
            "the scheduler still listens"
        );

        // A host that cannot be reached (no one has its address on the bridge) fails
        // the build, naming it.
        let nobody = format!("{}.99", ips[0].rsplit_once('.').unwrap().0);
        let e = rask::ssh::SshCluster::builder([ips[0].as_str(), nobody.as_str()])
            .ssh_options({
                let mut o = options(&sshd);
                o.options.push("ConnectTimeout=2".into());
                o
            })
            .build()
            .err()
            .expect("an unreachable worker host");
        assert!(e.to_string().contains(&nobody), "{e}");
        eventually("the scheduler of the failed cluster is stopped", || {
            std::net::TcpStream::connect((ips[0].as_str(), 8786)).is_err()
        });
        drop(sshd);
        drop(lan);
    });
}

#[test]
fn rask_ssh_runs_a_cluster_until_it_is_stopped() {
    within(DEADLINE, || {
        let (lan, _) = match common::make_lan(2) {
            Ok(l) => l,
            Err(e) => return common::cannot_run(&format!("no network namespaces here: {e}")),
        };
        let sshd = match sshd_on(&lan) {
            Ok(s) => s,
            Err(e) => return common::cannot_run(&format!("no sshd here: {e}")),
        };
        let o = options(&sshd);
        let (a, b) = (&lan.hosts[0].1, &lan.hosts[1].1);
        let mut cmd = Command::new(RASK);
        cmd.args(["ssh", a, b, "--ssh-user", "root", "--remote-rask", RASK])
            .arg("-i")
            .arg(o.identity.as_ref().unwrap())
            .args(["--scheduler-options", "--host 0.0.0.0 --port 9786"]);
        for opt in &o.options {
            cmd.args(["-o", opt]);
        }
        let mut p = Proc::new(
            cmd.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let out = std::io::BufReader::new(p.0.stdout.take().unwrap());
        let err = p.0.stderr.take().unwrap();
        // Its streamed logs name the host they come from.
        let log = std::thread::spawn(move || {
            let mut text = String::new();
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                text.push_str(&line);
                text.push('\n');
            }
            text
        });
        let mut ready = String::new();
        for line in out.lines().map_while(Result::ok) {
            if line.contains("cluster ready") {
                ready = line;
                break;
            }
        }
        let addr = ready
            .split("scheduler at ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("no ready line: {ready:?}"))
            .to_string();
        assert_eq!(addr, format!("tcp://{a}:9786"));
        let c = Client::connect(&addr).unwrap();
        check_cluster(&c, &lan, 1);
        drop(c);
        // SIGTERM: it stops the cluster and ends cleanly.
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(p.0.id() as i32).unwrap(),
            rustix::process::Signal::TERM,
        )
        .unwrap();
        assert!(p.0.wait().unwrap().success());
        let log = log.join().unwrap();
        assert!(log.contains(&format!("[{a} scheduler]")), "{log}");
        assert!(log.contains(&format!("[{b} worker 0]")), "{log}");
        eventually("no process of the cluster is left", || {
            processes_with(&addr).is_empty() && processes_with("--port 9786").is_empty()
        });
        drop(sshd);
        drop(lan);
    });
}
