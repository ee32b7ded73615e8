//! The handshake that admits a peer: its hello, the shared-secret proof (the connecting
//! side first), welcome or refusal, and the gate that bounds connections still in their
//! handshake.

use rask_proto::frame;
use rask_proto::msg::{AuthProof, Hello, HelloReply};
use rask_proto::ProtoError;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::{write_frame, ConnConfig, FrameReader, TransportError, HANDSHAKE_LIMITS};

/// Admission of connections that have not finished their handshake: at most `waiting`
/// more than `in_progress` are admitted (any beyond are closed at once), and of those
/// that have started sending, at most `in_progress` read at once (each may hold up to a
/// [`HANDSHAKE_LIMITS`] frame, as its bytes arrive). An unauthenticated peer can thus hold
/// neither memory nor file descriptors without bound, and one that stays silent holds no
/// turn.
#[derive(Clone, Debug)]
pub struct HandshakeGate {
    pub(crate) turns: std::sync::Arc<tokio::sync::Semaphore>,
    admitted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    max_admitted: usize,
}

impl Default for HandshakeGate {
    fn default() -> Self {
        HandshakeGate::new(64, 1024)
    }
}

/// A connection admitted by a [`HandshakeGate`]; it leaves the gate when dropped.
pub struct Admission {
    admitted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.admitted
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl HandshakeGate {
    /// A gate letting `in_progress` handshakes run at once and `waiting` more queue.
    pub fn new(in_progress: usize, waiting: usize) -> HandshakeGate {
        HandshakeGate {
            turns: std::sync::Arc::new(tokio::sync::Semaphore::new(in_progress.max(1))),
            admitted: std::sync::Arc::default(),
            max_admitted: in_progress.max(1) + waiting,
        }
    }

    /// Admits a fresh connection, or `None` when too many are already in their handshake.
    pub fn admit(&self) -> Option<Admission> {
        use std::sync::atomic::Ordering;
        let before = self.admitted.fetch_add(1, Ordering::Relaxed);
        let admission = Admission {
            admitted: self.admitted.clone(),
        };
        (before < self.max_admitted).then_some(admission)
    }

    /// Connections admitted and not yet through their handshake.
    pub fn admitted(&self) -> usize {
        self.admitted.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A shared secret, proven by HMAC-SHA256 over fresh nonces of both sides in the
/// handshake; never sent, never printed.
#[derive(Clone)]
pub struct Secret(std::sync::Arc<Vec<u8>>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<hidden>)")
    }
}

/// The labels of the two proofs (v3: they cover the client's hello, and the server's
/// covers the id it gives).
const SERVER_PROOF: &[u8] = b"rask server proof v3";
/// How a refusal for a wrong proof of the secret begins.
const WRONG_SECRET: &str = "authentication failed";
const CLIENT_PROOF: &[u8] = b"rask client proof v3";

impl Secret {
    /// A secret from bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Secret {
        Secret(std::sync::Arc::new(bytes.into()))
    }

    /// The secret's bytes, for handing it to a child process through a private file.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Reads a secret file (surrounding whitespace ignored; must not be empty).
    pub fn from_file(path: &std::path::Path) -> Result<Secret, TransportError> {
        let err = |message: String| TransportError::Secret {
            path: path.display().to_string(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let trimmed = bytes.trim_ascii();
        if trimmed.is_empty() {
            return Err(err("the file is empty".into()));
        }
        Ok(Secret::new(trimmed.to_vec()))
    }

    /// The secret named by `RASK_AUTH_FILE` (a path) or `RASK_AUTH_SECRET` (the value).
    pub fn from_env() -> Result<Option<Secret>, TransportError> {
        if let Some(p) = std::env::var_os("RASK_AUTH_FILE").filter(|p| !p.is_empty()) {
            return Secret::from_file(std::path::Path::new(&p)).map(Some);
        }
        Ok(std::env::var("RASK_AUTH_SECRET")
            .ok()
            .filter(|s| !s.is_empty())
            .map(Secret::new))
    }

    /// HMAC-SHA256 keyed with the secret over `parts` (each of fixed length, or last).
    fn mac(&self, parts: &[&[u8]]) -> hmac::Hmac<sha2::Sha256> {
        use hmac::Mac;
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.0)
            .expect("invariant: HMAC takes any key length");
        for p in parts {
            m.update(p);
        }
        m
    }

    fn proof(&self, parts: &[&[u8]]) -> [u8; 32] {
        use hmac::Mac;
        self.mac(parts).finalize().into_bytes().into()
    }

    /// Constant-time check of a proof.
    fn verify(&self, parts: &[&[u8]], proof: &[u8; 32]) -> bool {
        use hmac::Mac;
        self.mac(parts).verify_slice(proof).is_ok()
    }
}

/// What the client proves: the secret, over the server's nonce, its own, and the hash
/// of its hello as sent (so that nothing in the hello — the addresses a worker
/// announces, its name, its role — can be changed on the way unnoticed).
fn client_proof(secret: &Secret, server_nonce: &[u8; 32], hello: &HelloDigest) -> [u8; 32] {
    secret.proof(&[CLIENT_PROOF, server_nonce, &hello.nonce, &hello.hash])
}

fn client_proof_ok(
    secret: &Secret,
    server_nonce: &[u8; 32],
    hello: &HelloDigest,
    proof: &[u8; 32],
) -> bool {
    secret.verify(
        &[CLIENT_PROOF, server_nonce, &hello.nonce, &hello.hash],
        proof,
    )
}

/// The client's hello as the proofs cover it: its nonce and the SHA-256 of its bytes as
/// sent.
#[derive(Clone, Copy)]
pub(crate) struct HelloDigest {
    nonce: [u8; 32],
    hash: [u8; 32],
}

impl HelloDigest {
    fn of(nonce: [u8; 32], bytes: &[u8]) -> HelloDigest {
        use sha2::Digest;
        HelloDigest {
            nonce,
            hash: sha2::Sha256::digest(bytes).into(),
        }
    }
}

/// What the server's proof covers, kept by the server side's reader from the client's
/// proof until its welcome: the server proves the secret over both nonces, the client's
/// hello and the id it gives, only once the client has proven it (a peer that proves
/// nothing gets nothing to guess the secret from offline).
pub(crate) struct ServerProof {
    secret: Secret,
    server_nonce: [u8; 32],
    hello: HelloDigest,
}

impl ServerProof {
    fn parts<'a>(&'a self, id: &'a [u8; 4]) -> [&'a [u8]; 5] {
        [
            SERVER_PROOF,
            &self.hello.nonce,
            &self.server_nonce,
            &self.hello.hash,
            id,
        ]
    }

    fn prove(&self, id: u32) -> [u8; 32] {
        self.secret.proof(&self.parts(&id.to_le_bytes()))
    }

    fn check(&self, id: u32, proof: &[u8; 32]) -> bool {
        self.secret.verify(&self.parts(&id.to_le_bytes()), proof)
    }
}

fn nonce() -> [u8; 32] {
    let mut n = [0u8; 32];
    getrandom::fill(&mut n).expect("the operating system's random source");
    n
}

/// The client side of the handshake on an open connection.
pub(crate) async fn handshake<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut reader: FrameReader<R>,
    mut w: W,
    hello: &Hello,
) -> Result<(FrameReader<R>, W, u32), TransportError> {
    let mut hello = hello.clone();
    hello.nonce = nonce();
    let bytes = frame::encode_header(&hello);
    let digest = HelloDigest::of(hello.nonce, &bytes);
    write_frame(&mut w, &bytes, &[]).await?;
    let auth = reader.cfg.auth.clone();
    let mut reply = reader.read_handshake::<HelloReply>().await?;
    // With a secret: this side proves it first, and the server's proof comes back with
    // its welcome (a peer that proves nothing learns nothing to guess the secret from).
    let mut challenge = None;
    if let HelloReply::Challenge {
        nonce: server_nonce,
    } = reply
    {
        let secret = auth.as_ref().ok_or(TransportError::AuthRequired)?;
        let ours = AuthProof {
            proof: client_proof(secret, &server_nonce, &digest),
        };
        write_frame(&mut w, &frame::encode_header(&ours), &[]).await?;
        challenge = Some(ServerProof {
            secret: secret.clone(),
            server_nonce,
            hello: digest,
        });
        reply = match reader.read_handshake::<HelloReply>().await {
            Ok(r) => r,
            Err(TransportError::Refused(r)) if r.starts_with(WRONG_SECRET) => {
                return Err(TransportError::AuthFailed(r))
            }
            Err(TransportError::Closed) => {
                return Err(TransportError::AuthFailed(
                    "the server closed the connection on this side's proof of the secret".into(),
                ))
            }
            Err(e) => return Err(e),
        };
    } else if auth.is_some() {
        return Err(TransportError::AuthFailed(
            "the server does not authenticate; refusing to use it with a secret configured".into(),
        ));
    }
    match (reply, challenge) {
        (HelloReply::Welcome { id, proof, .. }, Some(expected)) => {
            if !proof.is_some_and(|p| expected.check(id, &p)) {
                return Err(TransportError::AuthFailed(
                    "the server does not know this cluster's secret, or did not see this side's hello as sent".into(),
                ));
            }
            reader.welcome();
            Ok((reader, w, id))
        }
        (HelloReply::Welcome { id, .. }, None) => {
            reader.welcome();
            Ok((reader, w, id))
        }
        (HelloReply::Challenge { .. }, _) => Err(TransportError::BadHandshake),
    }
}

/// The server side of the handshake: reads the peer's hello and, when this side has a
/// secret, challenges the peer to prove it (over both nonces and the hello's bytes, so a
/// hello changed on the way fails the proof); the peer is then welcomed by the reader
/// (larger frames are read). The caller answers with `Welcome` ([`welcome`]) or refuses
/// ([`refuse`]). A peer that opens with TLS, when this side has no TLS, is told this
/// server does not use TLS and is [`TransportError::UnexpectedTls`].
///
/// Bounded for unauthenticated peers: the connection must be admitted by `cfg.gate`
/// (else [`TransportError::Busy`] at once), waits for a turn among the handshakes in
/// progress, and must finish within `cfg.handshake_timeout`; until then only frames
/// within [`HANDSHAKE_LIMITS`] are read.
pub async fn accept<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    reader: &mut FrameReader<R>,
    w: &mut W,
    cfg: &ConnConfig,
) -> Result<Hello, TransportError> {
    let Some(_admitted) = cfg.gate.admit() else {
        return Err(TransportError::Busy(cfg.gate.admitted()));
    };
    let hello = tokio::time::timeout(cfg.handshake_timeout, async {
        // A silent connection holds no turn: only one that is sending its hello does.
        reader.ready().await?;
        let _turn = cfg.gate.turns.acquire().await;
        let (hello, bytes_hash) = match reader.read_handshake_hashed::<Hello>().await {
            Err(TransportError::Proto(ProtoError::BadMagic(m)))
                if m[0] == crate::tls::TLS_HANDSHAKE_RECORD =>
            {
                let _ = refuse(w, crate::tls::NO_TLS_HERE).await;
                crate::drain(reader.get_mut(), REFUSAL_DRAIN).await;
                return Err(TransportError::UnexpectedTls);
            }
            r => r?,
        };
        if let Some(secret) = &cfg.auth {
            let ours = nonce();
            reply_hello(w, &HelloReply::Challenge { nonce: ours }).await?;
            let theirs = reader.read_handshake::<AuthProof>().await?;
            let digest = HelloDigest {
                nonce: hello.nonce,
                hash: bytes_hash,
            };
            if !client_proof_ok(secret, &ours, &digest, &theirs.proof) {
                return Err(TransportError::AuthFailed(format!(
                    "{:?} {:?} gave a wrong proof of the cluster's secret (or its hello was changed on the way)",
                    hello.role, hello.name
                )));
            }
            reader.server_proof = Some(ServerProof {
                secret: secret.clone(),
                server_nonce: ours,
                hello: digest,
            });
        }
        Ok(hello)
    })
    .await
    .map_err(|_| TransportError::Timeout("in the handshake"))??;
    reader.welcome();
    Ok(hello)
}

/// How long a peer refused in its handshake is read from (its bytes discarded) before
/// the connection closes, so the refusal is not lost to a reset.
const REFUSAL_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Welcomes a peer [`accept`] has taken, giving it `id` (and, with a shared secret, this
/// side's proof of it, covering the peer's hello and `id`).
pub async fn welcome<R, W: AsyncWrite + Unpin>(
    w: &mut W,
    reader: &FrameReader<R>,
    id: u32,
) -> Result<(), TransportError> {
    let reply = HelloReply::Welcome {
        id,
        rask_version: rask_proto::RASK_VERSION.into(),
        proof: reader.server_proof.as_ref().map(|p| p.prove(id)),
    };
    reply_hello(w, &reply).await
}

/// Answers a hello (server side of the handshake).
pub async fn reply_hello<W: AsyncWrite + Unpin>(
    w: &mut W,
    reply: &HelloReply,
) -> Result<(), TransportError> {
    write_frame(w, &frame::encode_header(reply), &[]).await
}

/// Refuses a peer in its handshake with a [refusal frame](rask_proto::frame), which a
/// peer of any protocol version can read. What the peer is told never includes more than
/// the reason given here.
pub async fn refuse<W: AsyncWrite + Unpin>(w: &mut W, reason: &str) -> Result<(), TransportError> {
    // Bounded like any handshake frame, so the peer can read it.
    let max = HANDSHAKE_LIMITS.max_header as usize;
    let mut end = reason.len().min(max);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    w.write_all(&frame::encode_refusal(&reason[..end])).await?;
    w.flush().await?;
    Ok(())
}

/// Tells a peer why a handshake went wrong, for the server side: a refusal naming the
/// reason (errors of reading, such as a closed connection, are not answered, nor those
/// already answered).
pub async fn refuse_after<W: AsyncWrite + Unpin>(w: &mut W, e: &TransportError) {
    let reason = match e {
        TransportError::Proto(ProtoError::Version { peer, ours }) => format!(
            "protocol version mismatch: you speak protocol {peer}, this rask {} speaks {ours}",
            rask_proto::RASK_VERSION
        ),
        TransportError::AuthFailed(_) => {
            format!("{WRONG_SECRET}: wrong secret, or a hello changed between you and this server")
        }
        TransportError::Io(_)
        | TransportError::Closed
        | TransportError::UnexpectedTls
        | TransportError::TlsRequired => return,
        e => e.to_string(),
    };
    let _ = refuse(w, &reason).await;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{connect, host_id, listen, listener_addr};
    use rask_proto::msg::Role;

    pub(crate) fn hello() -> Hello {
        Hello {
            protocol: rask_proto::PROTOCOL_VERSION,
            schema: rask_proto::PROTOCOL_SCHEMA,
            rask_version: rask_proto::RASK_VERSION.into(),
            role: Role::Peer,
            name: "t".into(),
            host_id: host_id(),
            pid: 1,
            nonce: [0; 32],
            registry: None,
            worker: None,
            program: None,
            resume: None,
        }
    }

    /// Serves one handshake with `server` as the secret; returns the client's outcome.
    async fn handshake(
        server: Option<Secret>,
        client: Option<Secret>,
    ) -> Result<u32, TransportError> {
        let listener = listen("127.0.0.1:0").await.unwrap();
        let addr = listener_addr(&listener).unwrap();
        let cfg = ConnConfig {
            auth: server,
            ..ConnConfig::default()
        };
        let srv = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut reader = FrameReader::new(r, cfg.clone());
            if accept(&mut reader, &mut w, &cfg).await.is_ok() {
                welcome(&mut w, &reader, 7).await.unwrap();
            }
        });
        let out = connect(
            &addr,
            &hello(),
            ConnConfig {
                auth: client,
                ..ConnConfig::default()
            },
        )
        .await
        .map(|(_, _, id)| id);
        let _ = srv.await;
        out
    }

    #[tokio::test]
    async fn shared_secret_is_proven_both_ways() {
        let a = || Some(Secret::new(b"correct horse".to_vec()));
        let b = || Some(Secret::new(b"battery staple".to_vec()));
        assert_eq!(handshake(a(), a()).await.unwrap(), 7);
        assert_eq!(handshake(None, None).await.unwrap(), 7);
        assert!(matches!(
            handshake(a(), None).await,
            Err(TransportError::AuthRequired)
        ));
        assert!(matches!(
            handshake(a(), b()).await,
            Err(TransportError::AuthFailed(_))
        ));
        // A client with a secret refuses a server that does not authenticate.
        assert!(matches!(
            handshake(None, a()).await,
            Err(TransportError::AuthFailed(_))
        ));
        assert_eq!(format!("{:?}", a().unwrap()), "Secret(<hidden>)");
    }
}
