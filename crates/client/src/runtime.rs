//! The client's own runtime thread, and running its futures from a blocking call (on a
//! plain thread or inside any async runtime) or from async code.

use tokio::sync::oneshot;

use crate::ClientError;

/// Runs `fut` on `handle`'s runtime and waits for it on this thread — from a plain thread
/// or from inside any async runtime (where `Handle::block_on` would panic).
pub(crate) fn block_on<T: Send + 'static>(
    handle: &tokio::runtime::Handle,
    fut: impl std::future::Future<Output = Result<T, ClientError>> + Send + 'static,
) -> Result<T, ClientError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = tx.send(fut.await);
    });
    let wait = move || {
        rx.recv()
            .unwrap_or_else(|_| Err(ClientError::Runtime("stopped while a call waited".into())))
    };
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    }
}

/// Runs `fut` on `handle`'s runtime; awaitable from any runtime.
pub(crate) async fn on_runtime<T: Send + 'static>(
    handle: &tokio::runtime::Handle,
    fut: impl std::future::Future<Output = Result<T, ClientError>> + Send + 'static,
) -> Result<T, ClientError> {
    handle
        .spawn(fut)
        .await
        .map_err(|e| ClientError::Runtime(e.to_string()))?
}

/// Starts the client's runtime thread; returns its handle and what stops it when dropped.
pub(crate) fn start_runtime() -> Result<(tokio::runtime::Handle, oneshot::Sender<()>), ClientError>
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClientError::Runtime(format!("cannot start the client runtime: {e}")))?;
    let handle = rt.handle().clone();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("rask-client".into())
        .spawn(move || {
            rt.block_on(async {
                let _ = stop_rx.await;
            });
        })
        .map_err(|e| ClientError::Runtime(format!("cannot start the client thread: {e}")))?;
    Ok((handle, stop_tx))
}
