//! A worker's own HTTP server: `/health` and Prometheus `/metrics` with the figures of
//! its last heartbeat, served from a thread of its own (as a Dask worker serves its own
//! dashboard), its address told to the scheduler.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

/// Serves the worker's `/health` and `/metrics` on `spec` (`HOST:PORT` or `:PORT`, the host
/// defaulting to the one the worker listens on); the hook that keeps the figures, and the
/// URL peers reach it at. A worker whose endpoint cannot listen runs without one (said).
pub(crate) fn serve(
    spec: &str,
    cfg: &rask_worker::WorkerConfig,
) -> Option<(rask_worker::HeartbeatHook, String)> {
    let (host, port) = spec.rsplit_once(':').unwrap_or(("", spec));
    let listen_host = cfg.listen.rsplit_once(':').map_or("127.0.0.1", |(h, _)| h);
    let host = if host.is_empty() { listen_host } else { host };
    let listener = match std::net::TcpListener::bind(format!("{host}:{port}")) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(target: "rask.worker", "no metrics endpoint on {spec}: {e}");
            return None;
        }
    };
    // Served over HTTPS when the worker serves TLS (its certificate, its client
    // certificate policy).
    let tls = cfg.conn.tls.clone().filter(|t| t.can_serve());
    let url = match listener.local_addr() {
        Ok(a) => url(a, cfg.contact.as_deref(), tls.is_some()),
        Err(e) => {
            tracing::warn!(target: "rask.worker", "no metrics endpoint on {spec}: {e}");
            return None;
        }
    };
    tracing::info!(target: "rask.worker", "Metrics at: {url}/metrics");
    let (device, device_limit) = match &cfg.device {
        rask_worker::WorkerDevice::Host => ("host".to_string(), 0),
        rask_worker::WorkerDevice::Sim { index, memory } => (format!("sim:{index}"), *memory),
        rask_worker::WorkerDevice::Cuda {
            index,
            memory_limit,
        } => (format!("cuda:{index}"), memory_limit.unwrap_or(0)),
    };
    let now = Arc::new(Mutex::new(rask_dashboard::WorkerSnapshot {
        name: cfg.name.clone(),
        threads: cfg.nthreads as u64,
        device,
        device_memory_limit: device_limit,
        ..Default::default()
    }));
    let read = now.clone();
    let started = std::thread::Builder::new()
        .name("rask-metrics".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return tracing::warn!("no metrics endpoint: {e}"),
            };
            rt.block_on(async move {
                let _ = listener.set_nonblocking(true);
                let snapshot = Arc::new(move || read.lock().expect("metrics lock").clone());
                let served = tokio::net::TcpListener::from_std(listener).map_err(|e| e.to_string());
                match (served, tls) {
                    (Ok(l), None) => rask_dashboard::serve_worker(l, snapshot).await,
                    (Ok(l), Some(tls)) => match crate::dashboard::Https::new(l, &tls) {
                        Ok(l) => rask_dashboard::serve_worker(l, snapshot).await,
                        Err(e) => tracing::warn!("no metrics endpoint: {e}"),
                    },
                    (Err(e), _) => tracing::warn!("no metrics endpoint: {e}"),
                }
            })
        });
    if let Err(e) = started {
        tracing::warn!("no metrics endpoint: {e}");
        return None;
    }
    // Microseconds received by peer and link, so far (heartbeats carry the pairs that
    // changed), summed by link for the metrics.
    let pairs = Mutex::new(BTreeMap::<(u32, String), u64>::new());
    let hook = rask_worker::HeartbeatHook(Arc::new(move |beat| {
        let mut pairs = pairs.lock().expect("metrics lock");
        for p in &beat.received_from {
            pairs.insert((p.peer.0, p.link.clone()), p.micros);
        }
        let mut seconds = BTreeMap::<&str, f64>::new();
        for ((_, link), us) in pairs.iter() {
            *seconds.entry(link).or_default() += *us as f64 / 1e6;
        }
        let mut w = now.lock().expect("metrics lock");
        w.tasks = vec![
            ("executing".into(), beat.executing as u64),
            ("memory".into(), beat.stored_keys),
        ];
        w.managed = beat.stored_bytes;
        w.unmanaged = beat.rss_bytes.saturating_sub(beat.stored_bytes);
        w.spilled = beat.spilled.clone();
        w.device_memory = beat.device_memory_used;
        w.received = beat.received.clone();
        w.transfer_seconds = seconds
            .into_iter()
            .map(|(l, s)| (l.to_string(), s))
            .collect();
        w.utilization = beat.utilization.map(f64::from);
    }));
    Some((hook, url))
}

/// The URL of a server bound to `bound` (`https://` when `tls`): its address, unless
/// unspecified (`0.0.0.0`, `::`): then the worker's contact host if given, else this
/// host's address.
fn url(bound: SocketAddr, contact: Option<&str>, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    let ip = bound.ip();
    let host = if !ip.is_unspecified() {
        ip.to_string()
    } else if let Some(c) = contact {
        let c = c.strip_prefix("tcp://").unwrap_or(c);
        match c.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() && (!h.contains(':') || h.ends_with(']')) => {
                h.trim_start_matches('[').trim_end_matches(']').to_string()
            }
            _ => c.to_string(),
        }
    } else {
        rask_transport::addr::host_ip().to_string()
    };
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("{scheme}://[{v6}]:{}", bound.port()),
        _ => format!("{scheme}://{host}:{}", bound.port()),
    }
}

#[cfg(test)]
mod tests {
    use super::url;

    #[test]
    fn the_url_names_a_host_others_reach() {
        let a = |s: &str| s.parse().unwrap();
        assert_eq!(url(a("10.1.2.3:9000"), None, false), "http://10.1.2.3:9000");
        assert_eq!(
            url(a("0.0.0.0:9000"), Some("tcp://node7:4000"), false),
            "http://node7:9000"
        );
        assert_eq!(
            url(a("0.0.0.0:9000"), Some("node7"), false),
            "http://node7:9000"
        );
        assert_eq!(
            url(a("[::]:9000"), Some("[fe80::1]:4000"), false),
            "http://[fe80::1]:9000"
        );
        assert_eq!(url(a("[::1]:9000"), None, false), "http://[::1]:9000");
        let any = url(a("0.0.0.0:9000"), None, false);
        assert!(any.starts_with("http://") && any.ends_with(":9000") && !any.contains("0.0.0.0"));
        assert_eq!(url(a("10.1.2.3:9000"), None, true), "https://10.1.2.3:9000");
        assert_eq!(
            url(a("[::1]:9000"), None, true),
            "https://[::1]:9000",
            "a worker serving TLS serves its metrics over HTTPS"
        );
    }
}
