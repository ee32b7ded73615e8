//! Messages to the scheduler, from clients (graphs, releases) and workers (reports,
//! heartbeats): [`ToScheduler`].

use super::*;

wire! {
    /// One task of a submitted graph.
    pub struct TaskSpec {
        /// The client's name for the task, unique within the cluster while held.
        pub key: String,
        /// Registered op name.
        pub op: String,
        /// Arguments; `Datum::Ref(i)` is the output of `deps[i]`.
        pub args: Datum,
        /// Keys of the tasks whose outputs this task reads.
        pub deps: Vec<String>,
        /// Resources needed to run, e.g. `gpu = 1`.
        pub resources: Vec<Resource>,
    }

    /// A graph submission (also used for `submit` and `map`: a graph of independent tasks).
    /// A graph too large for one frame travels in parts, in order: every part but the
    /// last has `more` set, and the scheduler takes the graph as a whole with the last.
    pub struct UpdateGraphMsg {
        /// The graph's tasks (of this part); dependencies may be in any part or already
        /// known to the scheduler.
        pub tasks: Vec<TaskSpec>,
        /// Keys the client holds futures for: they stay in memory until released.
        pub wanted: Vec<String>,
        /// More parts of this graph follow.
        pub more: bool,
    }

    /// Tasks of one op over many arguments, as a client's `map` submits them (HyperQueue's
    /// task arrays): task `i` has the key `"{prefix}-{first + i}"`, runs `op` on `args[i]`,
    /// reads no other task's output, and is wanted by the client. The same tasks as an
    /// [`UpdateGraphMsg`] would carry, without a key, an op name and a wanted key for each.
    /// Taken as a whole or refused as a whole; a large map travels as several, each a
    /// whole of its own.
    pub struct MapMsg {
        /// The keys' common part.
        pub prefix: String,
        /// The number in the first task's key.
        pub first: u64,
        /// Registered op name.
        pub op: String,
        /// Each task's arguments (no `Datum::Ref`: a map's tasks read no other task).
        pub args: Vec<TaskArgs>,
        /// Resources each task needs to run, e.g. `gpu = 1`.
        pub resources: Vec<Resource>,
    }

    /// A worker's report that a task completed.
    pub struct TaskFinishedMsg {
        /// The task that completed.
        pub task: TaskId,
        /// Approximate size of the result in memory ([`crate::Value::nbytes`]), for
        /// placement and memory accounting.
        pub nbytes: u64,
        /// How long the op ran, for duration estimates.
        pub duration_us: u64,
        /// How long the task waited for inputs fetched from peers before it could run
        /// (from its arrival at the worker to the last input's), so that the scheduler
        /// sends the worker enough work ahead to cover such waits.
        pub fetch_us: u64,
        /// The result itself, when the scheduler asked for it (a client waits on the key)
        /// and it is small: the client then needs no fetch from the worker.
        pub value: Option<Packed>,
        /// The run it reports ([`ComputeMsg::run`]): a report of an earlier run, sent
        /// before the worker heard that run was freed, is not taken for the current one.
        pub run: u32,
    }

    /// A worker's report that a task's op returned an error or panicked.
    pub struct TaskErredMsg {
        /// The task that failed.
        pub task: TaskId,
        /// The op's error, or its panic message.
        pub message: String,
        /// The run it reports ([`ComputeMsg::run`]).
        pub run: u32,
    }

    /// Keys of a map ([`map_key`]) numbered in a row: `{prefix}-{first}` and the
    /// `count - 1` that follow (numbers wrapping past `u64::MAX` as a map's do).
    pub struct KeyRun {
        /// The keys' prefix.
        pub prefix: String,
        /// The first key's number.
        pub first: u64,
        /// How many keys.
        pub count: u64,
    }

    /// Messages to the scheduler, from clients and workers.
    pub enum ToScheduler {
        /// From a client: tasks to add (a graph, or a part of one).
        UpdateGraph(UpdateGraphMsg),
        /// From a client: tasks of one op over many arguments (a `map`). Boxed, as
        /// `Heartbeat`: every `ToScheduler` is as large as its largest variant, in memory
        /// (moved through every queue) and archived.
        Map(Box<MapMsg>),
        /// The client dropped its last future for these keys.
        ReleaseKeys {
            /// The keys released.
            keys: Vec<String>,
        },
        /// [`ToScheduler::ReleaseKeys`] of keys of [`map_key`]'s form, in runs: the
        /// futures of a map are mostly dropped together and in order, and a run says
        /// thousands of their keys in a few bytes, for the scheduler to find by number.
        /// At most [`MAX_RELEASE_RUN_KEYS`] keys in all; a message naming more is refused.
        ReleaseMapKeys {
            /// The keys released.
            runs: Vec<KeyRun>,
        },
        /// From a client: which workers hold these keys; answered by
        /// [`ToClient::WhoHasReply`] with the same `req`.
        WhoHas {
            /// The client's request number, echoed in the reply.
            req: u64,
            /// The keys asked about.
            keys: Vec<String>,
        },
        /// From a client: the scheduler's state; answered by [`ToClient::InfoReply`].
        Info {
            /// The client's request number, echoed in the reply.
            req: u64,
        },
        /// From a client: the tasks finished after `since` (a
        /// [`TaskStreamEntryMsg::seq`]; 0 for all the stream still holds), at most
        /// `limit`; answered by [`ToClient::TaskStreamReply`].
        GetTaskStream {
            /// The client's request number, echoed in the reply.
            req: u64,
            /// The cursor: entries with a larger `seq` are sent.
            since: u64,
            /// The most entries wanted (the scheduler may send fewer).
            limit: u64,
        },
        /// From a client: the recorded transitions of a key; answered by
        /// [`ToClient::StoryReply`].
        Story {
            /// The client's request number, echoed in the reply.
            req: u64,
            /// The key.
            key: String,
        },
        /// From a worker: a task completed and its result is held there.
        TaskFinished(TaskFinishedMsg),
        /// From a worker: a task's op failed.
        TaskErred(TaskErredMsg),
        /// A worker could not fetch `dep` (for `task`) from `holder`.
        MissingData {
            /// The task that needed the value.
            task: TaskId,
            /// The dependency that could not be fetched.
            dep: TaskId,
            /// The worker that was asked for it and did not have it (or could not be
            /// reached).
            holder: WorkerId,
        },
        /// From a worker: its periodic state; also proves it is alive. Boxed: every
        /// `ToScheduler` (a task finished, the most frequent) archives at the size of its
        /// largest variant inline.
        Heartbeat(Box<HeartbeatMsg>),
        /// A part of a program's executable: bytes `offset..` of `size`, in the frame's
        /// buffer `buf` (from a client asked by `SendProgram`).
        ProgramPart { code: u64, offset: u64, size: u64, buf: u32 },
        /// A worker needs the executable of the program `code` (it has no copy on its
        /// host): the scheduler sends it in `ProgramPart`s.
        GetProgram { code: u64 },
        /// The program `code` cannot be sent (a client) or started (a worker), and why.
        ProgramFailed { code: u64, message: String },
        /// From a client: shut the cluster down (Dask's `Client.shutdown`): the scheduler
        /// tells every worker to close, waits a moment for them to leave, and ends.
        Shutdown {
            /// Why, for the logs.
            reason: String,
        },
        /// From a client: retire these workers gracefully (by name or address): no new
        /// tasks go to them, the data only they hold is copied to other workers first,
        /// then they are closed. Answered by [`ToClient::RetireWorkersReply`] once the
        /// workers retired have left; a worker whose data no other worker can take is not
        /// retired.
        RetireWorkers {
            /// The client's request number, echoed in the reply.
            req: u64,
            /// The workers' names (or data addresses).
            names: Vec<String>,
        },
        /// From a client: how many workers the cluster should have for its current load
        /// (Dask's `adaptive_target`); answered by [`ToClient::AdaptiveTargetReply`].
        AdaptiveTarget {
            /// The client's request number, echoed in the reply.
            req: u64,
            /// The work each worker should have queued, in microseconds (Dask's
            /// `target_duration`, 5 s by default).
            target_duration_us: u64,
        },
        /// From a client: which workers to retire to bring the cluster down to `target`
        /// workers (idle ones holding little data first); answered by
        /// [`ToClient::WorkersToCloseReply`].
        WorkersToClose {
            /// The client's request number, echoed in the reply.
            req: u64,
            /// The number of workers to keep.
            target: u64,
        },
        /// From a worker: retire it gracefully (its lifetime is over): its data moves to
        /// other workers, then the scheduler closes it — even when no other worker can
        /// take its data, which is then recomputed where needed.
        CloseGracefully {
            /// Why, for the scheduler's log.
            reason: String,
        },
        /// From a worker whose device failed for good (a sticky CUDA error), just before
        /// it leaves: why, naming the device and the kernels that were running. The tasks
        /// it was running are charged with its death as for any worker that dies, and one
        /// that errs for killing too many workers names this cause.
        DeviceLost {
            /// `cuda:0 failed for good: …`.
            message: String,
        },
        /// From a worker that joined with [`WorkerHello::holds`]: values it holds, by
        /// task and size, in parts; `last` on the final part.
        Holding {
            /// The tasks and their values' sizes.
            tasks: Vec<(TaskId, u64)>,
            /// No part follows.
            last: bool,
        },
        /// From a client that connected again ([`Hello::resume`]): the keys it holds
        /// futures for. The scheduler tells each one's state again, or that it is lost.
        Resubscribe {
            /// The keys.
            keys: Vec<String>,
        },
        /// From a worker: it now holds copies of these tasks' values, fetched as
        /// [`ToWorker::AcquireReplicas`] asked.
        ReplicasAcquired {
            /// The tasks whose values it holds.
            tasks: Vec<TaskId>,
        },
        /// From a worker: it could not fetch a copy of `task`'s value; `holder`, the last
        /// holder it tried, does not have it (or could not be reached).
        ReplicaMissing {
            /// The task whose value was asked for.
            task: TaskId,
            /// The holder tried last.
            holder: WorkerId,
        },
        /// From a worker: the answer to [`ToWorker::Steal`].
        StealResponse {
            /// The task.
            task: TaskId,
            /// The run asked about.
            run: u32,
            /// It had not started and is dropped here (else it runs or ran here).
            released: bool,
        },
        /// The message path alone, with no scheduling (what its ceiling is measured
        /// with): from a client, an empty message the scheduler passes on to a worker,
        /// which sends it back at once ([`ToWorker::Echo`]); from a worker, that message
        /// back, which the scheduler passes on to its client ([`ToClient::Echo`]).
        Echo {
            /// The client it returns to (the scheduler sets it; a client's is ignored).
            client: u32,
            /// Its number, as the client gave it.
            seq: u64,
        },
        /// From a client: something about the published datasets (Dask's
        /// `publish_dataset`, `get_dataset`, `list_datasets`, `unpublish_dataset`);
        /// answered by [`ToClient::DatasetsReply`].
        Datasets {
            /// The client's request number, echoed in the reply.
            req: u64,
            /// What is asked.
            op: DatasetOp,
        },
    }

    /// What a client asks of the published datasets: named sets of keys the scheduler
    /// holds for any client to take, until unpublished, whoever leaves.
    pub enum DatasetOp {
        /// Publish `keys` (futures the client holds) as `name`; refused when the name is
        /// taken, unless `replace`. Answered with no names.
        Publish {
            /// The dataset's name.
            name: String,
            /// Its keys.
            keys: Vec<String>,
            /// Whether a dataset of that name is replaced (else: refused).
            replace: bool,
        },
        /// Unpublish `name`: its keys are no longer held for it. Answered with no names.
        Unpublish {
            /// The dataset's name.
            name: String,
        },
        /// The keys of the dataset `name`, in the order published.
        Get {
            /// The dataset's name.
            name: String,
        },
        /// The names of the datasets, sorted.
        List,
    }

    /// A worker's periodic state.
    pub struct HeartbeatMsg {
        /// Approximate bytes of the values the worker holds, wherever they are.
        pub stored_bytes: u64,
        /// Values the worker holds.
        pub stored_keys: u64,
        /// Tasks running now.
        pub executing: u32,
        /// The process's resident memory, in bytes (0 if unknown).
        pub rss_bytes: u64,
        /// Device memory in use (0 without a GPU).
        pub device_memory_used: u64,
        /// Bytes copied from device memory to the host (for ops on the CPU, spilling, the
        /// client), so far.
        pub device_to_host: u64,
        /// Bytes this worker received from peers, by link (`local`, `nvlink`, `pcie`,
        /// `shm`, `tcp`: a [`crate::LinkClass`] by its name).
        pub received: Vec<(String, u64)>,
        /// Bytes spilled, by direction (`device->host`, `device->disk`, `host->disk`).
        pub spilled: Vec<(String, u64)>,
        /// Tasks run, by where: `device` (by the device's kernels) or `cpu`.
        pub ran: Vec<(String, u64)>,
        /// Bytes of the values held in device memory now (of those large enough to be
        /// spilled; 0 without a device).
        pub device_bytes: u64,
        /// Bytes of the values spilled to disk now.
        pub disk_bytes: u64,
        /// Transfers and spills since the last heartbeat, for the task stream (at most
        /// a bounded number: the rest are counted in `activity_dropped`).
        pub activity: Vec<ActivityMsg>,
        /// Transfers and spills since the last heartbeat not in `activity`.
        pub activity_dropped: u64,
        /// What it received from each peer, by link: the running totals of the pairs
        /// that changed since the last heartbeat.
        pub received_from: Vec<PeerBytesMsg>,
        /// Its GPU's utilization in percent since the last heartbeat, where known.
        pub utilization: Option<f32>,
    }
}

/// The most keys one [`ToScheduler::ReleaseMapKeys`] names, its runs' counts summed:
/// a client says more in several messages. Bounds the scheduler's work for one message
/// (a look-up a key) whatever a peer announces.
pub const MAX_RELEASE_RUN_KEYS: u64 = 1 << 20;

impl KeyRun {
    /// Each key's number, in order.
    pub fn numbers(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.count).map(|i| self.first.wrapping_add(i))
    }
}

/// The keys named by `runs` in all, saturating.
pub fn run_keys(runs: &[KeyRun]) -> u64 {
    runs.iter().fold(0u64, |n, r| n.saturating_add(r.count))
}

/// The key of a map's task numbered `n` ([`MapMsg`]): `"{prefix}-{n}"`.
pub fn map_key(prefix: &str, n: u64) -> String {
    let mut key = String::with_capacity(prefix.len() + 21);
    push_map_key(&mut key, prefix, n);
    key
}

/// The prefix and number of a key of [`map_key`]'s form, where the number is written as
/// `format!` writes a `u64` (no sign, no leading zero), so that one number has one key:
/// `split_map_key(&map_key(p, n)) == Some((p, n))` for every `p` and `n`. `None` for any
/// other key.
pub fn split_map_key(key: &str) -> Option<(&str, u64)> {
    let b = key.as_bytes();
    let mut i = b.len();
    while i > 0 && b[i - 1].is_ascii_digit() {
        i -= 1;
    }
    let digits = &b[i..];
    if i == 0 || b[i - 1] != b'-' || digits.is_empty() || (digits[0] == b'0' && digits.len() > 1) {
        return None;
    }
    let mut n = 0u64;
    for &d in digits {
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some((&key[..i - 1], n))
}

/// Appends [`map_key`]`(prefix, n)` to `out`: written digit by digit, for `format!` costs
/// about as much as the rest of building a task.
pub fn push_map_key(out: &mut String, prefix: &str, n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push_str(prefix);
    out.push('-');
    out.push_str(std::str::from_utf8(&digits[at..]).expect("invariant: ASCII digits"));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run names its count of numbers from its first, wrapping past the largest; runs'
    /// counts sum without overflowing; a message may name 2^20 keys, as documented.
    #[test]
    fn runs_name_their_numbers_and_sum_their_counts() {
        let run = |first: u64, count: u64| KeyRun {
            prefix: "p".into(),
            first,
            count,
        };
        assert_eq!(run(5, 3).numbers().collect::<Vec<_>>(), [5, 6, 7]);
        assert_eq!(
            run(u64::MAX - 1, 3).numbers().collect::<Vec<_>>(),
            [u64::MAX - 1, u64::MAX, 0]
        );
        assert_eq!(run(9, 0).numbers().count(), 0);
        assert_eq!(run_keys(&[run(0, 2), run(7, 5)]), 7);
        assert_eq!(run_keys(&[]), 0);
        assert_eq!(run_keys(&[run(0, u64::MAX), run(0, 2)]), u64::MAX);
        assert_eq!(MAX_RELEASE_RUN_KEYS, 1_048_576);
    }

    #[test]
    fn a_map_key_splits_into_its_prefix_and_number_and_nothing_else_does() {
        for p in ["inc-1f-3", "", "a-1", "5", "a--", "x y"] {
            let (most_short, least_long) = (9_999_999_999_999_999_999, 10_000_000_000_000_000_000);
            for n in [
                0,
                1,
                9,
                10,
                99,
                1234567,
                most_short,
                least_long,
                u64::MAX - 1,
                u64::MAX,
            ] {
                assert_eq!(split_map_key(&map_key(p, n)), Some((p, n)), "{p:?} {n}");
            }
        }
        let not = [
            "",
            "5",
            "a",
            "a-",
            "a-01",
            "a-00",
            "a-1x",
            "a-+1",
            "a- 1",
            "a-18446744073709551616",
            "a-99999999999999999999",
            "a-100000000000000000000",
        ];
        for key in not {
            assert_eq!(split_map_key(key), None, "{key:?}");
        }
    }

    #[test]
    fn a_map_key_is_the_prefix_a_dash_and_the_number() {
        for n in [
            0,
            1,
            9,
            10,
            99,
            100,
            1_023,
            1_024,
            65_535,
            999_999,
            u64::MAX,
        ] {
            assert_eq!(map_key("inc-1f-3", n), format!("inc-1f-3-{n}"));
        }
        for n in (0..200_000).step_by(7) {
            assert_eq!(map_key("", n), format!("-{n}"));
        }
        let mut out = String::from("kept ");
        push_map_key(&mut out, "a", 12);
        assert_eq!(out, "kept a-12");
    }
}
