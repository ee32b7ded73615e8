//! A TLS cluster of real processes: `rask scheduler` and `rask worker --nworkers 2`
//! (the worker processes get the TLS options from their supervisor), data moving between
//! the workers and to the client over tcp, all in TLS, and an exact result. Then who is
//! refused and what each side says: a plaintext client or worker, a client trusting
//! another CA, and, with mutual TLS, a client without a certificate. A `LocalCluster`
//! built with TLS, its dashboard and its workers' `/metrics` over HTTPS.

#[path = "../crates/transport/tests/certs/mod.rs"]
mod certs;
mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use certs::{Certs, Pair};
use common::{eventually, output, tmpfile, within, Proc, DEADLINE, RASK};
use rask::{Arg, Client, ClientOptions};
use rask_transport::{TlsFiles, TransportMode};

fn tls_args(node: &Pair, ca: &Pair) -> Vec<String> {
    [
        "--tls-cert",
        node.cert.to_str().unwrap(),
        "--tls-key",
        node.key.to_str().unwrap(),
        "--tls-ca",
        ca.cert.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec()
}

/// `rask scheduler` on a free port with `extra` options, its log written to `log`;
/// returns it and its address.
fn scheduler(extra: &[String], log: &Path) -> (Proc, String) {
    let file = tmpfile(&format!("tls-sched-{}", log.display().to_string().len()));
    let _ = std::fs::remove_file(&file);
    let mut p = Proc::new(
        Command::new(RASK)
            .args([
                "scheduler",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
            ])
            .arg(&file)
            .args(extra)
            .env("RASK_LOG", "warn")
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("start rask scheduler"),
    );
    let mut addr = String::new();
    eventually("the scheduler writes its address", || {
        if let Ok(Some(status)) = p.0.try_wait() {
            panic!(
                "the scheduler exited: {status}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        addr = std::fs::read_to_string(&file)
            .unwrap_or_default()
            .trim()
            .to_string();
        !addr.is_empty()
    });
    let _ = std::fs::remove_file(&file);
    (p, addr)
}

fn tls_client(addr: &str, tls: TlsFiles) -> Result<Client, String> {
    let mut opts = ClientOptions {
        transport: Some(TransportMode::Tcp),
        ..ClientOptions::default()
    };
    opts.conn.tls = tls.load().unwrap();
    Client::connect_with(addr, opts).map_err(|e| e.to_string())
}

fn trusting(ca: &Pair, pair: Option<&Pair>) -> TlsFiles {
    TlsFiles {
        cert: pair.map(|p| p.cert.clone()),
        key: pair.map(|p| p.key.clone()),
        ca: Some(ca.cert.clone()),
        ..TlsFiles::default()
    }
}

#[test]
fn a_tls_cluster_of_worker_processes_computes_exactly_and_refuses_plaintext() {
    within(DEADLINE, || {
        let c = Certs::new("cluster");
        let ca = c.ca("ca");
        let node = c.leaf(&ca, "node", "IP:127.0.0.1");
        let log = tmpfile("tls-cluster-scheduler.log");
        let (_sched, addr) = scheduler(&tls_args(&node, &ca), &log);
        // Two worker processes started by one `rask worker`, data between them over tcp.
        let mut w = Command::new(RASK);
        w.args(["worker", &addr, "--nworkers", "2", "--nthreads", "1"])
            .args(["--transport", "tcp", "--no-dashboard", "--name", "tlsw"])
            .args(tls_args(&node, &ca))
            .env("RASK_LOG", "warn")
            .stdin(Stdio::null());
        let _workers = Proc::new(w.spawn().expect("start rask worker"));
        let client = tls_client(&addr, trusting(&ca, None)).expect("a TLS client joins");
        client.wait_for_workers(2).unwrap();
        // Σ i² for i < 400 by a tree of additions: leaves on both workers, partial sums
        // moving between them, the total gathered by the client from its holder.
        let n = 400i64;
        let mut level = client
            .map("mul", (0..n).map(|i| [Arg::from(i), Arg::from(i)]))
            .unwrap();
        while level.len() > 1 {
            let mut next = Vec::new();
            for pair in level.chunks(2) {
                let args: Vec<Arg> = pair.iter().map(Arg::from).collect();
                next.push(client.submit("add", args).unwrap());
            }
            level = next;
        }
        let total: i64 = level[0].result_as().unwrap();
        assert_eq!(total, (n - 1) * n * (2 * n - 1) / 6);
        let mut received = 0;
        eventually(
            "a worker reports bytes received from its peer over tcp",
            || {
                received = client
                    .scheduler_info()
                    .unwrap()
                    .workers
                    .iter()
                    .flat_map(|w| w.received.iter())
                    .filter(|(link, _)| link == "tcp")
                    .map(|(_, b)| *b)
                    .sum::<u64>();
                received > 0
            },
        );
        // Every worker joined over TLS: two started by one supervisor.
        let info = client.scheduler_info().unwrap();
        let mut names: Vec<String> = info.workers.iter().map(|w| w.name.clone()).collect();
        names.sort();
        assert_eq!(names, ["tlsw-0", "tlsw-1"]);

        // A plaintext client is told the scheduler requires TLS; the scheduler logs it
        // with the client's address.
        let e = client_plain(&addr);
        assert!(e.contains("requires TLS"), "{e}");
        assert!(e.contains(addr.trim_start_matches("tcp://")), "{e}");
        eventually("the scheduler logs the plaintext peer", || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.lines().any(|l| {
                l.contains("peer=127.0.0.1:")
                    && l.contains("spoke plaintext and this server requires TLS")
            })
        });
        // A plaintext worker is refused too, and says why.
        let out = output(
            Command::new(RASK)
                .args(["worker", &addr, "--nthreads", "1", "--death-timeout", "5"])
                .args(["--no-dashboard", "--name", "plain"])
                .env("RASK_LOG", "warn"),
        );
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("requires TLS"), "{err}");
        // A client that trusts another CA refuses the scheduler.
        let other = c.ca("other");
        let e = tls_client(&addr, trusting(&other, None))
            .err()
            .expect("refused");
        assert!(e.contains("not signed by this cluster's CA"), "{e}");
        // The cluster is still whole.
        assert_eq!(client.scheduler_info().unwrap().workers.len(), 2);
        let _ = std::fs::remove_file(&log);
    })
}

fn client_plain(addr: &str) -> String {
    Client::connect_with(addr, ClientOptions::default())
        .err()
        .expect("a plaintext client is refused")
        .to_string()
}

#[test]
fn with_mutual_tls_a_client_needs_a_certificate_of_the_ca() {
    within(DEADLINE, || {
        let c = Certs::new("mtls");
        let ca = c.ca("ca");
        let node = c.leaf(&ca, "node", "IP:127.0.0.1");
        let user = c.leaf(&ca, "user", "DNS:user");
        let log = tmpfile("tls-mtls-scheduler.log");
        let mut args = tls_args(&node, &ca);
        args.push("--tls-require-client-cert".into());
        let (_sched, addr) = scheduler(&args, &log);
        let e = tls_client(&addr, trusting(&ca, None))
            .err()
            .expect("no certificate: refused");
        assert!(e.contains("requires a client certificate"), "{e}");
        assert!(e.contains("--tls-cert"), "{e}");
        eventually("the scheduler logs the peer without a certificate", || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.lines()
                .any(|l| l.contains("peer=127.0.0.1:") && l.contains("presented no certificate"))
        });
        // With one, the client is in, and a worker (its certificate doubles as a client
        // certificate) runs its tasks.
        let _worker = Proc::new(
            Command::new(RASK)
                .args(["worker", &addr, "--nthreads", "1", "--no-dashboard"])
                .args(["--name", "mw", "--tls-require-client-cert"])
                .args(tls_args(&node, &ca))
                .env("RASK_LOG", "warn")
                .stdin(Stdio::null())
                .spawn()
                .expect("start rask worker"),
        );
        let client =
            tls_client(&addr, trusting(&ca, Some(&user))).expect("a client with a certificate");
        client.wait_for_workers(1).unwrap();
        let f = client
            .submit("add", [Arg::from(40i64), Arg::from(2i64)])
            .unwrap();
        assert_eq!(f.result_as::<i64>().unwrap(), 42);
        let _ = std::fs::remove_file(&log);
    })
}

#[test]
fn a_worker_without_a_certificate_is_told_what_to_give() {
    within(DEADLINE, || {
        let c = Certs::new("worker-options");
        let ca = c.ca("ca");
        let out = output(
            Command::new(RASK)
                .args(["worker", "tcp://127.0.0.1:9", "--no-dashboard"])
                .arg("--tls-ca")
                .arg(&ca.cert)
                .env("RASK_LOG", "warn"),
        );
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--tls-cert and --tls-key"), "{err}");
    })
}

/// A GET of `url` (`https://HOST:PORT/PATH`) by `openssl s_client`, checking the server
/// against `ca` and its IP address, presenting `cert` if given: what the server sent
/// (head and body), or why the connection failed.
fn https_get(url: &str, ca: &Pair, cert: Option<&Pair>) -> Result<String, String> {
    let rest = url.strip_prefix("https://").expect("an https:// URL");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let ip = host.rsplit_once(':').unwrap().0;
    // Killed after 30 s: a hang fails the test and leaves no process behind.
    let mut cmd = Command::new("timeout");
    cmd.args([
        "30",
        "openssl",
        "s_client",
        "-quiet",
        "-verify_return_error",
        "-connect",
        host,
    ])
    .args(["-verify_ip", ip, "-CAfile"])
    .arg(&ca.cert);
    if let Some(p) = cert {
        cmd.arg("-cert").arg(&p.cert).arg("-key").arg(&p.key);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the TLS tests need the openssl command");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        let request = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        // The server may end the connection before the request is read (no certificate).
        let _ = stdin.write_all(request.as_bytes());
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    if stdout.starts_with("HTTP/1.1 ") {
        Ok(stdout)
    } else {
        Err(format!("{}{stdout}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// The body of a `200` answer.
fn body_of_200(url: &str, answer: &str) -> String {
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{url}: {head}");
    body.to_string()
}

/// The base64 SHA-256 of a certificate's public key: what Chromium is told to trust.
fn spki_hash(cert: &Path) -> String {
    let out = output(Command::new("sh").arg("-c").arg(format!(
        "openssl x509 -in '{}' -pubkey -noout | openssl pkey -pubin -outform der \
         | openssl dgst -sha256 -binary | base64",
        cert.display()
    )));
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A `LocalCluster` built with TLS: its worker processes get the files, the client it
/// gives connects with them, and the dashboard and each worker's `/metrics` are served
/// over HTTPS with the cluster's certificate, checked by a real browser and by openssl
/// (plain HTTP is told to use https://). With client certificates required, the
/// dashboard requires one too.
#[test]
fn a_local_cluster_with_tls_serves_its_dashboard_and_metrics_over_https() {
    within(DEADLINE, || {
        let c = Certs::new("local");
        let ca = c.ca("ca");
        let node = c.leaf(&ca, "node", "IP:127.0.0.1");
        let user = c.leaf(&ca, "user", "DNS:user");
        let cluster = rask::LocalCluster::builder()
            .n_workers(2)
            .processes(true)
            .worker_binary(RASK)
            .tls(TlsFiles {
                cert: Some(node.cert.clone()),
                key: Some(node.key.clone()),
                ca: Some(ca.cert.clone()),
                ..TlsFiles::default()
            })
            .dashboard("127.0.0.1:0")
            .build()
            .unwrap();
        let address = cluster.scheduler_address().to_string();
        let client = Client::for_cluster(cluster).unwrap();
        let f = client
            .submit("add", [Arg::from(40i64), Arg::from(2i64)])
            .unwrap();
        assert_eq!(f.result_as::<i64>().unwrap(), 42);
        // Only TLS gets in.
        let e = client_plain(&address);
        assert!(e.contains("requires TLS"), "{e}");

        let info = client.scheduler_info().unwrap();
        let base = info.dashboard.trim_end_matches("/status").to_string();
        assert!(base.starts_with("https://127.0.0.1:"), "{base}");
        let metrics = body_of_200(
            "/metrics",
            &https_get(&format!("{base}/metrics"), &ca, None).unwrap(),
        );
        assert!(
            metrics.contains("dask_scheduler_workers_added_total 2"),
            "{metrics}"
        );
        assert_eq!(info.workers.len(), 2);
        for w in &info.workers {
            assert!(w.dashboard.starts_with("https://127.0.0.1:"), "{w:?}");
            let url = format!("{}/metrics", w.dashboard);
            let text = body_of_200(&url, &https_get(&url, &ca, None).unwrap());
            assert!(text.contains("dask_worker_threads 1"), "{url}: {text}");
        }
        let refused = common::plain_http_get(&format!("{base}/metrics"));
        assert!(refused.starts_with("HTTP/1.1 400"), "{refused}");
        assert!(refused.contains("use https://"), "{refused}");
        // The status page in a browser that trusts the cluster's key: its scripts fetch
        // the workers over HTTPS too.
        if common::have("chromium") {
            let out = Command::new("timeout")
                .args([
                    "90",
                    "chromium",
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                ])
                .args(["--disable-background-networking", "--no-first-run"])
                .arg(format!(
                    "--ignore-certificate-errors-spki-list={}",
                    spki_hash(&node.cert)
                ))
                .args(["--virtual-time-budget=4000", "--dump-dom"])
                .arg(format!("{base}/workers"))
                .output()
                .expect("running chromium");
            let dom = String::from_utf8_lossy(&out.stdout);
            for w in &info.workers {
                let row = format!("data-address=\"{}\"", w.addr);
                assert!(dom.contains(&row), "no {row} in\n{dom}\n{out:?}");
            }
        } else {
            println!("SKIPPED (no chromium): the page in a browser over HTTPS");
        }
        drop(client);

        // Client certificates required: the dashboard asks for one too.
        let cluster = rask::LocalCluster::builder()
            .n_workers(1)
            .tls(TlsFiles {
                cert: Some(node.cert.clone()),
                key: Some(node.key.clone()),
                ca: Some(ca.cert.clone()),
                require_client_cert: true,
                ..TlsFiles::default()
            })
            .dashboard("127.0.0.1:0")
            .build()
            .unwrap();
        let client = Client::for_cluster(cluster).unwrap();
        let url = client.scheduler_info().unwrap().dashboard;
        let url = url.replace("/status", "/health");
        let e = https_get(&url, &ca, None).expect_err("no client certificate: refused");
        assert!(e.contains("certificate required"), "{e}");
        let ok = https_get(&url, &ca, Some(&user)).unwrap();
        assert_eq!(body_of_200(&url, &ok), "ok");
    })
}
