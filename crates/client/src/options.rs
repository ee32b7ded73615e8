//! How a client connects: [`ClientOptions`], its program ([`ProgramSource`]), and the
//! environment variables that set what the options leave out.

use rask_proto::msg::RegistryInfo;
use rask_transport::ConnConfig;

use crate::ClientError;

/// Options for [`Client::connect_with`](crate::Client::connect_with).
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// Client name, shown in the scheduler's logs.
    pub name: Option<String>,
    /// The ops this program knows; sent in the handshake and checked at submit.
    pub registry: Option<RegistryInfo>,
    /// Connection settings; `conn.handshake_timeout` bounds connecting (default 10 s,
    /// `RASK_CONNECT_TIMEOUT` in seconds overrides it).
    pub conn: ConnConfig,
    /// How results are gathered from workers (default: `RASK_TRANSPORT`, else auto:
    /// inproc from workers in this process, shm on this host, tcp otherwise).
    pub transport: Option<rask_transport::TransportMode>,
    /// This program, when it has typed ops: its workers must run it, and the cluster's
    /// workers start them from the executable this client sends when asked.
    pub program: Option<ProgramSource>,
    /// When the scheduler's connection is lost (not closed by the scheduler), how long
    /// to keep trying to connect again: futures keep waiting meanwhile, and the
    /// scheduler (restarted with its journal, or still running) tells their state again.
    /// `None`: 30 s, or `RASK_RECONNECT` in seconds; zero: never.
    pub reconnect: Option<std::time::Duration>,
    /// How long a blocking call (`result`, `gather`, ...) may poll for its answer before
    /// it sleeps, when the calls before it were answered within half that: a short call
    /// then does not wait for its thread to be woken. `None`: `RASK_CLIENT_SPIN` in
    /// seconds, else 1 ms where this process may use more than one CPU and never on one
    /// (the poll would hold the CPU the answer needs); zero: never poll.
    pub spin: Option<std::time::Duration>,
}

/// How long a client tries to connect again when not told (see
/// [`ClientOptions::reconnect`]).
pub const DEFAULT_RECONNECT: std::time::Duration = std::time::Duration::from_secs(30);

/// The longest a blocking call polls when not told, with more than one CPU (see
/// [`ClientOptions::spin`]).
pub(crate) const DEFAULT_SPIN: std::time::Duration = std::time::Duration::from_millis(1);

/// The poll of a blocking call when not told: [`DEFAULT_SPIN`] with more than one CPU to
/// run on, none with one.
pub(crate) fn default_spin(cpus: usize) -> std::time::Duration {
    if cpus > 1 {
        DEFAULT_SPIN
    } else {
        std::time::Duration::ZERO
    }
}

/// A client's program: what the handshake says of it, and where its executable is read
/// from when the cluster asks for it (`/proc/self/exe`: the file this process runs, even
/// if it has since been rebuilt).
#[derive(Clone, Debug)]
pub struct ProgramSource {
    /// Its code, size, name and platform.
    pub info: rask_proto::msg::ProgramInfo,
    /// The executable.
    pub path: std::path::PathBuf,
}

/// The seconds environment variable `name` gives, if set (and not empty): a finite number,
/// positive, or also zero with `zero`; anything else is an error naming it.
pub(crate) fn seconds_from_env(
    name: &str,
    zero: bool,
) -> Result<Option<std::time::Duration>, ClientError> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && (*s > 0.0 || (zero && *s == 0.0)))
            .map(|s| Some(std::time::Duration::from_secs_f64(s)))
            .ok_or_else(|| {
                let what = if zero { "not negative" } else { "positive" };
                ClientError::Other(format!("{name}={v:?}: expected a {what} number of seconds"))
            }),
        _ => Ok(None),
    }
}
