//! Watching a cluster while it works: a poller that reads the dashboard as open pages
//! would, for measuring what watching costs the scheduler.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// Polls a dashboard's status, task stream (by cursor) and metrics every 100 ms on a
/// thread of its own, until dropped.
pub(crate) struct Poller {
    stop: Arc<AtomicBool>,
    polls: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Poller {
    /// Starts polling the dashboard at `url` (`http://HOST:PORT/status`).
    pub(crate) fn start(url: &str) -> Result<Poller> {
        let host = host_of(url)?;
        get(&host, "/health").context("the dashboard does not answer")?;
        let stop = Arc::new(AtomicBool::new(false));
        let polls = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), polls.clone());
        let thread = std::thread::spawn(move || {
            let mut cursor = 0u64;
            while !s.load(Ordering::Relaxed) {
                let _ = get(&host, "/api/v1/status");
                if let Ok(body) = get(&host, &format!("/api/v1/task_stream?since={cursor}")) {
                    cursor = last_cursor(&body).unwrap_or(cursor);
                }
                let _ = get(&host, "/metrics");
                p.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Ok(Poller {
            stop,
            polls,
            thread: Some(thread),
        })
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        eprintln!(
            "dashboard polled {} times (status, task stream, metrics each)",
            self.polls.load(Ordering::Relaxed)
        );
    }
}

/// The largest `"cursor":N` in a task-stream reply.
fn last_cursor(body: &str) -> Option<u64> {
    body.split("\"cursor\":")
        .skip(1)
        .filter_map(|r| r.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .max()
}

/// The `HOST:PORT` of a dashboard's URL (`http://HOST:PORT/…`).
pub(crate) fn host_of(url: &str) -> Result<String> {
    match url
        .strip_prefix("http://")
        .and_then(|r| r.split('/').next())
        .filter(|h| !h.is_empty())
    {
        Some(host) => Ok(host.to_string()),
        None => bail!("no dashboard at {url:?}"),
    }
}

/// The body of `GET path` from `host`.
pub(crate) fn get(host: &str, path: &str) -> Result<String> {
    let mut s = std::net::TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    match out.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
        _ => bail!("GET {path}: {}", out.lines().next().unwrap_or("no answer")),
    }
}
