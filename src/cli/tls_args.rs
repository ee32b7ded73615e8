//! The TLS options every command that connects or listens shares (`rask scheduler`,
//! `rask worker`, `cuda-worker`): certificate, key, the cluster's CA, and how strictly
//! certificates are checked. Each defaults to its `RASK_TLS_*` variable.

use clap::Args;
use rask_transport::{Tls, TlsFiles};

/// TLS options: given any of them, every tcp connection of the process uses TLS and
/// plaintext peers are refused.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsArgs {
    /// TLS: this process's certificate (PEM, leaf first), presented to peers; it must
    /// name the address peers dial (an IP address SAN), unless they check by CA only
    /// (default: $RASK_TLS_CERT).
    #[arg(long)]
    pub tls_cert: Option<std::path::PathBuf>,
    /// TLS: the private key of --tls-cert (PEM; default: $RASK_TLS_KEY).
    #[arg(long)]
    pub tls_key: Option<std::path::PathBuf>,
    /// TLS: the cluster's CA (PEM) that peers' certificates must chain to (default:
    /// $RASK_TLS_CA).
    #[arg(long)]
    pub tls_ca: Option<std::path::PathBuf>,
    /// TLS: refuse peers that present no certificate signed by the CA (mutual TLS;
    /// default: $RASK_TLS_REQUIRE_CLIENT_CERT).
    #[arg(long)]
    pub tls_require_client_cert: bool,
    /// TLS: check a server's certificate against the CA only, not its name against the
    /// address dialled, for certificates that carry no addresses; any holder of a
    /// certificate of the CA can then pose as any member (default: $RASK_TLS_CA_ONLY).
    #[arg(long)]
    pub tls_ca_only: bool,
}

impl TlsArgs {
    /// The files given on the command line (or by configuration), each missing one taken
    /// from its `RASK_TLS_*` variable.
    pub fn files(&self) -> Result<TlsFiles, rask_transport::TransportError> {
        let given = TlsFiles {
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
            ca: self.tls_ca.clone(),
            require_client_cert: self.tls_require_client_cert,
            ca_only: self.tls_ca_only,
        };
        Ok(given.or(TlsFiles::from_env()?))
    }

    /// The TLS settings loaded, `None` when none is given. A process that serves (the
    /// scheduler, a worker's data) needs a certificate and key; one that connects (a
    /// worker) needs the CA: `needs` names the options this command cannot do without.
    pub fn load(&self, command: &str, needs: Needs) -> Result<Option<Tls>, String> {
        let files = self.files().map_err(|e| e.to_string())?;
        let Some(tls) = files.load().map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        if needs.serve && !tls.can_serve() {
            return Err(format!(
                "TLS: {command} serves TLS with a certificate and its key: give --tls-cert and --tls-key"
            ));
        }
        if needs.connect && !tls.can_connect() {
            return Err(format!(
                "TLS: {command} checks the servers it connects to against the cluster's CA: give --tls-ca"
            ));
        }
        Ok(Some(tls))
    }

    /// These options on a command line again (for processes this one starts); the
    /// files are passed as given, variables included.
    pub fn to_args(&self) -> Vec<std::ffi::OsString> {
        let given = TlsFiles {
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
            ca: self.tls_ca.clone(),
            require_client_cert: self.tls_require_client_cert,
            ca_only: self.tls_ca_only,
        };
        given.to_args()
    }
}

/// What a command does with TLS: serve it, connect with it, or both.
#[derive(Clone, Copy, Debug)]
pub struct Needs {
    /// It listens (and needs a certificate and key).
    pub serve: bool,
    /// It connects (and needs the CA).
    pub connect: bool,
}
