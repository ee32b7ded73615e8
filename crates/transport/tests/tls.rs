//! TLS on tcp connections: frames both ways over TLS, and every refusal — plaintext to a
//! TLS server and TLS to a plaintext one (each side saying so), a server certificate of
//! another CA or for another address, mutual TLS without a client certificate or with
//! one of another CA — with the errors each side sees.

mod certs;

use std::time::Duration;

use bytes::Bytes;
use certs::{Certs, Pair};
use rask_proto::msg::{DataItem, Hello, PeerMsg, Role};
use rask_proto::{Datum, TaskId, Value};
use rask_transport::{ConnConfig, FrameReader, TlsFiles, TransportError};

/// Every test's bound: a failure shows as a failure, not a hang.
const DEADLINE: Duration = Duration::from_secs(30);

fn hello() -> Hello {
    Hello::new(Role::Peer, "tls-test", rask_transport::host_id())
}

fn cfg(files: TlsFiles) -> ConnConfig {
    ConnConfig {
        tls: files.load().unwrap(),
        handshake_timeout: Duration::from_secs(10),
        ..ConnConfig::default()
    }
}

fn files(pair: Option<&Pair>, ca: Option<&Pair>) -> TlsFiles {
    TlsFiles {
        cert: pair.map(|p| p.cert.clone()),
        key: pair.map(|p| p.key.clone()),
        ca: ca.map(|c| c.cert.clone()),
        ..TlsFiles::default()
    }
}

/// Serves one connection: its start (TLS or not) and handshake, then echoes every
/// `Data` message back with its buffers. Ends with the server side's outcome.
async fn serve_one(
    cfg: ConnConfig,
) -> (
    String,
    tokio::task::JoinHandle<Result<bool, TransportError>>,
) {
    let listener = rask_transport::listen("127.0.0.1:0").await.unwrap();
    let addr = rask_transport::listener_addr(&listener).unwrap();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (r, mut w) = rask_transport::accept_tcp(stream, &cfg).await?;
        let tls = r.is_tls();
        let mut reader = FrameReader::new(r, cfg.clone());
        if let Err(e) = rask_transport::accept(&mut reader, &mut w, &cfg).await {
            rask_transport::refuse_after(&mut w, &e).await;
            return Err(e);
        }
        rask_transport::welcome(&mut w, &reader, 5).await?;
        let tx = rask_transport::spawn_writer::<PeerMsg, _>(w);
        while let Some(b) = reader.read_batch::<PeerMsg>().await? {
            for m in b.msgs {
                tx.send_with(m, b.bufs.clone())?;
            }
        }
        Ok(tls)
    });
    (addr, server)
}

/// Connects with `cfg`, sends values with payloads of several sizes (up to 4 MiB, past
/// TLS's 16 KiB records) and checks they come back whole.
async fn echo(addr: &str, cfg: ConnConfig) -> Result<(), TransportError> {
    let (mut reader, w, id) = rask_transport::connect(addr, &hello(), cfg).await?;
    assert_eq!(id, 5);
    assert!(reader.get_mut().is_tls());
    let tx = rask_transport::spawn_writer::<PeerMsg, _>(w);
    let sizes = [0usize, 1, 16 << 10, (16 << 10) + 1, 4 << 20];
    for (i, n) in sizes.iter().enumerate() {
        let payload = Bytes::from((0..*n).map(|k| (k * 31 + i) as u8).collect::<Vec<u8>>());
        tx.send_with(
            PeerMsg::Data {
                req: i as u64,
                items: vec![DataItem {
                    task: TaskId(i as u64),
                    value: Datum::List(vec![Datum::Int(i as i64), Datum::Buf(0)]),
                }],
                missing: vec![],
            },
            vec![payload],
        )?;
    }
    let mut got = 0;
    while got < sizes.len() {
        let b = reader.read_batch::<PeerMsg>().await?.expect("echoes");
        for m in b.msgs {
            let PeerMsg::Data { req, items, .. } = m else {
                panic!("not data")
            };
            let v = items[0].value.to_value(&b.bufs, &[]).unwrap();
            let i = req as usize;
            let want: Vec<u8> = (0..sizes[i]).map(|k| (k * 31 + i) as u8).collect();
            assert_eq!(
                v,
                Value::List(vec![Value::Int(i as i64), Value::Bytes(want.into())])
            );
            got += 1;
        }
    }
    Ok(())
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, f)
        .await
        .expect("the test's deadline passed")
}

#[tokio::test]
async fn frames_go_both_ways_over_tls_checked_against_the_ca_and_the_address() {
    within(async {
        let c = Certs::new("echo");
        let ca = c.ca("ca");
        let server = c.leaf(&ca, "server", "IP:127.0.0.1");
        let (addr, srv) = serve_one(cfg(files(Some(&server), Some(&ca)))).await;
        echo(&addr, cfg(files(None, Some(&ca)))).await.unwrap();
        assert!(srv.await.unwrap().unwrap(), "the server side was TLS");
    })
    .await
}

#[tokio::test]
async fn a_plaintext_client_is_told_the_server_requires_tls() {
    within(async {
        let c = Certs::new("plain-client");
        let ca = c.ca("ca");
        let server = c.leaf(&ca, "server", "IP:127.0.0.1");
        let (addr, srv) = serve_one(cfg(files(Some(&server), Some(&ca)))).await;
        let e = rask_transport::connect(&addr, &hello(), ConnConfig::default())
            .await
            .err()
            .expect("refused");
        let TransportError::Refused(reason) = &e else {
            panic!("{e}")
        };
        assert!(reason.contains("requires TLS"), "{reason}");
        assert!(reason.contains("--tls-ca"), "{reason}");
        let server_side = srv.await.unwrap().unwrap_err();
        assert!(
            matches!(server_side, TransportError::TlsRequired),
            "{server_side}"
        );
        assert!(server_side.to_string().contains("requires TLS"));
    })
    .await
}

#[tokio::test]
async fn a_tls_client_is_refused_by_a_plaintext_server_and_says_so() {
    within(async {
        let c = Certs::new("plain-server");
        let ca = c.ca("ca");
        let (addr, srv) = serve_one(ConnConfig::default()).await;
        let e = rask_transport::connect(&addr, &hello(), cfg(files(None, Some(&ca))))
            .await
            .err()
            .expect("refused");
        assert!(matches!(e, TransportError::NotTls(_)), "{e}");
        assert!(e.to_string().contains("does not use TLS"), "{e}");
        let server_side = srv.await.unwrap().unwrap_err();
        assert!(
            matches!(server_side, TransportError::UnexpectedTls),
            "{server_side}"
        );
        assert!(
            server_side
                .to_string()
                .contains("this server does not use TLS"),
            "{server_side}"
        );
    })
    .await
}

#[tokio::test]
async fn a_server_certificate_of_another_ca_is_refused() {
    within(async {
        let c = Certs::new("wrong-ca");
        let ca = c.ca("ca");
        let other = c.ca("other");
        let server = c.leaf(&other, "server", "IP:127.0.0.1");
        let (addr, srv) = serve_one(cfg(files(Some(&server), Some(&other)))).await;
        let e = rask_transport::connect(&addr, &hello(), cfg(files(None, Some(&ca))))
            .await
            .err()
            .expect("refused");
        assert!(matches!(e, TransportError::Tls(_)), "{e}");
        assert!(
            e.to_string().contains("not signed by this cluster's CA"),
            "{e}"
        );
        // The server saw its handshake fail (the client's alert), and served nothing.
        assert!(srv.await.unwrap().is_err());
    })
    .await
}

#[tokio::test]
async fn a_certificate_for_another_address_is_refused_unless_checked_by_ca_only() {
    within(async {
        let c = Certs::new("name");
        let ca = c.ca("ca");
        // Signed by the right CA, for an address that is not the one dialled.
        let server = c.leaf(&ca, "server", "IP:192.0.2.7,DNS:node7.example");
        let (addr, _srv) = serve_one(cfg(files(Some(&server), Some(&ca)))).await;
        let e = rask_transport::connect(&addr, &hello(), cfg(files(None, Some(&ca))))
            .await
            .err()
            .expect("refused");
        assert!(
            e.to_string().contains("does not name the address dialled"),
            "{e}"
        );
        // By CA only, the same certificate is accepted...
        let (addr, srv) = serve_one(cfg(files(Some(&server), Some(&ca)))).await;
        let ca_only = TlsFiles {
            ca_only: true,
            ..files(None, Some(&ca))
        };
        echo(&addr, cfg(ca_only.clone())).await.unwrap();
        assert!(srv.await.unwrap().unwrap());
        // ... but never one of another CA.
        let other = c.ca("other");
        let stranger = c.leaf(&other, "stranger", "IP:127.0.0.1");
        let (addr, _srv) = serve_one(cfg(files(Some(&stranger), Some(&other)))).await;
        let e = rask_transport::connect(&addr, &hello(), cfg(ca_only))
            .await
            .err()
            .expect("refused");
        assert!(
            e.to_string().contains("not signed by this cluster's CA"),
            "{e}"
        );
    })
    .await
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate_of_the_ca() {
    within(async {
        let c = Certs::new("mtls");
        let ca = c.ca("ca");
        let other = c.ca("other");
        let server = c.leaf(&ca, "server", "IP:127.0.0.1");
        let client = c.leaf(&ca, "client", "DNS:client");
        let impostor = c.leaf(&other, "impostor", "DNS:client");
        let mtls = || {
            cfg(TlsFiles {
                require_client_cert: true,
                ..files(Some(&server), Some(&ca))
            })
        };
        // No certificate: the client is told what to give.
        let (addr, srv) = serve_one(mtls()).await;
        let e = rask_transport::connect(&addr, &hello(), cfg(files(None, Some(&ca))))
            .await
            .err()
            .expect("refused");
        assert!(
            e.to_string().contains("requires a client certificate"),
            "{e}"
        );
        let server_side = srv.await.unwrap().unwrap_err();
        assert!(
            server_side.to_string().contains("presented no certificate"),
            "{server_side}"
        );
        // A certificate of another CA.
        let (addr, srv) = serve_one(mtls()).await;
        let e = rask_transport::connect(&addr, &hello(), cfg(files(Some(&impostor), Some(&ca))))
            .await
            .err()
            .expect("refused");
        assert!(matches!(e, TransportError::Tls(_)), "{e}");
        let server_side = srv.await.unwrap().unwrap_err();
        assert!(
            server_side
                .to_string()
                .contains("not signed by this cluster's CA"),
            "{server_side}"
        );
        // The cluster's own.
        let (addr, srv) = serve_one(mtls()).await;
        echo(&addr, cfg(files(Some(&client), Some(&ca))))
            .await
            .unwrap();
        assert!(srv.await.unwrap().unwrap());
    })
    .await
}

#[tokio::test]
async fn tls_and_the_shared_secret_go_together() {
    within(async {
        let c = Certs::new("secret");
        let ca = c.ca("ca");
        let server = c.leaf(&ca, "server", "IP:127.0.0.1");
        let secret = || Some(rask_transport::Secret::new(b"s3cret".to_vec()));
        let (addr, srv) = serve_one(ConnConfig {
            auth: secret(),
            ..cfg(files(Some(&server), Some(&ca)))
        })
        .await;
        echo(
            &addr,
            ConnConfig {
                auth: secret(),
                ..cfg(files(None, Some(&ca)))
            },
        )
        .await
        .unwrap();
        eprintln!("echo done");
        assert!(srv.await.unwrap().unwrap());
        eprintln!("server done");
        // Inside TLS, a wrong secret is still refused.
        let (addr, _srv) = serve_one(ConnConfig {
            auth: secret(),
            ..cfg(files(Some(&server), Some(&ca)))
        })
        .await;
        let e = rask_transport::connect(
            &addr,
            &hello(),
            ConnConfig {
                auth: Some(rask_transport::Secret::new(b"guess".to_vec())),
                ..cfg(files(None, Some(&ca)))
            },
        )
        .await
        .err()
        .expect("refused");
        assert!(matches!(e, TransportError::AuthFailed(_)), "{e}");
    })
    .await
}

/// HTTPS for the cluster's HTTP servers: a peer that connects and sends nothing holds
/// no one up (its handshake waits on a task of its own, for up to 10 s), a TLS client's
/// connection is handed on with its handshake done, and plain HTTP is told to use
/// https://.
#[tokio::test]
async fn https_hands_on_tls_connections_past_a_silent_peer_and_answers_plain_http() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    within(async {
        let c = Certs::new("https");
        let ca = c.ca("ca");
        let server = c.leaf(&ca, "server", "IP:127.0.0.1");
        let tls = files(Some(&server), Some(&ca)).load().unwrap().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut incoming = rask_transport::tls::HttpsIncoming::new(listener, &tls).unwrap();
        let addr = incoming.local_addr();

        let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&ca.cert).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        // The provider the cluster uses (see `TlsFiles::load`).
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let local = tcp.local_addr().unwrap();
        let connecting = tokio::spawn(async move {
            let mut s = tokio_rustls::TlsConnector::from(Arc::new(client))
                .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
                .await
                .unwrap();
            s.write_all(b"ping").await.unwrap();
            s
        });
        // Handed on before the silent peer's handshake could time out.
        let (mut conn, peer) = tokio::time::timeout(Duration::from_secs(5), incoming.accept())
            .await
            .expect("a TLS client waited behind a silent peer");
        assert_eq!(peer, local);
        let _client = connecting.await.unwrap();
        let mut got = [0u8; 4];
        conn.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");

        let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
        plain
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        plain.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
        assert!(
            answer.ends_with(&format!("{}\n", rask_transport::tls::HTTPS_REQUIRED)),
            "{answer}"
        );
    })
    .await
}
