//! Property test: random DAGs on a simulated cluster with random worker joins, losses and
//! graceful retirements, random completion order and client releases; `validate()` after
//! every stimulus, and every wanted key ends in memory with exactly the right value. The
//! scheduler's holders of a value always have it; a retired worker leaves nothing that
//! only it held, clients are told holders that have their keys, and without losses no
//! task runs twice.

use std::collections::{BTreeMap, HashMap, HashSet};

use proptest::prelude::*;
use rask_proto::{ClientId, Datum, TaskId, WorkerId};
use rask_scheduler_core::{Action, CoreConfig, NewTask, SchedulerCore, TaskState, WorkerSpec};

const C: ClientId = ClientId(1);

/// The code worker `w` runs: workers alternate between two programs.
fn worker_code(w: WorkerId) -> u64 {
    1 + u64::from(w.0 % 2)
}

/// The code task `i` needs: every third task belongs to one of the two programs.
fn task_code(i: usize) -> Option<u64> {
    i.is_multiple_of(3).then_some(1 + (i / 3) as u64 % 2)
}

/// A graph: task i depends on some of 0..i. value(i) = i + Σ value(deps).
fn graph(n: usize, edges: &[(usize, usize)]) -> Vec<Vec<usize>> {
    let mut deps = vec![Vec::new(); n];
    for &(a, b) in edges {
        let (a, b) = (a % n, b % n);
        if a < b && !deps[b].contains(&a) {
            deps[b].push(a);
        }
    }
    deps
}

fn expected(deps: &[Vec<usize>]) -> Vec<i64> {
    let mut v = vec![0i64; deps.len()];
    for i in 0..deps.len() {
        v[i] = i as i64 + deps[i].iter().map(|&d| v[d]).sum::<i64>();
    }
    v
}

struct Sim {
    core: SchedulerCore,
    /// Data held by each live worker.
    stores: BTreeMap<WorkerId, HashMap<TaskId, i64>>,
    /// Compute requests not yet executed: (worker, task, args, deps with holders).
    pending: Vec<(WorkerId, rask_proto::msg::ComputeMsg)>,
    /// What the client was told: key → (task, holders).
    results: HashMap<String, Vec<WorkerId>>,
    erred: Vec<String>,
    next_worker: u32,
    /// Every action the core produced, in order.
    log: Vec<Action>,
    /// Copies asked for and not yet fetched: (worker, task, holders).
    replicas: Vec<(WorkerId, TaskId, Vec<WorkerId>)>,
    /// Runs completed, by key.
    runs: HashMap<String, u32>,
    /// Workers lost so far (their data may have to be recomputed).
    kills: u32,
    /// Retirements asked for and not answered yet.
    retiring: HashSet<u64>,
    next_req: u64,
    /// Workers the core closed, and the workers it said retired.
    closed: HashSet<WorkerId>,
    retired: Vec<String>,
    /// Steals asked and not answered yet: (victim, task, run).
    steals: Vec<(WorkerId, TaskId, u32)>,
}

impl Sim {
    fn drain(&mut self) {
        let actions = self.core.take_actions();
        self.log.extend(actions.iter().cloned());
        for a in actions {
            match a {
                Action::Compute { worker, msg, .. } => {
                    let key = self.core.key(msg.task).expect("a computed task exists");
                    let i: usize = key[1..].parse().expect("keys are t<i>");
                    assert!(
                        task_code(i).map_or(worker_code(worker) == 1, |c| c == worker_code(worker)),
                        "{key} (code {:?}) sent to a worker of code {}",
                        task_code(i),
                        worker_code(worker)
                    );
                    self.pending.push((worker, msg))
                }
                Action::Free { worker, task } => {
                    if let Some(s) = self.stores.get_mut(&worker) {
                        s.remove(&task);
                    }
                    self.pending
                        .retain(|(w, m)| !(*w == worker && m.task == task));
                    self.replicas
                        .retain(|(w, t, _)| !(*w == worker && *t == task));
                }
                Action::KeyInMemory { key, holders, .. } => {
                    self.results.insert(key.to_string(), holders);
                }
                Action::KeyErred { key, .. } => self.erred.push(key.to_string()),
                Action::Steal { worker, task, run } => {
                    assert!(
                        self.stores.contains_key(&worker),
                        "a steal asked of a dead worker"
                    );
                    self.steals.push((worker, task, run));
                }
                Action::AcquireReplica { worker, dep } => {
                    assert!(
                        self.stores.contains_key(&worker),
                        "a copy asked of a dead worker"
                    );
                    assert!(
                        !self.core.is_retiring(worker),
                        "a copy asked of a retiring worker"
                    );
                    self.replicas.push((worker, dep.task, dep.holders));
                }
                Action::CloseWorker { worker } => self.close(worker),
                Action::Retired { req, workers, .. } => {
                    assert!(self.retiring.remove(&req), "an answer to no request");
                    for (w, name) in workers {
                        assert!(self.closed.contains(&w), "{name} retired but not closed");
                        self.retired.push(name.to_string());
                    }
                }
            }
        }
        self.check_holders();
    }

    /// The core closed a worker: it runs nothing; a retired one leaves no value that only
    /// it held, and what clients were told of its keys points at workers that have them.
    fn close(&mut self, worker: WorkerId) {
        assert!(
            !self.pending.iter().any(|(w, _)| *w == worker),
            "a worker closed with tasks to run"
        );
        self.closed.insert(worker);
        let store = self
            .stores
            .remove(&worker)
            .expect("a closed worker was alive");
        self.replicas.retain(|(w, _, _)| *w != worker);
        if self.kills > 0 {
            return;
        }
        for t in store.keys() {
            let key = self.core.key(*t).expect("a held task exists").to_string();
            if self.core.state(&key) != TaskState::Memory {
                continue;
            }
            assert!(
                self.core
                    .who_has(&key)
                    .iter()
                    .any(|h| self.stores.get(h).is_some_and(|s| s.get(t) == store.get(t))),
                "{key} left with its worker"
            );
            if let Some(holders) = self.results.get(&key) {
                assert!(
                    holders
                        .iter()
                        .any(|h| self.stores.get(h).is_some_and(|s| s.contains_key(t))),
                    "a client was told holders of {key} that do not have it"
                );
            }
        }
    }

    /// Every holder the core counts for a value has it.
    fn check_holders(&self) {
        for i in 0..40 {
            let key = format!("t{i}");
            let Some(t) = self.core.task_id(&key) else {
                continue;
            };
            for h in self.core.who_has(&key) {
                assert!(
                    self.stores.get(&h).is_some_and(|s| s.contains_key(&t)),
                    "{key} counted on {h}, which does not have it"
                );
            }
        }
    }

    /// A client asks to retire one or two live workers.
    fn retire(&mut self, pick: usize) {
        if self.stores.is_empty() {
            return;
        }
        let ids: Vec<WorkerId> = self.stores.keys().copied().collect();
        let mut chosen = vec![ids[pick % ids.len()]];
        if pick.is_multiple_of(3) {
            chosen.push(ids[(pick / 3) % ids.len()]);
        }
        let req = self.next_req;
        self.next_req += 1;
        self.retiring.insert(req);
        self.core.on_retire_workers(C, req, &chosen);
        self.core.validate();
        self.drain();
    }

    /// Fetches one copy asked for: from a listed holder that has it, or reports it
    /// missing.
    fn replicate(&mut self, pick: usize) {
        if self.replicas.is_empty() {
            return;
        }
        let (w, t, holders) = self.replicas.remove(pick % self.replicas.len());
        let found = holders
            .iter()
            .find_map(|h| self.stores.get(h).and_then(|s| s.get(&t)).copied());
        match found {
            Some(v) => {
                self.stores.get_mut(&w).unwrap().insert(t, v);
                self.core.on_replicas_acquired(w, &[t]);
            }
            None => {
                let holder = *holders.last().expect("a copy has holders");
                self.core.on_replica_missing(w, t, holder);
            }
        }
        self.core.validate();
        self.drain();
    }

    fn on_worker_joined(&mut self) {
        let id = WorkerId(self.next_worker);
        self.next_worker += 1;
        self.stores.insert(id, HashMap::new());
        self.core.on_worker_joined(
            id,
            WorkerSpec {
                name: format!("w{}", id.0),
                addr: String::new(),
                host_id: "h".into(),
                nthreads: 1 + id.0 % 3,
                memory_limit: 1 << 30,
                resources: vec![],
                gpu: None,
                nvlink: vec![],
                device_spill_at: 0,
                code: worker_code(id),
                base: worker_code(id) == 1,
            },
        );
        self.core.validate();
        self.drain();
    }

    fn kill(&mut self, pick: usize) {
        if self.stores.is_empty() {
            return;
        }
        let id = *self.stores.keys().nth(pick % self.stores.len()).unwrap();
        self.kills += 1;
        self.stores.remove(&id);
        self.pending.retain(|(w, _)| *w != id);
        self.replicas.retain(|(w, _, _)| *w != id);
        self.steals.retain(|(w, _, _)| *w != id);
        self.core.on_worker_lost(id);
        self.core.validate();
        self.drain();
    }

    /// A victim answers a steal: it releases the task if it has not run it (it is still
    /// pending there at that run), else keeps it.
    fn answer_steal(&mut self, pick: usize) {
        if self.steals.is_empty() {
            return;
        }
        let (w, t, run) = self.steals.remove(pick % self.steals.len());
        let before = self.pending.len();
        self.pending
            .retain(|(pw, m)| !(*pw == w && m.task == t && m.run == run));
        let released = self.pending.len() < before;
        self.core.on_steal_response(w, t, run, released);
        self.core.validate();
        self.drain();
    }

    /// Runs one pending compute: fetch inputs from listed holders, compute, report.
    /// Whether a compute must still wait: an input is not anywhere yet but is itself
    /// pending on the same worker (the task was sent ahead of its input).
    fn waits_locally(&self, w: WorkerId, msg: &rask_proto::msg::ComputeMsg) -> bool {
        msg.deps.iter().any(|d| {
            !self.stores.get(&w).is_some_and(|s| s.contains_key(&d.task))
                && self
                    .pending
                    .iter()
                    .any(|(pw, m)| *pw == w && m.task == d.task)
        })
    }

    /// Runs one pending compute that can run: inputs from the local store or the listed
    /// holders; an input found nowhere is reported missing.
    fn step(&mut self, pick: usize) {
        let runnable: Vec<usize> = (0..self.pending.len())
            .filter(|&i| !self.waits_locally(self.pending[i].0, &self.pending[i].1))
            .collect();
        if runnable.is_empty() {
            return;
        }
        let (w, msg) = self.pending.remove(runnable[pick % runnable.len()]);
        let mut inputs = Vec::new();
        for dep in &msg.deps {
            let local = self.stores.get(&w).and_then(|s| s.get(&dep.task)).copied();
            let found = local.or_else(|| {
                dep.holders
                    .iter()
                    .find_map(|h| self.stores.get(h).and_then(|s| s.get(&dep.task)).copied())
            });
            match found {
                Some(v) => inputs.push(v),
                None => {
                    let holder = dep.holders.first().copied().unwrap_or(WorkerId(u32::MAX));
                    self.core.on_missing_data(w, msg.task, dep.task, holder);
                    self.core.validate();
                    self.drain();
                    return;
                }
            }
        }
        let args = msg.args.datum();
        let Datum::List(args) = &*args else {
            panic!("args are a list")
        };
        let Datum::Int(base) = args[0] else {
            panic!("first arg is the index")
        };
        let value = base + inputs.iter().sum::<i64>();
        self.stores.get_mut(&w).unwrap().insert(msg.task, value);
        let key = self.core.key(msg.task).expect("a computed task exists");
        *self.runs.entry(key.to_string()).or_default() += 1;
        self.core.on_task_finished(w, msg.task, 8, 3, 0, None);
        self.core.validate();
        self.drain();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_graphs_finish_with_exact_results(
        n in 1usize..40,
        edges in proptest::collection::vec((0usize..40, 0usize..40), 0..80),
        wanted_mask in proptest::collection::vec(any::<bool>(), 40),
        events in proptest::collection::vec((0u8..12, any::<usize>()), 0..300),
    ) {
        let first = scenario(n, &edges, &wanted_mask, &events)?;
        // The same stimuli always give the same decisions, in the same order.
        let second = scenario(n, &edges, &wanted_mask, &events)?;
        prop_assert!(first == second, "the core is not deterministic");
    }
}

/// Runs one random scenario to completion, checking everything; returns the action log.
fn scenario(
    n: usize,
    edges: &[(usize, usize)],
    wanted_mask: &[bool],
    events: &[(u8, usize)],
) -> Result<Vec<Action>, TestCaseError> {
    {
        let deps = graph(n, edges);
        let values = expected(&deps);
        let mut sim = Sim {
            core: SchedulerCore::new(CoreConfig {
                queue_target_us: 10,
                ..CoreConfig::default()
            }),
            stores: BTreeMap::new(),
            pending: Vec::new(),
            results: HashMap::new(),
            erred: Vec::new(),
            next_worker: 0,
            log: Vec::new(),
            replicas: Vec::new(),
            runs: HashMap::new(),
            kills: 0,
            retiring: HashSet::new(),
            next_req: 0,
            closed: HashSet::new(),
            retired: Vec::new(),
            steals: Vec::new(),
        };
        sim.core.on_client_joined(C);
        sim.on_worker_joined();
        let tasks: Vec<NewTask> = (0..n)
            .map(|i| NewTask {
                key: format!("t{i}"),
                op: "add".into(),
                args: Datum::List(
                    std::iter::once(Datum::Int(i as i64))
                        .chain((0..deps[i].len() as u32).map(Datum::Ref))
                        .collect(),
                ),
                bufs: vec![],
                deps: deps[i].iter().map(|d| format!("t{d}")).collect(),
                resources: vec![],
                code: task_code(i),
            })
            .collect();
        let mut wanted: Vec<String> = (0..n)
            .filter(|&i| wanted_mask[i])
            .map(|i| format!("t{i}"))
            .collect();
        wanted.push(format!("t{}", n - 1));
        sim.core.on_update_graph(C, tasks, &wanted).unwrap();
        sim.core.validate();
        sim.drain();
        let mut retirements = 0;
        for &(kind, pick) in events {
            match kind {
                0 if sim.kills < 2 => sim.kill(pick),
                1 => sim.on_worker_joined(),
                2 if retirements < 3 => {
                    retirements += 1;
                    sim.retire(pick)
                }
                3 => sim.replicate(pick),
                4 => sim.answer_steal(pick),
                _ => sim.step(pick),
            }
        }
        // Run to completion without faults, with running workers of both programs.
        let mut guard = 0;
        loop {
            while [1, 2].iter().any(|c| {
                !sim.stores
                    .keys()
                    .any(|w| worker_code(*w) == *c && !sim.core.is_retiring(*w))
            }) {
                sim.on_worker_joined();
            }
            if !sim.replicas.is_empty() {
                sim.replicate(0);
            } else if !sim.steals.is_empty() {
                sim.answer_steal(0);
            } else if !sim.pending.is_empty() {
                sim.step(0);
            } else {
                break;
            }
            guard += 1;
            prop_assert!(guard < 100_000, "no progress");
        }
        prop_assert!(sim.erred.is_empty(), "unexpected errors {:?}", sim.erred);
        prop_assert!(sim.retiring.is_empty(), "retirements unanswered");
        if sim.kills == 0 {
            for (key, runs) in &sim.runs {
                prop_assert_eq!(*runs, 1, "{} ran again though no worker was lost", key);
            }
        }
        for key in &wanted {
            prop_assert_eq!(
                sim.core.state(key),
                TaskState::Memory,
                "{} not in memory",
                key
            );
            let holders = &sim.results[key];
            let i: usize = key[1..].parse().unwrap();
            let t = sim.core.task_id(key).unwrap();
            let v = holders
                .iter()
                .find_map(|h| sim.stores.get(h).and_then(|s| s.get(&t)))
                .copied();
            prop_assert_eq!(v, Some(values[i]), "value of {}", key);
        }
        // Releasing everything frees all data and forgets every task.
        sim.core.on_release_keys(C, &wanted);
        sim.core.validate();
        sim.drain();
        prop_assert_eq!(sim.core.task_count(), 0);
        prop_assert!(
            sim.stores.values().all(|s| s.is_empty()),
            "data left behind"
        );
        Ok(sim.log)
    }
}
