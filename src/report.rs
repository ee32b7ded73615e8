//! `performance_report`: what a piece of work did on the cluster, in one self-contained
//! HTML file (no script, no external resource: it opens anywhere, offline, and can be
//! attached to an issue), as Dask's `performance_report` context manager writes one.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;
use std::time::Instant;

use crate::{Client, ClientError};
use rask_proto::msg::SchedulerInfoMsg;
use rask_proto::observe::TaskStreamEntryMsg;

/// The most task-stream entries a report draws (the summary counts them all).
const DRAWN: usize = 10_000;

/// Runs `work`, then writes to `path` a report of what the cluster did meanwhile: the
/// task stream (each task on its worker, in time), time and tasks per task prefix, and per
/// worker its tasks, compute time and bytes received by link. `work`'s result is returned;
/// an error writing the report is returned instead.
pub fn performance_report<R>(
    client: &Client,
    path: impl AsRef<Path>,
    work: impl FnOnce() -> R,
) -> Result<R, ClientError> {
    let before = client.scheduler_info()?;
    let t = Instant::now();
    let out = work();
    let elapsed = t.elapsed().as_secs_f64();
    let after = client.scheduler_info()?;
    let mut entries = Vec::new();
    let mut since = before.task_stream_last;
    loop {
        let s = client.get_task_stream(since, 10_000)?;
        let done = s.entries.is_empty() || s.last <= since;
        since = s.last;
        entries.extend(s.entries);
        if done {
            break;
        }
    }
    let html = render(&before, &after, &entries, elapsed);
    std::fs::write(path.as_ref(), html).map_err(|e| {
        ClientError::Other(format!(
            "writing the performance report {}: {e}",
            path.as_ref().display()
        ))
    })?;
    Ok(out)
}

/// `s` safe inside HTML text and attributes.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn hue(s: &str) -> u32 {
    s.bytes().fold(0u32, |h, b| (h * 31 + b as u32) % 360)
}

fn render(
    before: &SchedulerInfoMsg,
    after: &SchedulerInfoMsg,
    entries: &[TaskStreamEntryMsg],
    elapsed: f64,
) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Rask performance report</title>\
         <style>body{{font:14px system-ui,sans-serif;margin:20px;color:#1d2330}}table{{border-collapse:collapse}}\
         th,td{{padding:3px 10px;border-bottom:1px solid #e5e7eb;text-align:left}}h2{{font-size:15px;color:#6b7280}}\
         svg text{{font-size:11px;fill:#6b7280}}</style></head><body>\
         <h1>Rask performance report</h1><p>{} tasks in {:.3} s on {} workers ({}), Rask {}.</p>",
        entries.len(),
        elapsed,
        after.workers.len(),
        esc(&after.address),
        esc(&after.rask_version)
    );
    // Per prefix.
    let mut prefixes: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for e in entries {
        let p = prefixes.entry(&e.prefix).or_default();
        p.0 += 1;
        p.1 += e.stop_us.saturating_sub(e.start_us);
    }
    h.push_str(
        "<h2>Task prefixes</h2><table><tr><th>prefix</th><th>tasks</th><th>compute s</th></tr>",
    );
    for (p, (n, us)) in &prefixes {
        let _ = write!(
            h,
            "<tr class=\"prefix\"><td>{}</td><td>{n}</td><td>{:.4}</td></tr>",
            esc(p),
            *us as f64 / 1e6
        );
    }
    h.push_str("</table>");
    // Per worker: tasks and compute from the stream, bytes received from the counters.
    h.push_str(
        "<h2>Workers</h2><table><tr><th>worker</th><th>device</th><th>tasks</th>\
         <th>compute s</th><th>received meanwhile, by link</th></tr>",
    );
    for w in &after.workers {
        let mine = entries.iter().filter(|e| e.worker_name == w.name);
        let (n, us) = mine.fold((0u64, 0u64), |(n, us), e| {
            (n + 1, us + e.stop_us.saturating_sub(e.start_us))
        });
        let was = before.workers.iter().find(|b| b.id == w.id);
        let received: Vec<String> = w
            .received
            .iter()
            .map(|(link, now)| {
                let then = was
                    .and_then(|b| b.received.iter().find(|(l, _)| l == link))
                    .map_or(0, |(_, v)| *v);
                format!("{link} {} B", now.saturating_sub(then))
            })
            .collect();
        let _ = write!(
            h,
            "<tr class=\"worker\"><td>{}</td><td>{}</td><td>{n}</td><td>{:.4}</td><td>{}</td></tr>",
            esc(&w.name),
            esc(&w.device),
            us as f64 / 1e6,
            esc(&received.join(", "))
        );
    }
    h.push_str("</table>");
    // The task stream.
    let drawn = &entries[entries.len().saturating_sub(DRAWN)..];
    let mut workers: Vec<&str> = after.workers.iter().map(|w| w.name.as_str()).collect();
    for e in drawn {
        if !workers.contains(&e.worker_name.as_str()) {
            workers.push(&e.worker_name);
        }
    }
    let start = drawn.iter().map(|e| e.start_us).min().unwrap_or(0);
    let end = drawn
        .iter()
        .map(|e| e.stop_us)
        .max()
        .unwrap_or(start)
        .max(start + 1);
    let (w, row) = (1000.0, 18.0);
    let x = |t: u64| 140.0 + (w - 144.0) * (t - start) as f64 / (end - start) as f64;
    let _ = write!(
        h,
        "<h2>Task stream ({} of {} tasks drawn)</h2><svg width=\"{w}\" height=\"{}\">",
        drawn.len(),
        entries.len(),
        workers.len() as f64 * row + 4.0
    );
    for (i, name) in workers.iter().enumerate() {
        let _ = write!(
            h,
            "<text x=\"2\" y=\"{}\">{}</text>",
            i as f64 * row + 13.0,
            esc(name)
        );
    }
    for e in drawn {
        let i = workers
            .iter()
            .position(|n| *n == e.worker_name)
            .unwrap_or(0);
        let (x0, x1) = (x(e.start_us), x(e.stop_us.max(e.start_us)));
        let _ = write!(
            h,
            "<rect class=\"task\" data-key=\"{}\" x=\"{x0:.1}\" y=\"{}\" width=\"{:.1}\" height=\"{}\" \
             fill=\"hsl({}, 60%, 55%)\"><title>{} on {}: {:.3} ms</title></rect>",
            esc(&e.key),
            i as f64 * row + 2.0,
            (x1 - x0).max(1.0),
            row - 4.0,
            hue(&e.prefix),
            esc(&e.key),
            esc(&e.worker_name),
            e.stop_us.saturating_sub(e.start_us) as f64 / 1e3
        );
    }
    h.push_str("</svg></body></html>\n");
    h
}
