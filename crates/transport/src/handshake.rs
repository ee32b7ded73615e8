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
    turns: std::sync::Arc<tokio::sync::Semaphore>,
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

const SERVER_PROOF: &[u8] = b"rask server proof v2";
/// How a refusal for a wrong proof of the secret begins.
const WRONG_SECRET: &str = "authentication failed";
const CLIENT_PROOF: &[u8] = b"rask client proof v2";

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

    fn mac(&self, label: &[u8], a: &[u8; 32], b: &[u8; 32]) -> hmac::Hmac<sha2::Sha256> {
        use hmac::Mac;
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.0)
            .expect("invariant: HMAC takes any key length");
        m.update(label);
        m.update(a);
        m.update(b);
        m
    }

    fn proof(&self, label: &[u8], a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
        use hmac::Mac;
        self.mac(label, a, b).finalize().into_bytes().into()
    }

    /// Constant-time check of a proof.
    fn verify(&self, label: &[u8], a: &[u8; 32], b: &[u8; 32], proof: &[u8; 32]) -> bool {
        use hmac::Mac;
        self.mac(label, a, b).verify_slice(proof).is_ok()
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
    write_frame(&mut w, &frame::encode_header(&hello), &[]).await?;
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
            proof: secret.proof(CLIENT_PROOF, &server_nonce, &hello.nonce),
        };
        write_frame(&mut w, &frame::encode_header(&ours), &[]).await?;
        challenge = Some((secret, server_nonce));
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
        (HelloReply::Welcome { id, proof, .. }, Some((secret, server_nonce))) => {
            let proven =
                proof.is_some_and(|p| secret.verify(SERVER_PROOF, &hello.nonce, &server_nonce, &p));
            if !proven {
                return Err(TransportError::AuthFailed(
                    "the server does not know this cluster's secret".into(),
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
/// secret, challenges the peer to prove it; the peer is then welcomed by the reader
/// (larger frames are read). The caller answers with `Welcome` ([`reply_hello`]) or
/// refuses ([`refuse`]).
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
        let hello = reader.read_handshake::<Hello>().await?;
        if let Some(secret) = &cfg.auth {
            let ours = nonce();
            reply_hello(w, &HelloReply::Challenge { nonce: ours }).await?;
            let theirs = reader.read_handshake::<AuthProof>().await?;
            if !secret.verify(CLIENT_PROOF, &ours, &hello.nonce, &theirs.proof) {
                return Err(TransportError::AuthFailed(format!(
                    "{:?} {:?} gave a wrong proof of the cluster's secret",
                    hello.role, hello.name
                )));
            }
            reader.server_proof = Some(secret.proof(SERVER_PROOF, &hello.nonce, &ours));
        }
        Ok(hello)
    })
    .await
    .map_err(|_| TransportError::Timeout("in the handshake"))??;
    reader.welcome();
    Ok(hello)
}

/// Welcomes a peer [`accept`] has taken, giving it `id` (and, with a shared secret, this
/// side's proof of it).
pub async fn welcome<R, W: AsyncWrite + Unpin>(
    w: &mut W,
    reader: &FrameReader<R>,
    id: u32,
) -> Result<(), TransportError> {
    let reply = HelloReply::Welcome {
        id,
        rask_version: rask_proto::RASK_VERSION.into(),
        proof: reader.server_proof,
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
/// reason (errors of reading, such as a closed connection, are not answered).
pub async fn refuse_after<W: AsyncWrite + Unpin>(w: &mut W, e: &TransportError) {
    let reason = match e {
        TransportError::Proto(ProtoError::Version { peer, ours }) => format!(
            "protocol version mismatch: you speak protocol {peer}, this rask {} speaks {ours}",
            rask_proto::RASK_VERSION
        ),
        TransportError::AuthFailed(_) => format!("{WRONG_SECRET}: wrong secret"),
        TransportError::Io(_) | TransportError::Closed => return,
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
