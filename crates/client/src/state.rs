//! What the client knows of each held key (compact: a client may hold millions), and
//! the reader of the scheduler connection that keeps it current.

use std::sync::Arc;

use rask_proto::msg::{map_key, Holder, TaskError, ToClient};
use rask_proto::packed::Packed;
use rask_proto::{TaskId, Value, WorkerId};
use rask_transport::Batch;
use rustc_hash::FxHashMap as HashMap;
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
        value: Option<Carried>,
    },
    /// Failed; shared by every key one rejection or failure reaches.
    Erred(Arc<TaskError>),
    /// The scheduler connection ended first ([`State::closed`] says why).
    Lost,
}

/// A result that came with the news: a scalar in place (most results of small tasks: no
/// allocation for them, and none to free on another thread), any other value boxed (the
/// status stays small).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Carried {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Boxed(Box<Value>),
}

impl Carried {
    pub(crate) fn new(v: Value) -> Self {
        match v {
            Value::Null => Carried::Null,
            Value::Bool(b) => Carried::Bool(b),
            Value::Int(i) => Carried::Int(i),
            Value::Float(f) => Carried::Float(f),
            v => Carried::Boxed(Box::new(v)),
        }
    }

    /// A copy of the value.
    pub(crate) fn value(&self) -> Value {
        match self {
            Carried::Null => Value::Null,
            Carried::Bool(b) => Value::Bool(*b),
            Carried::Int(i) => Value::Int(*i),
            Carried::Float(f) => Value::Float(*f),
            Carried::Boxed(v) => (**v).clone(),
        }
    }
}

pub(crate) struct KeyEntry {
    /// Live [`Future`] handles for the key.
    pub(crate) refs: u32,
    /// Someone may wait on the key's status (it may have an entry in
    /// [`State::waiters`]): most keys never do, and a change of theirs looks no further.
    pub(crate) waited: bool,
    pub(crate) status: Status,
}

impl KeyEntry {
    /// The entry of a key just held: one handle, pending.
    pub(crate) fn new() -> Self {
        KeyEntry {
            refs: 1,
            waited: false,
            status: Status::Pending,
        }
    }
}

#[derive(Default)]
pub(crate) struct State {
    pub(crate) keys: crate::keys::Keys,
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
    /// Echoes still to come back, and who to tell when none is left
    /// ([`Client::echo`](crate::Client::echo)).
    pub(crate) echoes: Option<(u64, oneshot::Sender<()>)>,
}

impl State {
    /// The holder at `addr` could not be reached for `key`'s value (of task `task`): unless
    /// news came meanwhile, the key waits again for the scheduler to say where it is.
    pub(crate) fn forget_holder(&mut self, key: &str, task: TaskId, addr: &str) {
        let Some(e) = self.keys.get_mut(key) else {
            return;
        };
        if let Status::Memory {
            task: t,
            holder: Some(w),
            value: None,
        } = &e.status
        {
            if *t == task && self.workers.get(w).is_some_and(|h| h.addr == addr) {
                e.status = Status::Pending;
            }
        }
    }

    /// Sets a held key's status and wakes whoever waits on it.
    pub(crate) fn set_status(&mut self, key: &str, status: Status) {
        if let Some(e) = self.keys.get_mut(key) {
            e.status = status;
            if std::mem::take(&mut e.waited) {
                self.wake(key);
            }
        }
    }

    /// Wakes whoever waits on `key`.
    fn wake(&mut self, key: &str) {
        if let Some(ws) = self.waiters.remove(key) {
            ws.into_iter().for_each(|w| {
                let _ = w.send(());
            });
        }
    }

    /// A channel that is told (or dropped) when `key`'s status changes or the key is
    /// released; `None` if the key is not held.
    pub(crate) fn wait_on(&mut self, key: &Arc<str>) -> Option<oneshot::Receiver<()>> {
        let e = self.keys.get_mut(key)?;
        e.waited = true;
        let (tx, rx) = oneshot::channel();
        self.waiters.entry(key.clone()).or_default().push(tx);
        Some(rx)
    }
}

/// Reads the scheduler connection and updates key states and pending requests. When the
/// connection is lost (not closed by the scheduler, which says why first), it connects
/// again for up to the client's reconnect period: messages queue meanwhile, futures keep
/// waiting, and the scheduler is asked for the state of every key held.
pub(crate) async fn read_scheduler(
    mut reader: rask_transport::FrameReader,
    inner: std::sync::Weak<Inner>,
) {
    loop {
        let reason = read_until_lost(&mut reader, &inner).await;
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let told = strong.state().closed.clone();
        let period = strong.reconnect;
        drop(strong);
        let reason = match told {
            Some(told) => told,
            None if !period.is_zero() => match reconnect(&inner, &reason, period).await {
                Ok(r) => {
                    reader = r;
                    continue;
                }
                Err(e) => e,
            },
            None => reason,
        };
        let Some(inner) = inner.upgrade() else { return };
        let mut st = inner.state();
        st.closed = Some(reason);
        st.requests.clear();
        for e in st.keys.values_mut() {
            if e.status == Status::Pending {
                e.status = Status::Lost;
            }
        }
        // Every waiter wakes and finds the key lost (or released).
        st.waiters.clear();
        return;
    }
}

/// Reads batches until the connection ends: why it did.
async fn read_until_lost(
    reader: &mut rask_transport::FrameReader,
    inner: &std::sync::Weak<Inner>,
) -> String {
    loop {
        match reader.read_batch::<ToClient>().await {
            Ok(Some(Batch { msgs, .. })) => {
                let Some(inner) = inner.upgrade() else {
                    return "the client was dropped".into();
                };
                let mut st = inner.state();
                for m in msgs {
                    if let ToClient::SendProgram { code } = m {
                        tokio::spawn(crate::upload::send_program(inner.clone(), code));
                        continue;
                    }
                    on_message(&mut st, m);
                }
            }
            Ok(None) => return "the scheduler closed the connection".to_string(),
            Err(e) => return e.to_string(),
        }
    }
}

/// Connects to the scheduler again, retrying with backoff for `period`: the new
/// connection's reader, or why there is none.
async fn reconnect(
    inner: &std::sync::Weak<Inner>,
    lost: &str,
    period: std::time::Duration,
) -> Result<rask_transport::FrameReader, String> {
    let (scheduler, mut hello, conn) = {
        let Some(inner) = inner.upgrade() else {
            return Err("the client was dropped".into());
        };
        // What is sent meanwhile waits for the new connection.
        let (tx, pending) = rask_transport::channel::<rask_proto::msg::ToScheduler>();
        *inner.to_scheduler.lock().expect("sender lock") = tx;
        *inner.pending.lock().expect("pending lock") = Some(pending);
        let mut st = inner.state();
        // Answers to requests in flight are lost with the connection.
        st.requests.clear();
        // Where values are is told again (holders may have joined again under new ids).
        for e in st.keys.values_mut() {
            if matches!(e.status, Status::Memory { value: None, .. }) {
                e.status = Status::Pending;
            }
        }
        (
            inner.scheduler.clone(),
            inner.hello.clone(),
            inner.conn.clone(),
        )
    };
    tracing::warn!(
        "lost the scheduler ({lost}): connecting again for up to {:.0} s",
        period.as_secs_f64()
    );
    let until = std::time::Instant::now() + period;
    let mut wait = std::time::Duration::from_millis(100);
    loop {
        if let Some(inner) = inner.upgrade() {
            hello.resume = Some(inner.id());
        }
        match rask_transport::connect(&scheduler, &hello, conn.clone()).await {
            Ok((reader, w, id)) => {
                let Some(inner) = inner.upgrade() else {
                    return Err("the client was dropped".into());
                };
                let old = inner.id.swap(id, std::sync::atomic::Ordering::Relaxed);
                if let Some(pending) = inner.pending.lock().expect("pending lock").take() {
                    pending.start(w);
                }
                let keys: Vec<String> = inner.state().keys.names();
                tracing::info!(
                    "connected to the scheduler again as client {id} (was {old}); asking for {} keys",
                    keys.len()
                );
                if !keys.is_empty() {
                    let _ = inner
                        .sender()
                        .send(rask_proto::msg::ToScheduler::Resubscribe { keys });
                }
                return Ok(reader);
            }
            Err(e) if std::time::Instant::now() + wait >= until => {
                return Err(format!(
                    "lost the scheduler ({lost}) and could not connect again within {:.0} s: {e}",
                    period.as_secs_f64()
                ));
            }
            Err(_) => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(2));
            }
        }
    }
}

/// A key's news: in memory on `holder` (if any holds it), with its value when it came
/// along; `true` if a future waited on it (to be woken).
fn in_memory(
    e: &mut KeyEntry,
    task: TaskId,
    holder: Option<WorkerId>,
    value: Option<Packed>,
) -> bool {
    let value = value
        .and_then(|p| p.to_value::<bytes::Bytes>(&[], &[]).ok())
        .map(Carried::new);
    e.status = Status::Memory {
        task,
        holder,
        value,
    };
    std::mem::take(&mut e.waited)
}

pub(crate) fn on_message(st: &mut State, m: ToClient) {
    match m {
        ToClient::Echo { .. } => {
            if let Some((left, _)) = &mut st.echoes {
                *left = left.saturating_sub(1);
                if *left == 0 {
                    let (_, done) = st.echoes.take().expect("invariant: just seen");
                    let _ = done.send(());
                }
            }
        }
        ToClient::Workers { holders } => {
            for h in holders {
                st.workers.insert(h.worker, h);
            }
        }
        ToClient::KeyInMemory {
            key,
            task,
            holders,
            value,
            ..
        } => {
            let Some(e) = st.keys.get_mut(&key) else {
                return;
            };
            if in_memory(e, task, holders.first().copied(), value) {
                st.wake(&key);
            }
        }
        ToClient::MapInMemory {
            prefix,
            holders,
            keys,
        } => {
            let holder = holders.first().copied();
            let mut waited = Vec::new();
            let items = keys.into_iter().map(|news| (news.n, news));
            st.keys.each_numbered(&prefix, items, |news, e| {
                if in_memory(e, news.task, holder, news.value) {
                    waited.push(news.n);
                }
            });
            for n in waited {
                st.wake(&map_key(&prefix, n));
            }
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
        | ToClient::StoryReply { .. }
        | ToClient::DatasetsReply { .. }) => {
            let req = match &reply {
                ToClient::WhoHasReply { req, .. }
                | ToClient::InfoReply { req, .. }
                | ToClient::RetireWorkersReply { req, .. }
                | ToClient::AdaptiveTargetReply { req, .. }
                | ToClient::WorkersToCloseReply { req, .. }
                | ToClient::TaskStreamReply { req, .. }
                | ToClient::StoryReply { req, .. }
                | ToClient::DatasetsReply { req, .. } => *req,
                _ => unreachable!(),
            };
            if let Some(tx) = st.requests.remove(&req) {
                let _ = tx.send(reply);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value comes back as it was; scalars are kept in place, the rest boxed, and a
    /// status stays within 32 bytes.
    #[test]
    fn a_carried_value_is_kept_whole_and_scalars_in_place() {
        let values = [
            Value::Null,
            Value::Bool(true),
            Value::Int(-7),
            Value::Float(2.5),
            Value::Str("a string".into()),
            Value::List(vec![Value::Int(1), Value::Null]),
            Value::Bytes(bytes::Bytes::from_static(b"bytes")),
        ];
        for v in values {
            let c = Carried::new(v.clone());
            assert_eq!(c.value(), v);
            let scalar = matches!(
                v,
                Value::Null | Value::Bool(_) | Value::Int(_) | Value::Float(_)
            );
            assert_eq!(!matches!(c, Carried::Boxed(_)), scalar, "{v:?}");
        }
        assert!(std::mem::size_of::<Status>() <= 32);
    }
}
