//! Published datasets, as Dask's `publish_dataset`, `get_dataset`, `list_datasets` and
//! `unpublish_dataset`: futures given a name on the scheduler, which keeps their values
//! for any client to take (another program, a later run) until they are unpublished,
//! whoever leaves. A scheduler with a journal keeps them across a restart.

use rask_proto::msg::{DatasetOp, ToClient, ToScheduler};

use crate::client::Client;
use crate::runtime::on_runtime;
use crate::{ClientError, Future, Graph};

impl Client {
    /// Publishes `futures` as the dataset `name`: the scheduler keeps their values (and
    /// recomputes them if lost) until [`Client::unpublish_dataset`], even once this client
    /// has gone. A name already published is refused, naming it, unless `replace`.
    pub fn publish_dataset<T>(
        &self,
        name: &str,
        futures: &[Future<T>],
        replace: bool,
    ) -> Result<(), ClientError> {
        let op = publish(name, futures, replace);
        names_from(self.inner.block(self.request(datasets_req(op)))?).map(drop)
    }

    /// [`Client::publish_dataset`], awaitable from any async runtime.
    pub async fn publish_dataset_async<T>(
        &self,
        name: &str,
        futures: &[Future<T>],
        replace: bool,
    ) -> Result<(), ClientError> {
        let fut = self.request(datasets_req(publish(name, futures, replace)));
        names_from(on_runtime(&self.inner.handle, fut).await?).map(drop)
    }

    /// Futures for the dataset `name`'s values, in the order published (this client holds
    /// them as its own from now on). An unknown name is an error naming it.
    pub fn get_dataset(&self, name: &str) -> Result<Vec<Future>, ClientError> {
        let op = DatasetOp::Get { name: name.into() };
        let keys = names_from(self.inner.block(self.request(datasets_req(op)))?)?;
        self.hold_keys(&keys)
    }

    /// [`Client::get_dataset`], awaitable from any async runtime.
    pub async fn get_dataset_async(&self, name: &str) -> Result<Vec<Future>, ClientError> {
        let fut = self.request(datasets_req(DatasetOp::Get { name: name.into() }));
        let keys = names_from(on_runtime(&self.inner.handle, fut).await?)?;
        self.hold_keys(&keys)
    }

    /// The names of the published datasets, sorted.
    pub fn list_datasets(&self) -> Result<Vec<String>, ClientError> {
        names_from(
            self.inner
                .block(self.request(datasets_req(DatasetOp::List)))?,
        )
    }

    /// Unpublishes the dataset `name`: its values are no longer kept for it (clients
    /// holding futures for them still do). An unknown name is an error naming it.
    pub fn unpublish_dataset(&self, name: &str) -> Result<(), ClientError> {
        let op = DatasetOp::Unpublish { name: name.into() };
        names_from(self.inner.block(self.request(datasets_req(op)))?).map(drop)
    }

    /// Futures for keys the scheduler holds: an empty graph wanting them.
    fn hold_keys(&self, keys: &[String]) -> Result<Vec<Future>, ClientError> {
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        self.compute(&Graph::new(), &keys)
    }
}

fn publish<T>(name: &str, futures: &[Future<T>], replace: bool) -> DatasetOp {
    DatasetOp::Publish {
        name: name.into(),
        keys: futures.iter().map(|f| f.key().to_string()).collect(),
        replace,
    }
}

fn datasets_req(op: DatasetOp) -> impl FnOnce(u64) -> ToScheduler {
    move |req| ToScheduler::Datasets { req, op }
}

fn names_from(reply: ToClient) -> Result<Vec<String>, ClientError> {
    match reply {
        ToClient::DatasetsReply { error: Some(e), .. } => Err(ClientError::Rejected(e)),
        ToClient::DatasetsReply { names, .. } => Ok(names),
        other => Err(ClientError::Other(format!("unexpected reply {other:?}"))),
    }
}
