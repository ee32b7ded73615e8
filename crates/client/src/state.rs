//! What the client knows of each held key (compact: a client may hold millions), and
//! the reader of the scheduler connection that keeps it current.

use std::collections::HashMap;
use std::sync::Arc;

use rask_proto::msg::{Holder, TaskError, ToClient};
use rask_proto::{TaskId, Value, WorkerId};
use rask_transport::Batch;
use tokio::sync::oneshot;

use crate::client::Inner;
use crate::gather::DataLink;

/// The state of a key, as the scheduler last told it. Kept small: a client may hold
/// millions of keys.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Status {
    Pending,
    Memory {
        task: TaskId,
        /// The worker to fetch it from (see [`State::workers`]), if any holds it.
        holder: Option<WorkerId>,
        /// The value itself, when it came with the news (small results).
        value: Option<Box<Value>>,
    },
    /// Failed; shared by every key one rejection or failure reaches.
    Erred(Arc<TaskError>),
    /// The scheduler connection ended first ([`State::closed`] says why).
    Lost,
}

pub(crate) struct KeyEntry {
    /// Live [`Future`] handles for the key.
    pub(crate) refs: u32,
    pub(crate) status: Status,
}

#[derive(Default)]
pub(crate) struct State {
    pub(crate) keys: HashMap<Arc<str>, KeyEntry>,
    /// Where workers that hold keys can be reached, by id (each key names only its
    /// holder's id).
    pub(crate) workers: HashMap<WorkerId, Holder>,
    /// Tasks waiting for a key's status to change; only keys someone waits on have
    /// an entry.
    pub(crate) waiters: HashMap<Arc<str>, Vec<oneshot::Sender<()>>>,
    pub(crate) requests: HashMap<u64, oneshot::Sender<ToClient>>,
    pub(crate) links: HashMap<String, DataLink>,
    /// Set when the scheduler connection is gone: why.
    pub(crate) closed: Option<String>,
}

impl State {
    /// Sets a held key's status and wakes whoever waits on it.
    pub(crate) fn set_status(&mut self, key: &str, status: Status) {
        if let Some(e) = self.keys.get_mut(key) {
            e.status = status;
            if let Some(ws) = self.waiters.remove(key) {
                ws.into_iter().for_each(|w| {
                    let _ = w.send(());
                });
            }
        }
    }
}

/// Reads the scheduler connection and updates key states and pending requests.
pub(crate) async fn read_scheduler(
    mut reader: rask_transport::FrameReader,
    inner: std::sync::Weak<Inner>,
) {
    let reason = loop {
        match reader.read_batch::<ToClient>().await {
            Ok(Some(Batch { msgs, .. })) => {
                let Some(inner) = inner.upgrade() else { return };
                let mut st = inner.state();
                for m in msgs {
                    if let ToClient::SendProgram { code } = m {
                        tokio::spawn(crate::upload::send_program(inner.clone(), code));
                        continue;
                    }
                    on_message(&mut st, m);
                }
            }
            Ok(None) => break "the scheduler closed the connection".to_string(),
            Err(e) => break e.to_string(),
        }
    };
    let Some(inner) = inner.upgrade() else { return };
    let mut st = inner.state();
    // A reason the scheduler gave before closing says more than the end of the stream.
    let reason = st.closed.clone().unwrap_or(reason);
    st.closed = Some(reason);
    st.requests.clear();
    for e in st.keys.values_mut() {
        if e.status == Status::Pending {
            e.status = Status::Lost;
        }
    }
    // Every waiter wakes and finds the key lost (or released).
    st.waiters.clear();
}

pub(crate) fn on_message(st: &mut State, m: ToClient) {
    match m {
        ToClient::KeyInMemory {
            key,
            task,
            holders,
            value,
            ..
        } => {
            if !st.keys.contains_key(key.as_str()) {
                return;
            }
            let holder = holders.first().map(|h| h.worker);
            for h in holders {
                if st.workers.get(&h.worker) != Some(&h) {
                    st.workers.insert(h.worker, h);
                }
            }
            let value = value.and_then(|d| d.to_value(&[], &[]).ok()).map(Box::new);
            st.set_status(
                &key,
                Status::Memory {
                    task,
                    holder,
                    value,
                },
            );
        }
        ToClient::KeyErred { key, error } => st.set_status(&key, Status::Erred(Arc::new(error))),
        ToClient::GraphRejected { keys, message } => {
            let error = Arc::new(TaskError {
                key: String::new(),
                op: String::new(),
                message,
            });
            for k in keys {
                st.set_status(&k, Status::Erred(error.clone()));
            }
        }
        ToClient::KeysLost { keys, reason } => {
            for k in keys {
                let error = Arc::new(TaskError {
                    key: k.clone(),
                    op: String::new(),
                    message: format!("lost: {reason}"),
                });
                st.set_status(&k, Status::Erred(error));
            }
        }
        ToClient::Closing { reason } => {
            st.closed = Some(format!("the scheduler closed the connection: {reason}"));
        }
        ToClient::SendProgram { .. } => {} // answered by the reader
        reply @ (ToClient::WhoHasReply { .. }
        | ToClient::InfoReply { .. }
        | ToClient::RetireWorkersReply { .. }
        | ToClient::AdaptiveTargetReply { .. }
        | ToClient::WorkersToCloseReply { .. }
        | ToClient::TaskStreamReply { .. }
        | ToClient::StoryReply { .. }) => {
            let req = match &reply {
                ToClient::WhoHasReply { req, .. }
                | ToClient::InfoReply { req, .. }
                | ToClient::RetireWorkersReply { req, .. }
                | ToClient::AdaptiveTargetReply { req, .. }
                | ToClient::WorkersToCloseReply { req, .. }
                | ToClient::TaskStreamReply { req, .. }
                | ToClient::StoryReply { req, .. } => *req,
                _ => unreachable!(),
            };
            if let Some(tx) = st.requests.remove(&req) {
                let _ = tx.send(reply);
            }
        }
    }
}
