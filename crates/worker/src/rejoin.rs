//! Joining the scheduler again when its connection is lost (it restarted, or the network
//! parted us): the worker keeps its values and keeps running what it runs, retries with
//! backoff for [`WorkerConfig::reconnect`](crate::WorkerConfig::reconnect), and joins as a
//! new member that first tells which values it holds (the scheduler takes those that are
//! not stale). Without a reconnect period, or past it, the worker stops.

use std::time::{Duration, Instant};

use rask_proto::msg::{Hello, ToScheduler, ToWorker};
use rask_proto::{TaskId, Value, WorkerId};
use rask_transport::{FrameReader, Sender};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::error::WorkerError;
use crate::event_loop::State;
use crate::events::Event;

/// Values per `Holding` message.
const HOLDING_PART: usize = 50_000;

/// The first wait between tries, doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Reads the scheduler's connection into the loop's events until it ends.
pub(crate) fn spawn_reader(mut reader: FrameReader, ev: mpsc::UnboundedSender<Event>) {
    tokio::spawn(tracing::Instrument::in_current_span(async move {
        let reason = loop {
            match reader.read_batch::<ToWorker>().await {
                Ok(Some(b)) => {
                    if ev.send(Event::FromScheduler(b)).is_err() {
                        return;
                    }
                }
                Ok(None) => break None,
                Err(e) => break Some(e.to_string()),
            }
        };
        let _ = ev.send(Event::SchedulerGone(reason));
    }));
}

/// A new connection to the scheduler, from the reconnecting task.
pub(crate) struct Rejoined {
    pub(crate) reader: FrameReader,
    pub(crate) writer: Sender<ToScheduler>,
    pub(crate) id: u32,
}

impl State {
    /// The scheduler's connection ended: try to join again, or stop.
    pub(crate) fn on_scheduler_gone(&mut self, reason: Option<String>) -> Option<WorkerError> {
        let reason = reason.unwrap_or_else(|| "closed".into());
        let Some(period) = self.cfg.reconnect else {
            return Some(WorkerError::SchedulerLost(reason));
        };
        if self.rejoining {
            return None;
        }
        self.rejoining = true;
        warn!(
            "lost the scheduler ({reason}): joining it again, for up to {:.0} s",
            period.as_secs_f64()
        );
        let mut hello: Hello = self.hello.clone();
        if let Some(w) = &mut hello.worker {
            w.holds = true;
        }
        let (scheduler, conn, events) = (
            self.cfg.scheduler.clone(),
            self.cfg.conn.clone(),
            self.events.clone(),
        );
        tokio::spawn(tracing::Instrument::in_current_span(async move {
            let until = Instant::now() + period;
            let mut wait = FIRST_BACKOFF;
            loop {
                match rask_transport::connect(&scheduler, &hello, conn.clone()).await {
                    Ok((reader, w, id)) => {
                        let writer = rask_transport::spawn_writer(w);
                        let _ =
                            events.send(Event::Rejoined(Box::new(Rejoined { reader, writer, id })));
                        return;
                    }
                    Err(e) if Instant::now() + wait >= until => {
                        let _ = events.send(Event::RejoinFailed(format!(
                            "{reason}; no answer from {scheduler} for {:.0} s: {e}",
                            period.as_secs_f64()
                        )));
                        return;
                    }
                    Err(_) => {
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(MAX_BACKOFF);
                    }
                }
            }
        }));
        None
    }

    /// Joined again as worker `id`: what was assigned before is dropped, the values held
    /// are reported, and work goes on.
    pub(crate) fn on_rejoined(&mut self, r: Rejoined) {
        self.rejoining = false;
        let old = self.id;
        self.id = WorkerId(r.id);
        self.to_scheduler = r.writer;
        spawn_reader(r.reader, self.events.clone());
        // Peers are announced again; links to the old ones may be stale.
        self.peers.clear();
        self.links.clear();
        let held: Vec<TaskId> = self.core.on_rejoined();
        let sizes: Vec<(TaskId, u64)> = {
            let store = self.store.lock().expect("store lock");
            held.iter()
                .filter_map(|t| store.get(t).map(|v| (*t, Value::nbytes(v))))
                .collect()
        };
        info!(
            "joined the scheduler again as worker {} (was {}), holding {} values",
            r.id,
            old.0,
            sizes.len()
        );
        let parts = sizes.len().div_ceil(HOLDING_PART).max(1);
        let mut chunks = sizes.chunks(HOLDING_PART);
        for i in 0..parts {
            let tasks = chunks.next().map_or_else(Vec::new, <[_]>::to_vec);
            let _ = self.to_scheduler.send(ToScheduler::Holding {
                tasks,
                last: i + 1 == parts,
            });
        }
        self.drive();
    }
}
