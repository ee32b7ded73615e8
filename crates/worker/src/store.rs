//! The data store: the values this worker holds, and how they are looked up for peers
//! and clients (on the wire, lent from a device, or inline with a completion).

use std::sync::{Arc, Mutex};

use rask_proto::msg::DataItem;
use rask_proto::packed::Packed;
use rask_proto::{Datum, IdMap, IpcBuffer, TaskId, Value};
use tracing::warn;

/// Task outputs and fetched inputs, shared with the data server.
pub(crate) type Store = Arc<Mutex<IdMap<TaskId, Value>>>;

/// The stored values of `tasks` (clones: they share the bytes), and the tasks not stored.
pub(crate) fn stored(store: &Store, tasks: &[TaskId]) -> (Vec<(TaskId, Value)>, Vec<TaskId>) {
    let store = store.lock().expect("store lock");
    let mut values = Vec::with_capacity(tasks.len());
    let mut missing = Vec::new();
    for t in tasks {
        match store.get(t) {
            Some(v) => values.push((*t, v.clone())),
            None => missing.push(*t),
        }
    }
    (values, missing)
}

/// The stored values of `tasks` in wire form, their buffers appended to one list by
/// `to_datum`, and the tasks not stored (or whose bytes on a device cannot be read: the
/// scheduler then finds them elsewhere or recomputes them). The values are taken out of
/// the store first: bringing one from a GPU's memory to the host must not hold it.
pub(crate) fn lookup_with<B>(
    store: &Store,
    tasks: &[TaskId],
    mut to_datum: impl FnMut(&Value, &mut Vec<B>) -> Result<Datum, rask_proto::ProtoError>,
) -> (Vec<DataItem>, Vec<B>, Vec<TaskId>) {
    let (found, mut missing) = stored(store, tasks);
    let mut bufs = Vec::new();
    let mut items = Vec::with_capacity(found.len());
    for (t, v) in found {
        let before = bufs.len();
        match to_datum(&v, &mut bufs) {
            Ok(value) => items.push(DataItem { task: t, value }),
            Err(e) => {
                warn!(task = t.0, "cannot send a value: {e}");
                bufs.truncate(before);
                missing.push(t);
            }
        }
    }
    (items, bufs, missing)
}

/// A lookup for a same-host peer: bytes in a device's memory stay there when the
/// requester imports them `into_device`; else they come to the host.
pub(crate) fn lookup_data(
    store: &Store,
    tasks: Vec<TaskId>,
    into_device: bool,
) -> rask_transport::data::Lookup {
    lookup_with(store, &tasks, |v, bufs| v.to_datum_lent(bufs, into_device))
}

/// Whether a value holds bytes lent from a peer's device, not yet imported.
pub(crate) fn lent(v: &Value) -> bool {
    v.any_leaf(&|x| matches!(x, Value::Device(d) if d.downcast::<IpcBuffer>().is_some()))
}

/// The largest result reported inline with its completion.
pub(crate) const INLINE_VALUE_MAX: u64 = 1024;

/// A result packed to go with its report, if it is small and has no byte payload.
pub(crate) fn inline_value(v: &Value) -> Option<Packed> {
    if v.nbytes() > INLINE_VALUE_MAX {
        return None;
    }
    Packed::of_value(v)
}
