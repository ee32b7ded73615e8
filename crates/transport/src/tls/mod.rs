//! TLS on tcp connections (rustls, ring provider, TLS 1.3 only): the settings as given
//! ([`TlsFiles`]: certificate, key, the cluster's CA), what they load into ([`Tls`]: a
//! connector and an acceptor), the tcp halves that carry either plaintext or TLS, and the
//! server side of a tcp connection's start ([`accept_tcp`]), and HTTPS for the cluster's
//! HTTP servers ([`HttpsIncoming`]).
//!
//! # How certificates are checked
//!
//! A server's certificate must chain to the cluster's CA (`--tls-ca`), and by default
//! must name the address it was dialled at: an IP address SAN for `tcp://10.0.0.5:8786`,
//! a DNS SAN for `tcp://node5:8786`. A scheduler, and every worker serving data, thus
//! needs a certificate naming the address peers reach it at (its contact address).
//! With [`TlsFiles::ca_only`] (`--tls-ca-only`) only the chain is checked, for clusters
//! whose certificates carry no addresses (addresses handed out at run time): then any
//! holder of a certificate the CA signed can pose as any member of the cluster, so the CA
//! must sign nothing but this cluster's certificates.
//!
//! A client certificate is checked against the CA, never for a name. Servers ask for one
//! when they have a CA: with [`TlsFiles::require_client_cert`] a peer without one (or
//! with one the CA did not sign) is refused; without it, a peer may present none, but
//! one it presents must chain to the CA.
//!
//! A tls server refuses a peer that speaks plaintext, telling it in plaintext why (see
//! [`accept_tcp`]); a plaintext server refuses a peer that opens with TLS (see
//! [`accept`](crate::accept)). This module must not decide anything about the handshake
//! that follows: the shared-secret proof runs inside TLS as it runs without it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;

use crate::TransportError;

mod https;
mod stream;

pub use https::{HttpsIncoming, HttpsStream, HTTPS_REQUIRED};
pub use stream::{accept_tcp, TcpReadHalf, TcpWriteHalf};

/// The first byte of a TLS record carrying a handshake message (a ClientHello opens
/// every TLS connection with one); no rask frame starts with it.
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// What a plaintext peer of a tls server is told (in plaintext, as a refusal frame).
pub const REQUIRES_TLS: &str = "this server requires TLS: give this process the cluster's CA \
(--tls-ca or RASK_TLS_CA), and its certificate and key if the cluster requires client \
certificates";

/// What a peer that opens with TLS is told by a server that does not use it.
pub const NO_TLS_HERE: &str = "this server does not use TLS";

/// The environment variables TLS settings are read from ([`TlsFiles::from_env`]).
pub const ENV_VARS: [&str; 5] = [
    "RASK_TLS_CERT",
    "RASK_TLS_KEY",
    "RASK_TLS_CA",
    "RASK_TLS_REQUIRE_CLIENT_CERT",
    "RASK_TLS_CA_ONLY",
];

/// TLS settings as given (command line, configuration, environment): files, and how
/// strictly certificates are checked. Loaded into a [`Tls`] by [`TlsFiles::load`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// This process's certificate chain (PEM), leaf first: presented as a server, and as
    /// a client to servers that ask.
    pub cert: Option<PathBuf>,
    /// The private key of `cert` (PEM: PKCS#8, SEC1 or PKCS#1).
    pub key: Option<PathBuf>,
    /// The cluster's CA certificates (PEM): servers' certificates (and clients', when
    /// asked for) must chain to one of them.
    pub ca: Option<PathBuf>,
    /// As a server, refuse a peer that presents no certificate signed by the CA.
    pub require_client_cert: bool,
    /// As a client, check a server's certificate against the CA only, not its name
    /// against the address dialled (for certificates that carry no addresses).
    pub ca_only: bool,
}

impl TlsFiles {
    /// Whether any TLS setting is given (then every tcp connection uses TLS).
    pub fn is_set(&self) -> bool {
        self.cert.is_some() || self.key.is_some() || self.ca.is_some()
    }

    /// The settings named by `RASK_TLS_CERT`, `RASK_TLS_KEY`, `RASK_TLS_CA`,
    /// `RASK_TLS_REQUIRE_CLIENT_CERT` and `RASK_TLS_CA_ONLY` (switches: `1`, `true`,
    /// `yes`, `on`).
    pub fn from_env() -> Result<TlsFiles, TransportError> {
        TlsFiles::from_lookup(&|k| std::env::var(k).ok())
    }

    /// [`TlsFiles::from_env`] with `env` looking variables up.
    pub fn from_lookup(env: &dyn Fn(&str) -> Option<String>) -> Result<TlsFiles, TransportError> {
        let path = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let switch = |k: &str| match env(k) {
            None => Ok(false),
            Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" | "" => Ok(false),
                _ => Err(TransportError::Tls(format!(
                    "{k}={v:?}: expected true or false"
                ))),
            },
        };
        Ok(TlsFiles {
            cert: path("RASK_TLS_CERT"),
            key: path("RASK_TLS_KEY"),
            ca: path("RASK_TLS_CA"),
            require_client_cert: switch("RASK_TLS_REQUIRE_CLIENT_CERT")?,
            ca_only: switch("RASK_TLS_CA_ONLY")?,
        })
    }

    /// These settings, each field not given taken from `fallback` (the command line over
    /// the environment).
    pub fn or(self, fallback: TlsFiles) -> TlsFiles {
        TlsFiles {
            cert: self.cert.or(fallback.cert),
            key: self.key.or(fallback.key),
            ca: self.ca.or(fallback.ca),
            require_client_cert: self.require_client_cert || fallback.require_client_cert,
            ca_only: self.ca_only || fallback.ca_only,
        }
    }

    /// Reads the files and builds what connects and accepts with them; `None` when no
    /// TLS setting is given. A certificate without its key (or the reverse), a switch
    /// without the CA it needs, or a file that cannot be read or parsed is an error
    /// naming the option and the file.
    pub fn load(&self) -> Result<Option<Tls>, TransportError> {
        if !self.is_set() {
            if self.require_client_cert || self.ca_only {
                return Err(TransportError::Tls(
                    "--tls-require-client-cert and --tls-ca-only need --tls-ca".into(),
                ));
            }
            return Ok(None);
        }
        // ring, not aws-lc-rs: no cmake or C++ toolchain in the build. rustls marks
        // ring's provider deprecated because ring has no post-quantum key exchange; the
        // classical X25519 / P-256 exchange it offers is what this cluster gets.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let bad = |e: rustls::Error| TransportError::Tls(e.to_string());
        let roots = self.ca.as_deref().map(read_roots).transpose()?;
        let identity = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => Some((read_certs(c)?, read_key(k)?)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(TransportError::Tls(
                    "--tls-cert needs its private key (--tls-key)".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(TransportError::Tls(
                    "--tls-key needs its certificate (--tls-cert)".into(),
                ))
            }
        };
        if (self.require_client_cert || self.ca_only) && roots.is_none() {
            return Err(TransportError::Tls(
                "--tls-require-client-cert and --tls-ca-only need --tls-ca".into(),
            ));
        }
        let connector = match &roots {
            None => None,
            Some(roots) => {
                let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    roots.clone(),
                    provider.clone(),
                )
                .build()
                .map_err(|e| TransportError::Tls(format!("the CA: {e}")))?;
                let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
                    .with_protocol_versions(&[&rustls::version::TLS13])
                    .map_err(bad)?;
                let builder = if self.ca_only {
                    builder
                        .dangerous()
                        .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
                } else {
                    builder.with_webpki_verifier(webpki)
                };
                let config = match &identity {
                    Some((certs, key)) => builder
                        .with_client_auth_cert(certs.clone(), key.clone_key())
                        .map_err(|e| self.key_error(e))?,
                    None => builder.with_no_client_auth(),
                };
                Some(tokio_rustls::TlsConnector::from(Arc::new(config)))
            }
        };
        let acceptor = match identity {
            None => None,
            Some((certs, key)) => {
                let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
                    .with_protocol_versions(&[&rustls::version::TLS13])
                    .map_err(bad)?;
                let builder = match &roots {
                    Some(roots) => {
                        let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                            roots.clone(),
                            provider.clone(),
                        );
                        let v = if self.require_client_cert {
                            v
                        } else {
                            v.allow_unauthenticated()
                        };
                        builder.with_client_cert_verifier(
                            v.build()
                                .map_err(|e| TransportError::Tls(format!("the CA: {e}")))?,
                        )
                    }
                    None => builder.with_no_client_auth(),
                };
                let config = builder
                    .with_single_cert(certs, key)
                    .map_err(|e| self.key_error(e))?;
                Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
            }
        };
        Ok(Some(Tls {
            files: self.clone(),
            connector,
            acceptor,
        }))
    }

    fn key_error(&self, e: rustls::Error) -> TransportError {
        TransportError::Tls(format!(
            "the certificate {} and the key {}: {e}",
            self.cert.as_deref().unwrap_or(Path::new("")).display(),
            self.key.as_deref().unwrap_or(Path::new("")).display()
        ))
    }

    /// The options that give these settings again (`--tls-cert PATH` …), for processes
    /// this one starts.
    pub fn to_args(&self) -> Vec<std::ffi::OsString> {
        let mut out: Vec<std::ffi::OsString> = Vec::new();
        for (k, v) in [
            ("--tls-cert", &self.cert),
            ("--tls-key", &self.key),
            ("--tls-ca", &self.ca),
        ] {
            if let Some(p) = v {
                out.extend([k.into(), p.into()]);
            }
        }
        if self.require_client_cert {
            out.push("--tls-require-client-cert".into());
        }
        if self.ca_only {
            out.push("--tls-ca-only".into());
        }
        out
    }
}

fn file_error(path: &Path, what: &str, e: impl std::fmt::Display) -> TransportError {
    TransportError::Tls(format!("{} ({what}): {e}", path.display()))
}

fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>, TransportError> {
    std::fs::read(path).map_err(|e| file_error(path, what, e))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let what = "a certificate, PEM";
    let pem = read_pem(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, what, e))?;
    if certs.is_empty() {
        return Err(file_error(path, what, "no CERTIFICATE in it"));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TransportError> {
    let what = "a private key, PEM";
    let pem = read_pem(path, what)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| file_error(path, what, e))
}

fn read_roots(path: &Path) -> Result<Arc<RootCertStore>, TransportError> {
    let mut roots = RootCertStore::empty();
    for c in read_certs(path)? {
        roots
            .add(c)
            .map_err(|e| file_error(path, "a CA certificate, PEM", e))?;
    }
    Ok(Arc::new(roots))
}

/// Checks a server's certificate chain against the CA and ignores the name it carries
/// ([`TlsFiles::ca_only`]). Every other check (validity, signatures, usage) is the
/// standard verifier's.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The name is checked last, after the chain: its failure alone means the chain
        // is good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            r => r,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Loaded TLS settings: what connects (with the CA) and what accepts (with a certificate
/// and key). Cheap to clone.
#[derive(Clone)]
pub struct Tls {
    files: TlsFiles,
    /// Verifies servers; `None` without a CA (this process cannot connect with TLS).
    connector: Option<tokio_rustls::TlsConnector>,
    /// Serves TLS; `None` without a certificate (this process cannot serve TLS).
    acceptor: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

impl Tls {
    /// The settings this was loaded from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Whether this process can connect with TLS (it has the CA).
    pub fn can_connect(&self) -> bool {
        self.connector.is_some()
    }

    /// Whether this process can serve TLS (it has a certificate and key).
    pub fn can_serve(&self) -> bool {
        self.acceptor.is_some()
    }

    /// A line for start-up output: what is checked.
    pub fn describe(&self) -> String {
        let mut out = String::from("TLS 1.3");
        if self.files.ca.is_some() {
            out.push_str(if self.files.ca_only {
                ", servers checked against the CA only"
            } else {
                ", servers checked against the CA and the address dialled"
            });
        }
        if self.acceptor.is_some() {
            out.push_str(if self.files.require_client_cert {
                ", client certificates required"
            } else if self.files.ca.is_some() {
                ", client certificates optional"
            } else {
                ", no client certificates"
            });
        }
        out
    }

    /// The client side of TLS on `stream`, dialled as `target` (`host:port`).
    pub(crate) async fn connect(
        &self,
        target: &str,
        stream: TcpStream,
    ) -> Result<(TcpReadHalf, TcpWriteHalf), TransportError> {
        let connector = self.connector.as_ref().ok_or_else(|| {
            TransportError::Tls(
                "this process has TLS settings but no CA to check servers with: give --tls-ca or RASK_TLS_CA"
                    .into(),
            )
        })?;
        let name = server_name(target)?;
        let s = connector
            .connect(name, stream)
            .await
            .map_err(|e| explain(e.into()))?;
        let (r, w) = tokio::io::split(tokio_rustls::TlsStream::from(s));
        Ok((TcpReadHalf::Tls(r), TcpWriteHalf::Tls(w)))
    }
}

/// The name a server's certificate must carry when dialled at `target` (`host:port`,
/// `[v6]:port`): its IP address, or its DNS name.
pub fn server_name(target: &str) -> Result<ServerName<'static>, TransportError> {
    let host = target.rsplit_once(':').map_or(target, |(h, _)| h);
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(host.to_string()).map_err(|e| {
        TransportError::Tls(format!(
            "{target}: not a name to check a certificate against: {e}"
        ))
    })
}

/// A tcp connection's error explained: a TLS failure (carried in an i/o error by the
/// stream) becomes [`TransportError::Tls`] or [`TransportError::NotTls`] saying what went
/// wrong and what to do; anything else is as it was.
pub(crate) fn explain(e: TransportError) -> TransportError {
    let TransportError::Io(io) = &e else { return e };
    let Some(tls) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return e;
    };
    use rustls::AlertDescription as A;
    let cert = |c: &CertificateError| {
        match c {
        CertificateError::UnknownIssuer | CertificateError::BadSignature => {
            "is not signed by this cluster's CA (--tls-ca)".to_string()
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "does not name the address dialled: give it an IP address (or DNS) SAN for the address peers use, or check servers by CA only (--tls-ca-only)".to_string()
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => "has expired".to_string(),
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "is not valid yet".to_string()
        }
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "is not for this use (its extended key usage must allow serverAuth and clientAuth)".to_string()
        }
        other => format!("was refused: {other:?}"),
    }
    };
    let message = match tls {
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            return TransportError::NotTls(
                "the peer did not answer in TLS: it does not use TLS (a plaintext rask \
                 server refuses TLS), or is not a rask server"
                    .into(),
            )
        }
        rustls::Error::InvalidCertificate(c) => format!("the server's certificate {}", cert(c)),
        rustls::Error::NoCertificatesPresented => {
            "the peer presented no certificate, and this server requires one signed by the cluster's CA".into()
        }
        rustls::Error::AlertReceived(A::CertificateRequired) => {
            "the server requires a client certificate signed by the cluster's CA: give this process --tls-cert and --tls-key (or RASK_TLS_CERT and RASK_TLS_KEY)".into()
        }
        rustls::Error::AlertReceived(A::UnknownCA | A::BadCertificate) => {
            "the peer refused this side's certificate: it is not signed by the CA the peer trusts".into()
        }
        rustls::Error::AlertReceived(a) => format!("the peer ended TLS with the alert {a:?}"),
        other => other.to_string(),
    };
    TransportError::Tls(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_are_the_address_dialled() {
        assert!(matches!(
            server_name("127.0.0.1:8786").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("[::1]:8786").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("node5.example:1").unwrap(),
            ServerName::DnsName(_)
        ));
    }

    #[test]
    fn settings_come_from_the_environment_and_give_way_to_the_command_line() {
        let env = |k: &str| match k {
            "RASK_TLS_CERT" => Some("/e/cert.pem".to_string()),
            "RASK_TLS_CA" => Some("/e/ca.pem".to_string()),
            "RASK_TLS_REQUIRE_CLIENT_CERT" => Some("yes".to_string()),
            _ => None,
        };
        let from_env = TlsFiles::from_lookup(&env).unwrap();
        assert_eq!(from_env.cert.as_deref(), Some(Path::new("/e/cert.pem")));
        assert!(from_env.require_client_cert && !from_env.ca_only);
        let given = TlsFiles {
            cert: Some("/c/cert.pem".into()),
            key: Some("/c/key.pem".into()),
            ..TlsFiles::default()
        };
        let both = given.or(from_env);
        assert_eq!(both.cert.as_deref(), Some(Path::new("/c/cert.pem")));
        assert_eq!(both.ca.as_deref(), Some(Path::new("/e/ca.pem")));
        assert_eq!(
            both.to_args(),
            [
                "--tls-cert",
                "/c/cert.pem",
                "--tls-key",
                "/c/key.pem",
                "--tls-ca",
                "/e/ca.pem",
                "--tls-require-client-cert"
            ]
        );
        let bad = |k: &str| (k == "RASK_TLS_CA_ONLY").then(|| "maybe".to_string());
        assert!(TlsFiles::from_lookup(&bad).is_err());
    }

    #[test]
    fn half_given_settings_are_errors_naming_what_is_missing() {
        let only_cert = TlsFiles {
            cert: Some("/nonexistent/cert.pem".into()),
            ..TlsFiles::default()
        };
        let e = only_cert.load().unwrap_err().to_string();
        assert!(e.contains("--tls-key"), "{e}");
        let require = TlsFiles {
            require_client_cert: true,
            ..TlsFiles::default()
        };
        let e = require.load().unwrap_err().to_string();
        assert!(e.contains("--tls-ca"), "{e}");
        let missing = TlsFiles {
            ca: Some("/nonexistent/ca.pem".into()),
            ..TlsFiles::default()
        };
        let e = missing.load().unwrap_err().to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        assert!(TlsFiles::default().load().unwrap().is_none());
    }
}
