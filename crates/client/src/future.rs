//! [`Future`]: a handle to a task's result (releasing the key when the last handle is
//! dropped), and conversions of results into Rust types.

use std::future::IntoFuture;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use rask_proto::Value;

use crate::client::Client;
use crate::gather::wait_status;
use crate::runtime::on_runtime;
use crate::state::Status;
use crate::ClientError;

/// A handle to a task's result: a [`Value`] for dynamic ops (`submit("inc", …)`), the
/// op's own type for typed ops (`submit(hits, …)` gives a `Future<u64>`). Dropping the
/// last handle of a key releases it.
pub struct Future<T = Value> {
    pub(crate) key: Arc<str>,
    /// The number of its key when a map of this client's made it (`{prefix}-{n}`): its
    /// release finds the key's slot without reading the number out of the text again.
    pub(crate) number: Option<u64>,
    pub(crate) client: Client,
    /// Turns the task's value into a `T`.
    pub(crate) decode: fn(Value) -> Result<T, String>,
}

/// A dynamic op's value, as it is.
pub(crate) fn as_is(v: Value) -> Result<Value, String> {
    Ok(v)
}

/// A typed op's value, decoded as `T`.
pub(crate) fn typed<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, String> {
    rask_proto::typed::from_value(&v).map_err(|e| e.to_string())
}

impl<T> Future<T> {
    /// The task's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Blocks until the result is available and fetches it from the worker holding it.
    pub fn result(&self) -> Result<T, ClientError> {
        let mut v = self.client.gather(std::slice::from_ref(self))?;
        Ok(v.pop().expect("invariant: one value"))
    }

    /// The result, awaitable from any async runtime.
    pub async fn result_async(&self) -> Result<T, ClientError> {
        let mut v = self.client.gather_async(std::slice::from_ref(self)).await?;
        Ok(v.pop().expect("invariant: one value"))
    }

    /// Waits until the task is done (in memory or failed) without fetching its value.
    pub fn wait(&self) -> Result<(), ClientError> {
        let (inner, key) = (self.client.inner.clone(), self.key.clone());
        self.client
            .inner
            .block(async move { wait_status(&inner, &key).await.map(|_| ()) })
    }

    /// [`Future::wait`], awaitable from any async runtime.
    pub async fn wait_async(&self) -> Result<(), ClientError> {
        let (inner, key) = (self.client.inner.clone(), self.key.clone());
        let fut = async move { wait_status(&inner, &key).await.map(|_| ()) };
        on_runtime(&self.client.inner.handle, fut).await
    }

    /// Whether the task has finished (successfully or not).
    pub fn done(&self) -> bool {
        let st = self.client.inner.state();
        st.keys
            .get(&self.key)
            .is_some_and(|e| e.status != Status::Pending)
    }

    /// The value as `T`, or an error naming the key and the type.
    pub(crate) fn decode(&self, v: Value) -> Result<T, ClientError> {
        (self.decode)(v).map_err(|message| ClientError::Decode {
            key: self.key.to_string(),
            ty: std::any::type_name::<T>(),
            message,
        })
    }
}

impl<T> Clone for Future<T> {
    fn clone(&self) -> Self {
        let mut st = self.client.inner.state();
        if let Some(e) = st.keys.get_mut(&self.key) {
            e.refs += 1;
        }
        Future {
            key: self.key.clone(),
            number: self.number,
            client: self.client.clone(),
            decode: self.decode,
        }
    }
}

impl<T> Drop for Future<T> {
    fn drop(&mut self) {
        self.client.release(&self.key, self.number);
    }
}

impl<T> std::fmt::Debug for Future<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Future({:?})", self.key)
    }
}

impl<'a, T: Send + 'static> IntoFuture for &'a Future<T> {
    type Output = Result<T, ClientError>;
    type IntoFuture = Pin<Box<dyn std::future::Future<Output = Self::Output> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.result_async())
    }
}

/// Conversions from result values.
pub trait FromValue: Sized {
    /// The value as `Self`; [`ClientError::Type`] when it is of another type.
    fn from_value(v: Value) -> Result<Self, ClientError>;
}

macro_rules! from_value {
    ($($t:ty => $p:pat => $e:expr, $name:literal);* $(;)?) => {$(
        impl FromValue for $t {
            fn from_value(v: Value) -> Result<Self, ClientError> {
                match v {
                    $p => Ok($e),
                    other => Err(ClientError::Type { expected: $name, got: other.type_name() }),
                }
            }
        }
    )*};
}

from_value! {
    i64 => Value::Int(i) => i, "int";
    f64 => Value::Float(f) => f, "float";
    bool => Value::Bool(b) => b, "bool";
    String => Value::Str(s) => s, "str";
    Bytes => Value::Bytes(b) => b, "bytes";
    Vec<Value> => Value::List(l) => l, "list";
}

impl FromValue for Value {
    fn from_value(v: Value) -> Result<Self, ClientError> {
        Ok(v)
    }
}

impl Future<Value> {
    /// The result converted to `T` (blocking).
    pub fn result_as<T: FromValue>(&self) -> Result<T, ClientError> {
        T::from_value(self.result()?)
    }
}
