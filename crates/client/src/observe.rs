//! Watching the cluster from a client: the task stream (what ran where and when) and a
//! key's story (its transitions), as Dask's `get_task_stream` and `story`. The scheduler
//! answers from bounded records: what they no longer hold is not returned.

use rask_proto::msg::{ToClient, ToScheduler};
use rask_proto::observe::{TaskStream, TransitionMsg};

use crate::client::Client;
use crate::runtime::on_runtime;
use crate::ClientError;

impl Client {
    /// Sends `n` empty messages through the scheduler to its workers (each to one, in
    /// turn) and back, as fast as the connection takes them, and returns when all are
    /// back: the message path's own speed, with no scheduling — the ceiling that task
    /// throughput is measured against. One at a time per client.
    pub fn echo(&self, n: u64) -> Result<std::time::Duration, ClientError> {
        let (done, back) = tokio::sync::oneshot::channel();
        if n == 0 {
            return Ok(std::time::Duration::ZERO);
        }
        {
            let mut st = self.inner.state();
            if st.echoes.is_some() {
                return Err(ClientError::Other("an echo is under way".into()));
            }
            st.echoes = Some((n, done));
        }
        let start = std::time::Instant::now();
        let to = self.inner.sender();
        for seq in 0..n {
            to.send(ToScheduler::Echo { client: 0, seq })
                .map_err(|e| ClientError::Disconnected(e.to_string()))?;
        }
        self.inner.block(async move {
            back.await
                .map_err(|_| ClientError::Disconnected("the connection closed".into()))
        })?;
        Ok(start.elapsed())
    }

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
