//! Watching the cluster from a client: the task stream (what ran where and when) and a
//! key's story (its transitions), as Dask's `get_task_stream` and `story`. The scheduler
//! answers from bounded records: what they no longer hold is not returned.

use rask_proto::msg::{ToClient, ToScheduler};
use rask_proto::observe::{TaskStream, TransitionMsg};

use crate::client::Client;
use crate::runtime::on_runtime;
use crate::ClientError;

impl Client {
    /// The tasks finished after the cursor `since` (an entry's `seq`; 0 for all the
    /// scheduler's bounded stream still holds), at most `limit` (the scheduler sends at
    /// most 10,000), oldest first, with the cursor for the next call: a poller passes
    /// each answer's `last` to the next call and gets only what is new.
    pub fn get_task_stream(&self, since: u64, limit: u64) -> Result<TaskStream, ClientError> {
        stream_from(self.inner.block(self.request(stream_req(since, limit)))?)
    }

    /// [`Client::get_task_stream`], awaitable from any async runtime.
    pub async fn get_task_stream_async(
        &self,
        since: u64,
        limit: u64,
    ) -> Result<TaskStream, ClientError> {
        let fut = self.request(stream_req(since, limit));
        stream_from(on_runtime(&self.inner.handle, fut).await?)
    }

    /// A key's transitions, oldest first: from and to which state, why (the input that
    /// caused it), on which worker, when, and for a task that erred, its error. All the
    /// scheduler's bounded log still holds, also of a key since forgotten.
    pub fn story(&self, key: &str) -> Result<Vec<TransitionMsg>, ClientError> {
        story_from(self.inner.block(self.request(story_req(key)))?)
    }

    /// [`Client::story`], awaitable from any async runtime.
    pub async fn story_async(&self, key: &str) -> Result<Vec<TransitionMsg>, ClientError> {
        let fut = self.request(story_req(key));
        story_from(on_runtime(&self.inner.handle, fut).await?)
    }
}

fn stream_req(since: u64, limit: u64) -> impl FnOnce(u64) -> ToScheduler {
    move |req| ToScheduler::GetTaskStream { req, since, limit }
}

fn stream_from(reply: ToClient) -> Result<TaskStream, ClientError> {
    match reply {
        ToClient::TaskStreamReply { entries, last, .. } => Ok(TaskStream { entries, last }),
        other => Err(ClientError::Other(format!("unexpected reply {other:?}"))),
    }
}

fn story_req(key: &str) -> impl FnOnce(u64) -> ToScheduler {
    let key = key.to_string();
    move |req| ToScheduler::Story { req, key }
}

fn story_from(reply: ToClient) -> Result<Vec<TransitionMsg>, ClientError> {
    match reply {
        ToClient::StoryReply { transitions, .. } => Ok(transitions),
        other => Err(ClientError::Other(format!("unexpected reply {other:?}"))),
    }
}
