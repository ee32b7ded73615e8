//! Gathering results: waiting for keys, fetching values from the workers that hold them
//! over the shared data links, retrying when a holder went away.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use rask_proto::msg::{Hello, Holder, Role};
use rask_proto::{IdMap, TaskId, Value, WorkerId};
use tokio::sync::oneshot;

use crate::client::Inner;
use crate::state::{State, Status};
use crate::ClientError;

pub(crate) type DataReply = Result<(Vec<(TaskId, Value)>, Vec<TaskId>), String>;

/// A data link to one worker, and the requests waiting for its replies.
pub(crate) struct DataLink {
    pub(crate) link: rask_transport::data::DataLink,
    pub(crate) pending: Pending,
}

pub(crate) type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<DataReply>>>>;

/// A key's status once it is no longer pending: its value, or the task and worker to
/// fetch it from.
pub(crate) enum Ready {
    Value(Value),
    At(TaskId, WorkerId),
}

/// Where a key's value is now; `None` while it is pending. `number`: the key's number
/// if a map of this client's made it (see [`crate::keys::Keys::get_at`]).
fn ready_now(st: &State, key: &str, number: Option<u64>) -> Result<Option<Ready>, ClientError> {
    let Some(e) = st.keys.get_at(key, number) else {
        return Err(ClientError::Other(format!(
            "key {key:?} is not held by this client (released)"
        )));
    };
    match &e.status {
        Status::Pending => Ok(None),
        Status::Memory { value: Some(v), .. } => Ok(Some(Ready::Value(v.value()))),
        Status::Memory {
            task,
            holder: Some(w),
            value: None,
        } => Ok(Some(Ready::At(*task, *w))),
        Status::Memory { holder: None, .. } => Err(ClientError::Fetch {
            key: key.to_string(),
            message: "no worker holds it".into(),
        }),
        Status::Erred(e) if e.key.is_empty() => Err(ClientError::Rejected(e.message.clone())),
        Status::Erred(e) => Err(ClientError::Task {
            key: key.to_string(),
            cause: e.key.clone(),
            op: e.op.clone(),
            message: e.message.clone(),
        }),
        Status::Lost => Err(ClientError::Disconnected(
            st.closed.clone().unwrap_or_default(),
        )),
    }
}

/// Waits for a key to leave `Pending`; returns where its value is.
pub(crate) async fn wait_status(inner: &Inner, key: &Arc<str>) -> Result<Ready, ClientError> {
    loop {
        let woken = {
            let mut st = inner.state();
            if let Some(ready) = ready_now(&st, key, None)? {
                return Ok(ready);
            }
            st.wait_on(key)
                .expect("invariant: the key is held (just seen)")
        };
        // Woken by a change, or by the waiter list being dropped (released, closed).
        let _ = woken.await;
    }
}

/// Waits (at most `limit` in all) for each of these keys' status to change, whatever it
/// is now.
pub(crate) async fn wait_changes<'a>(
    inner: &Inner,
    keys: impl Iterator<Item = &'a Arc<str>>,
    limit: std::time::Duration,
) {
    let rxs: Vec<_> = {
        let mut st = inner.state();
        let st = &mut *st;
        keys.filter_map(|k| st.wait_on(k)).collect()
    };
    let deadline = tokio::time::Instant::now() + limit;
    for rx in rxs {
        let _ = tokio::time::timeout_at(deadline, rx).await;
    }
}

/// Fetches keys' values from their holders, one request per holder. `numbers`: each
/// key's number if a map of this client's made it.
pub(crate) async fn gather(
    inner: Arc<Inner>,
    keys: Vec<Arc<str>>,
    numbers: Vec<Option<u64>>,
) -> Result<Vec<Value>, ClientError> {
    let mut out: Vec<Option<Value>> = vec![None; keys.len()];
    // Holders that answered without a value: the scheduler is asked to say again, a few
    // times. A holder that cannot be reached is not counted: its keys wait for the
    // scheduler's next news of them (a new holder once it has computed them again, or
    // their loss), as a future waits for its result.
    let mut misses = 0;
    loop {
        let mut by_holder: HashMap<WorkerId, (Holder, Vec<(usize, TaskId)>)> = HashMap::new();
        // Keys are looked at in order under one lock, as far as the first that is still
        // pending, which is then waited on: results mostly come in the order of their
        // keys, so a gather waits a few times, not once a key.
        let mut i = 0;
        while i < keys.len() {
            let woken = {
                let mut st = inner.state();
                loop {
                    let Some(key) = keys.get(i) else {
                        break None;
                    };
                    if out[i].is_none() {
                        match ready_now(&st, key, numbers[i])? {
                            None => {
                                let woken = st.wait_on(key);
                                break Some(woken.expect("invariant: the key is held (just seen)"));
                            }
                            Some(Ready::Value(v)) => out[i] = Some(v),
                            Some(Ready::At(task, w)) => {
                                let holder = || {
                                    let h = st.workers.get(&w);
                                    (h.expect("invariant: holders are known").clone(), Vec::new())
                                };
                                by_holder.entry(w).or_insert_with(holder).1.push((i, task));
                            }
                        }
                    }
                    i += 1;
                }
            };
            if let Some(woken) = woken {
                // Woken by a change, or by the waiter list being dropped (released, closed).
                let _ = woken.await;
            }
        }
        if by_holder.is_empty() {
            break;
        }
        let mut pending = Vec::new();
        for (_, (holder, items)) in by_holder {
            let tasks: Vec<TaskId> = items.iter().map(|(_, t)| *t).collect();
            let reply = fetch(&inner, &holder, tasks);
            pending.push((holder.addr, items, reply));
        }
        let mut missing_any = None;
        for (addr, items, reply) in pending {
            let reply = reply
                .await
                .unwrap_or_else(|_| Err("data connection closed".into()));
            match reply {
                Ok((values, _missing)) => {
                    let mut by_task: IdMap<TaskId, Value> = values.into_iter().collect();
                    for (i, t) in items {
                        match by_task.remove(&t) {
                            Some(v) => out[i] = Some(v),
                            None => missing_any = Some((i, format!("{addr} no longer holds it"))),
                        }
                    }
                }
                Err(e) => {
                    // The holder died or went away: the scheduler will compute the keys
                    // again, or say they are lost.
                    tracing::debug!("gathering from {addr}: {e}");
                    let mut st = inner.state();
                    st.links.remove(&addr);
                    for (i, t) in items {
                        st.forget_holder(&keys[i], t, &addr);
                    }
                }
            }
        }
        if let Some((i, message)) = missing_any {
            misses += 1;
            if misses == 5 {
                return Err(ClientError::Fetch {
                    key: keys[i].to_string(),
                    message,
                });
            }
            // Wait (bounded) for the scheduler to report a new location, or an error.
            let missing = keys.iter().zip(&out).filter(|(_, v)| v.is_none());
            wait_changes(
                &inner,
                missing.map(|(k, _)| k),
                std::time::Duration::from_secs(2),
            )
            .await;
        }
    }
    Ok(out
        .into_iter()
        .map(|v| v.expect("invariant: every key fetched"))
        .collect())
}

/// Asks the worker holding `tasks` for them over a (cached) data link; a worker in this
/// process answers at once.
pub(crate) fn fetch(
    inner: &Arc<Inner>,
    holder: &Holder,
    tasks: Vec<TaskId>,
) -> oneshot::Receiver<DataReply> {
    let (tx, rx) = oneshot::channel();
    let req = inner.next.fetch_add(1, Ordering::Relaxed);
    let mut st = inner.state();
    let link = match st.links.get(&holder.addr) {
        Some(l) if !l.link.is_closed() => l,
        _ => {
            let opened = open_link(inner, holder);
            st.links.insert(holder.addr.clone(), opened);
            &st.links[&holder.addr]
        }
    };
    link.pending.lock().expect("link lock").insert(req, tx);
    // A program's values come to the host.
    match link.link.get(req, tasks, false) {
        Ok(Some(now)) => {
            if let Some(tx) = link.pending.lock().expect("link lock").remove(&req) {
                let _ = tx.send(Ok((now.values, now.missing)));
            }
        }
        Ok(None) => {}
        Err(e) => {
            if let Some(tx) = link.pending.lock().expect("link lock").remove(&req) {
                let _ = tx.send(Err(format!("{}: {e}", holder.addr)));
            }
            st.links.remove(&holder.addr);
        }
    }
    rx
}

/// Resolves a link's waiting requests with its replies (or why it ended).
pub(crate) struct Waiters(Pending);

impl rask_transport::data::ReplySink for Waiters {
    async fn reply(&mut self, r: rask_transport::data::Reply) -> bool {
        if let Some(tx) = self.0.lock().expect("link lock").remove(&r.req) {
            let _ = tx.send(Ok((r.values, r.missing)));
        }
        true
    }

    fn down(self, error: String) {
        for (_, tx) in self.0.lock().expect("link lock").drain() {
            let _ = tx.send(Err(error.clone()));
        }
    }
}

pub(crate) fn open_link(inner: &Arc<Inner>, holder: &Holder) -> DataLink {
    let kind = inner.transport.select(
        (&inner.host_id, std::process::id()),
        (&holder.host_id, holder.pid),
        !holder.shm_addr.is_empty(),
    );
    let pending: Pending = Arc::default();
    let hello = Hello::new(
        Role::Peer,
        format!("client-{}", inner.id()),
        inner.host_id.clone(),
    );
    let to = rask_transport::data::HolderAddr {
        tcp: &holder.addr,
        shm: &holder.shm_addr,
    };
    // Opened on the client's runtime: the link's connection task lives there.
    let _guard = inner.handle.enter();
    let (link, _) = rask_transport::data::DataLink::open(
        kind,
        to,
        hello,
        inner.conn.clone(),
        None,
        Waiters(pending.clone()),
    );
    DataLink { link, pending }
}
