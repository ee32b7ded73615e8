//! A client's wants: keys wanted (by a graph, a map, or a client asking again) and
//! released (by name, or a map's in runs of numbers).

use rask_proto::msg::{run_keys, KeyRun, MAX_RELEASE_RUN_KEYS};
use rask_proto::{ClientId, TaskId};

use crate::core::SchedulerCore;
use crate::story::Why;
use crate::TaskState;

impl SchedulerCore {
    /// `client` wants task `t` (held already, or just added): tells the client what became
    /// of it if that is known. Whether `t` is newly wanted by the client and released.
    pub(crate) fn want(&mut self, client: ClientId, t: TaskId) -> bool {
        let task = self
            .tasks
            .get_mut(&t)
            .expect("invariant: keyed task exists");
        if task.who_wants.contains(&client) {
            return false;
        }
        task.who_wants.push(client);
        let released = task.state == TaskState::Released;
        self.clients
            .get_mut(&client)
            .expect("invariant: the client is known")
            .add(client, t, &self.tasks);
        self.tell_outcome(client, t);
        released
    }

    /// A client dropped its last future for these keys.
    pub fn on_release_keys(&mut self, client: ClientId, keys: &[String]) {
        self.begin(Why::ReleaseKeys, None);
        // Mostly a free each: room made once, not by doubling.
        self.actions.reserve(keys.len());
        for key in keys {
            if let Some(t) = self.keys.get(key, &self.tasks) {
                self.unwant(client, t);
            }
        }
        self.run();
        self.retire_step();
    }

    /// [`SchedulerCore::on_release_keys`] of a map's keys, said in runs of numbers: each
    /// found by its number, its key not written out (unless a table may hold it). The
    /// caller bounds the keys' count ([`rask_proto::msg::MAX_RELEASE_RUN_KEYS`]).
    pub fn on_release_runs(&mut self, client: ClientId, runs: &[KeyRun]) {
        self.begin(Why::ReleaseKeys, None);
        // A free a key, mostly (room for more is made by doubling): as many as the runs
        // name, but no more than tasks held; runs are a few bytes for a million keys.
        let named = run_keys(runs).min(MAX_RELEASE_RUN_KEYS) as usize;
        self.actions.reserve(named.min(self.tasks.len()));
        for run in runs {
            for n in run.numbers() {
                if let Some(t) = self.keys.get_map(&run.prefix, n, &self.tasks) {
                    self.unwant(client, t);
                }
            }
        }
        self.run();
        self.retire_step();
    }

    /// `client` no longer wants task `t` (if it did).
    fn unwant(&mut self, client: ClientId, t: TaskId) {
        let task = self
            .tasks
            .get_mut(&t)
            .expect("invariant: keyed task exists");
        if !task.who_wants.contains(&client) {
            return;
        }
        task.who_wants.retain(|c| *c != client);
        self.check_release(t);
    }
}
