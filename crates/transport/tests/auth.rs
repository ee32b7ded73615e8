//! The shared-secret handshake against an active attacker: a peer that does not know the
//! secret gets nothing to guess it from offline (the connecting side proves first, the
//! server's proof comes only after), and a hello changed on the way — a worker's
//! announced addresses rewritten by a man in the middle — fails the proof on both sides.

use std::time::Duration;

use rask_proto::frame;
use rask_proto::msg::{AuthProof, Hello, HelloReply, Role, WorkerHello};
use rask_transport::{ConnConfig, FrameReader, Secret, TransportError};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

const DEADLINE: Duration = Duration::from_secs(30);

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, f)
        .await
        .expect("the test's deadline passed")
}

fn secret() -> Secret {
    Secret::new(b"correct horse battery staple".to_vec())
}

fn authenticated() -> ConnConfig {
    ConnConfig {
        auth: Some(secret()),
        ..ConnConfig::default()
    }
}

fn worker_hello(listen_addr: &str, shm_addr: &str) -> Hello {
    let mut h = Hello::new(Role::Worker, "w", rask_transport::host_id());
    h.worker = Some(WorkerHello {
        listen_addr: listen_addr.into(),
        shm_addr: shm_addr.into(),
        transport: "auto".into(),
        device: "host".into(),
        device_name: String::new(),
        gpu: None,
        nvlink: vec![],
        device_memory_limit: 0,
        device_spill_at: 0,
        nthreads: 1,
        memory_limit: 1 << 30,
        resources: vec![],
        code: 0,
        runs_programs: false,
        dashboard: String::new(),
        holds: false,
    });
    h
}

/// A server that takes one connection with `cfg`: the hello it accepted, or why not.
async fn server(
    cfg: ConnConfig,
) -> (
    TcpListener,
    impl FnOnce(TcpListener) -> tokio::task::JoinHandle<Result<Hello, TransportError>>,
) {
    let listener = rask_transport::listen("127.0.0.1:0").await.unwrap();
    let serve = move |listener: TcpListener| {
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (r, mut w) = rask_transport::accept_tcp(stream, &cfg).await?;
            let mut reader = FrameReader::new(r, cfg.clone());
            match rask_transport::accept(&mut reader, &mut w, &cfg).await {
                Ok(hello) => {
                    rask_transport::welcome(&mut w, &reader, 3).await?;
                    Ok(hello)
                }
                Err(e) => {
                    rask_transport::refuse_after(&mut w, &e).await;
                    Err(e)
                }
            }
        })
    };
    (listener, serve)
}

#[tokio::test]
async fn a_peer_without_the_secret_gets_no_proof_of_it() {
    within(async {
        let (listener, serve) = server(authenticated()).await;
        let addr = listener.local_addr().unwrap();
        let srv = serve(listener);
        // A raw peer: says hello, then cannot prove the secret.
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (r, mut w) = stream.into_split();
        let mut reader = FrameReader::new(r, ConnConfig::default());
        let hello = worker_hello("tcp://127.0.0.1:1", "");
        w.write_all(&frame::encode_frame(&frame::encode_header(&hello), &[]))
            .await
            .unwrap();
        // The server's first answer is its nonce alone: nothing computed from the secret.
        let f = reader.read_frame().await.unwrap().expect("a challenge");
        let reply: HelloReply = frame::decode_header(&f.header).unwrap();
        let HelloReply::Challenge { nonce } = reply else {
            panic!("the server answered a hello with {reply:?} before any proof")
        };
        assert_ne!(nonce, [0; 32]);
        let guess = AuthProof { proof: [7; 32] };
        w.write_all(&frame::encode_frame(&frame::encode_header(&guess), &[]))
            .await
            .unwrap();
        // A wrong proof is answered by a refusal, never by a welcome carrying the
        // server's proof.
        let e = reader.read_frame().await.err().expect("refused");
        let TransportError::Refused(reason) = e else {
            panic!("{e}")
        };
        assert!(reason.starts_with("authentication failed"), "{reason}");
        assert!(matches!(
            srv.await.unwrap(),
            Err(TransportError::AuthFailed(_))
        ));
    })
    .await
}

/// Sits between a client and `server`, passes everything through, but rewrites the
/// first frame (the client's hello) with `tamper`.
async fn man_in_the_middle(
    server: std::net::SocketAddr,
    tamper: impl FnOnce(&mut Hello) + Send + 'static,
) -> String {
    let listener = rask_transport::listen("127.0.0.1:0").await.unwrap();
    let addr = rask_transport::listener_addr(&listener).unwrap();
    tokio::spawn(async move {
        let (mut client, _) = listener.accept().await.unwrap();
        let mut upstream = tokio::net::TcpStream::connect(server).await.unwrap();
        let mut reader = FrameReader::new(&mut client, ConnConfig::default());
        let f = reader.read_frame().await.unwrap().unwrap();
        let mut hello: Hello = frame::decode_header(&f.header).unwrap();
        tamper(&mut hello);
        upstream
            .write_all(&frame::encode_frame(&frame::encode_header(&hello), &[]))
            .await
            .unwrap();
        drop(reader);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    });
    addr
}

/// A change a man in the middle makes to a hello.
type Tamper = Box<dyn FnOnce(&mut Hello) + Send>;

#[tokio::test]
async fn a_worker_hello_changed_on_the_way_fails_the_proof() {
    within(async {
        let tampers: Vec<Tamper> = vec![
            Box::new(|h: &mut Hello| {
                h.worker.as_mut().unwrap().listen_addr = "tcp://203.0.113.66:4000".into()
            }),
            Box::new(|h: &mut Hello| h.worker.as_mut().unwrap().shm_addr = "unix:@attacker".into()),
            Box::new(|h: &mut Hello| h.name = "someone-else".into()),
        ];
        for tamper in tampers {
            let (listener, serve) = server(authenticated()).await;
            let upstream = listener.local_addr().unwrap();
            let srv = serve(listener);
            let via = man_in_the_middle(upstream, tamper).await;
            let hello = worker_hello("tcp://127.0.0.1:4000", "unix:@rask-w");
            let client = rask_transport::connect(&via, &hello, authenticated()).await;
            // The server does not take the changed hello...
            let server_side = srv.await.unwrap();
            assert!(
                matches!(server_side, Err(TransportError::AuthFailed(_))),
                "the server accepted a changed hello: {server_side:?}"
            );
            // ... and the client is told it was refused.
            let e = client.err().expect("refused");
            assert!(matches!(e, TransportError::AuthFailed(_)), "{e}");
        }
        // Untouched, the same hello passes through the same relay.
        let (listener, serve) = server(authenticated()).await;
        let upstream = listener.local_addr().unwrap();
        let srv = serve(listener);
        let via = man_in_the_middle(upstream, |_| {}).await;
        let hello = worker_hello("tcp://127.0.0.1:4000", "unix:@rask-w");
        let (_, _, id) = rask_transport::connect(&via, &hello, authenticated())
            .await
            .unwrap();
        assert_eq!(id, 3);
        let got = srv.await.unwrap().unwrap();
        assert_eq!(got.worker.unwrap().listen_addr, "tcp://127.0.0.1:4000");
    })
    .await
}

#[tokio::test]
async fn the_servers_proof_covers_the_id_it_gives() {
    within(async {
        // A relay that passes the client's hello and proof through but changes the id in
        // the server's welcome: the client must notice.
        let (listener, serve) = server(authenticated()).await;
        let upstream = listener.local_addr().unwrap();
        let srv = serve(listener);
        let relay = rask_transport::listen("127.0.0.1:0").await.unwrap();
        let via = rask_transport::listener_addr(&relay).unwrap();
        tokio::spawn(async move {
            let (client, _) = relay.accept().await.unwrap();
            let upstream = tokio::net::TcpStream::connect(upstream).await.unwrap();
            let (cr, mut cw) = client.into_split();
            let (ur, mut uw) = upstream.into_split();
            let mut from_client = FrameReader::new(cr, ConnConfig::default());
            let mut from_server = FrameReader::new(ur, ConnConfig::default());
            // hello →, ← challenge, proof →, ← welcome (changed).
            for step in 0..4 {
                let (from, to) = if step % 2 == 0 {
                    (&mut from_client, &mut uw)
                } else {
                    (&mut from_server, &mut cw)
                };
                let f = from.read_frame().await.unwrap().unwrap();
                let mut header = f.header.to_vec();
                if step == 3 {
                    let mut reply: HelloReply = frame::decode_header(&f.header).unwrap();
                    if let HelloReply::Welcome { id, .. } = &mut reply {
                        *id = 99;
                    }
                    header = frame::encode_header(&reply).to_vec();
                }
                to.write_all(&frame::encode_frame(&header, &[]))
                    .await
                    .unwrap();
            }
        });
        let hello = worker_hello("tcp://127.0.0.1:4000", "");
        let e = rask_transport::connect(&via, &hello, authenticated())
            .await
            .err()
            .expect("the changed welcome is refused");
        assert!(matches!(e, TransportError::AuthFailed(_)), "{e}");
        // The server itself welcomed the client as 3.
        assert!(srv.await.unwrap().is_ok());
    })
    .await
}
