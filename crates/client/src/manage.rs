//! Managing the cluster from a client: shutting it down, retiring workers gracefully, and
//! what adaptive scaling asks (the scheduler's target and whom to close), as Dask's
//! `Client.shutdown`, `retire_workers`, `adaptive_target` and `workers_to_close`.

use rask_proto::msg::{ToClient, ToScheduler};

use crate::client::Client;
use crate::runtime::on_runtime;
use crate::ClientError;

impl Client {
    /// Shuts the cluster down, as Dask's `Client.shutdown`: the scheduler tells every
    /// worker to close and ends. Returns once the scheduler has the request (a program
    /// may exit right after).
    pub fn shutdown(&self) -> Result<(), ClientError> {
        self.inner
            .sender()
            .send(ToScheduler::Shutdown {
                reason: "asked by a client".into(),
            })
            .map_err(|_| ClientError::Other("the scheduler connection is closed".into()))?;
        // The scheduler reads a connection's messages in order: once a later request is
        // answered, or the connection has closed, it has the shutdown.
        let _ = self.scheduler_info();
        Ok(())
    }

    /// Retires these workers (by name or data address) gracefully, as Dask's
    /// `retire_workers`: they get no new tasks, the tasks they run finish, and the data
    /// only they hold is copied to other workers first; then they are closed, with
    /// nothing to recompute. Returns the names of the workers retired, once they have left
    /// the cluster. A worker whose data no other worker can take (none is left, or none
    /// has the memory) is not retired and not named; unknown names are ignored.
    pub fn retire_workers(&self, names: &[String]) -> Result<Vec<String>, ClientError> {
        retired_from(self.inner.block(self.request(retire_req(names)))?)
    }

    /// [`Client::retire_workers`], awaitable from any async runtime.
    pub async fn retire_workers_async(&self, names: &[String]) -> Result<Vec<String>, ClientError> {
        let fut = self.request(retire_req(names));
        retired_from(on_runtime(&self.inner.handle, fut).await?)
    }

    /// The number of workers the cluster should have for its load, as Dask's
    /// `adaptive_target`: enough that the work assigned and waiting takes about
    /// `target_duration` (Dask's default is 5 s), twice the workers when their memory is
    /// more than 60 % full, fewer when idle workers can go.
    pub fn adaptive_target(
        &self,
        target_duration: std::time::Duration,
    ) -> Result<usize, ClientError> {
        target_from(
            self.inner
                .block(self.request(adaptive_req(target_duration)))?,
        )
    }

    /// [`Client::adaptive_target`], awaitable from any async runtime.
    pub async fn adaptive_target_async(
        &self,
        target_duration: std::time::Duration,
    ) -> Result<usize, ClientError> {
        let fut = self.request(adaptive_req(target_duration));
        target_from(on_runtime(&self.inner.handle, fut).await?)
    }

    /// The names of the workers to retire to bring the cluster down to `target` workers,
    /// best first (idle ones holding the least data first), as Dask's
    /// `workers_to_close(target=…)`; workers already retiring are not counted.
    pub fn workers_to_close(&self, target: usize) -> Result<Vec<String>, ClientError> {
        to_close_from(self.inner.block(self.request(to_close_req(target)))?)
    }

    /// [`Client::workers_to_close`], awaitable from any async runtime.
    pub async fn workers_to_close_async(&self, target: usize) -> Result<Vec<String>, ClientError> {
        let fut = self.request(to_close_req(target));
        to_close_from(on_runtime(&self.inner.handle, fut).await?)
    }
}

fn retire_req(names: &[String]) -> impl FnOnce(u64) -> ToScheduler {
    let names = names.to_vec();
    move |req| ToScheduler::RetireWorkers { req, names }
}

fn retired_from(reply: ToClient) -> Result<Vec<String>, ClientError> {
    match reply {
        ToClient::RetireWorkersReply { retired, .. } => Ok(retired),
        other => Err(ClientError::Other(format!("unexpected reply {other:?}"))),
    }
}

fn adaptive_req(target_duration: std::time::Duration) -> impl FnOnce(u64) -> ToScheduler {
    let target_duration_us = u64::try_from(target_duration.as_micros()).unwrap_or(u64::MAX);
    move |req| ToScheduler::AdaptiveTarget {
        req,
        target_duration_us,
    }
}

fn target_from(reply: ToClient) -> Result<usize, ClientError> {
    match reply {
        ToClient::AdaptiveTargetReply { target, .. } => {
            Ok(usize::try_from(target).unwrap_or(usize::MAX))
        }
        other => Err(ClientError::Other(format!("unexpected reply {other:?}"))),
    }
}

fn to_close_req(target: usize) -> impl FnOnce(u64) -> ToScheduler {
    move |req| ToScheduler::WorkersToClose {
        req,
        target: target as u64,
    }
}

fn to_close_from(reply: ToClient) -> Result<Vec<String>, ClientError> {
    match reply {
        ToClient::WorkersToCloseReply { names, .. } => Ok(names),
        other => Err(ClientError::Other(format!("unexpected reply {other:?}"))),
    }
}
