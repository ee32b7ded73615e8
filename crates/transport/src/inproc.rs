//! Same-process transfers: endpoints registered by address, reached without a socket. A
//! transfer hands over a reference to the holder's buffers (`Bytes` are shared, never
//! copied).

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

type Entry = Weak<dyn Any + Send + Sync>;

/// What a data connection would answer to a `GetData`: the values held, and the tasks not.
pub type Fetched = (
    Vec<(rask_proto::TaskId, rask_proto::Value)>,
    Vec<rask_proto::TaskId>,
);

type GetFn = dyn Fn(&[rask_proto::TaskId]) -> Fetched + Send + Sync;

/// A worker's data, as peers and clients in the same process reach it.
pub struct DataEndpoint {
    get: Box<GetFn>,
}

impl DataEndpoint {
    /// An endpoint answering requests with `get`, called on the requester's thread.
    pub fn new(get: impl Fn(&[rask_proto::TaskId]) -> Fetched + Send + Sync + 'static) -> Self {
        DataEndpoint { get: Box::new(get) }
    }

    /// The values of `tasks` (sharing their buffers) and the tasks not held.
    pub fn get(&self, tasks: &[rask_proto::TaskId]) -> Fetched {
        (self.get)(tasks)
    }
}

fn registry() -> &'static Mutex<HashMap<String, Entry>> {
    static R: OnceLock<Mutex<HashMap<String, Entry>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// Keeps an endpoint reachable in this process until dropped.
pub struct Registration(String);

impl Drop for Registration {
    fn drop(&mut self) {
        registry().lock().expect("inproc registry").remove(&self.0);
    }
}

/// Makes `endpoint` reachable under `addr` (the same address peers would use over tcp).
pub fn register<T: Any + Send + Sync>(addr: &str, endpoint: &Arc<T>) -> Registration {
    let weak: Weak<T> = Arc::downgrade(endpoint);
    registry()
        .lock()
        .expect("inproc registry")
        .insert(addr.to_string(), weak);
    Registration(addr.to_string())
}

/// The endpoint registered under `addr`, if it lives in this process and has type `T`.
pub fn lookup<T: Any + Send + Sync>(addr: &str) -> Option<Arc<T>> {
    let e = registry()
        .lock()
        .expect("inproc registry")
        .get(addr)?
        .upgrade()?;
    e.downcast::<T>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_follows_registration() {
        let v = Arc::new(Mutex::new(vec![1u8, 2, 3]));
        let reg = register("tcp://127.0.0.1:1", &v);
        let got = lookup::<Mutex<Vec<u8>>>("tcp://127.0.0.1:1").unwrap();
        assert!(Arc::ptr_eq(&got, &v));
        assert!(lookup::<String>("tcp://127.0.0.1:1").is_none());
        drop(got);
        drop(reg);
        assert!(lookup::<Mutex<Vec<u8>>>("tcp://127.0.0.1:1").is_none());
    }
}
