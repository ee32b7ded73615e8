//! Task graphs of realistic shapes, with each task's nominal duration and output size:
//! map-reduce trees, blocked matrix products (the array crate's shape) and random DAGs,
//! alone or mixed. A graph also knows what a run of it must produce (every task's value)
//! and the bounds a run is measured against: the critical path, the work, and the
//! locality oracle. It knows nothing of workers or of the cores.

use std::ops::Range;

use rask_proto::Datum;
use rask_scheduler_core::NewTask;

use crate::rng::{task_value, Rng};

/// A graph's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `maps` independent map tasks reduced by a tree of fan-in `fan_in` to one key.
    MapReduce {
        /// Map tasks (the leaves).
        maps: u32,
        /// Inputs per reduce task.
        fan_in: u32,
    },
    /// C = A·B on an `n`×`n` grid of output blocks with `k` blocks along the inner
    /// dimension: `n·k` blocks of A and of B, `n²·k` block products, `n²` sums (each of
    /// `k` products); the `n²` sums are wanted.
    Matmul {
        /// Output blocks per side.
        n: u32,
        /// Blocks along the inner dimension.
        k: u32,
    },
    /// `tasks` tasks, each reading up to `max_fan_in` of the `window` tasks before it;
    /// the tasks nothing reads are wanted.
    RandomDag {
        /// Tasks.
        tasks: u32,
        /// Inputs per task, at most.
        max_fan_in: u32,
        /// How far back a task's inputs may be.
        window: u32,
    },
    /// About `tasks` tasks: a map-reduce tree (≈46 %), a matrix product (≈12 %) and a
    /// random DAG (the rest, to make exactly `tasks`), submitted as three graphs.
    Mix {
        /// Tasks in all.
        tasks: u32,
    },
}

impl Shape {
    /// A shape by name (`mapreduce`, `matmul`, `random`, `mix`) with about `tasks` tasks.
    pub fn named(name: &str, tasks: u32) -> Option<Shape> {
        Some(match name {
            "mapreduce" => Shape::MapReduce {
                maps: (tasks as f64 * 7.0 / 8.0) as u32,
                fan_in: 8,
            },
            "matmul" => {
                let n = ((tasks as f64).cbrt() as u32).max(1);
                Shape::Matmul { n, k: n }
            }
            "random" => Shape::RandomDag {
                tasks,
                max_fan_in: 4,
                window: 1000,
            },
            "mix" => Shape::Mix { tasks },
            _ => return None,
        })
    }
}

/// A task graph: tasks in an order where inputs come first.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    /// Task `i`'s inputs are `inputs[starts[i]..starts[i + 1]]`, in argument order.
    starts: Vec<u32>,
    inputs: Vec<u32>,
    /// Nominal duration of each task on a worker of speed 1, in microseconds.
    pub duration_us: Vec<u32>,
    /// Nominal size of each task's output, in bytes.
    pub nbytes: Vec<u64>,
    /// Each task's key prefix (an index into `prefixes`) and number under it.
    names: Vec<(u8, u32)>,
    prefixes: Vec<&'static str>,
    /// The keys a client holds futures for.
    pub wanted: Vec<u32>,
    /// The parts submitted as separate graphs, in order.
    pub parts: Vec<Range<u32>>,
}

impl Graph {
    /// Builds a graph of `shape`, its sizes and durations drawn from `seed`.
    pub fn generate(shape: Shape, seed: u64) -> Graph {
        let mut g = Graph {
            starts: vec![0],
            ..Graph::default()
        };
        let mut rng = Rng::new(seed ^ 0x6772_6170_6873);
        g.add_shape(shape, &mut rng);
        g
    }

    fn add_shape(&mut self, shape: Shape, rng: &mut Rng) {
        let start = self.len() as u32;
        match shape {
            Shape::MapReduce { maps, fan_in } => self.map_reduce(maps, fan_in.max(2), rng),
            Shape::Matmul { n, k } => self.matmul(n, k, rng),
            Shape::RandomDag {
                tasks,
                max_fan_in,
                window,
            } => self.random_dag(tasks, max_fan_in, window.max(1), rng),
            Shape::Mix { tasks } => {
                self.add_shape(
                    Shape::MapReduce {
                        maps: tasks / 5 * 2,
                        fan_in: 8,
                    },
                    rng,
                );
                let n = ((tasks as f64 / 8.0).cbrt() as u32).max(1);
                self.add_shape(Shape::Matmul { n, k: n }, rng);
                let rest = tasks.saturating_sub(self.len() as u32).max(1);
                self.add_shape(
                    Shape::RandomDag {
                        tasks: rest,
                        max_fan_in: 4,
                        window: 1000,
                    },
                    rng,
                );
                return;
            }
        }
        self.parts.push(start..self.len() as u32);
    }

    fn prefix(&mut self, name: &'static str) -> u8 {
        match self.prefixes.iter().position(|p| *p == name) {
            Some(i) => i as u8,
            None => {
                self.prefixes.push(name);
                (self.prefixes.len() - 1) as u8
            }
        }
    }

    /// Adds a task; returns its index.
    fn add(
        &mut self,
        prefix: u8,
        number: u32,
        inputs: &[u32],
        duration_us: u32,
        nbytes: u64,
    ) -> u32 {
        let i = self.len() as u32;
        debug_assert!(inputs.iter().all(|&d| d < i), "inputs come first");
        self.inputs.extend_from_slice(inputs);
        self.starts.push(self.inputs.len() as u32);
        self.duration_us.push(duration_us.max(1));
        self.nbytes.push(nbytes.max(8));
        self.names.push((prefix, number));
        i
    }

    fn map_reduce(&mut self, maps: u32, fan_in: u32, rng: &mut Rng) {
        let (map, reduce) = (self.prefix("map"), self.prefix("reduce"));
        let mut level: Vec<u32> = (0..maps.max(1))
            .map(|m| {
                let d = rng.log_range(2_000, 20_000) as u32;
                let b = rng.log_range(64 << 10, 1 << 20);
                self.add(map, m, &[], d, b)
            })
            .collect();
        let mut number = 0;
        while level.len() > 1 {
            level = level
                .chunks(fan_in as usize)
                .map(|group| {
                    let bytes = group.iter().map(|&t| self.nbytes[t as usize]).sum::<u64>();
                    let d = rng.log_range(500, 2_000) as u32;
                    number += 1;
                    self.add(reduce, number - 1, group, d, bytes / group.len() as u64)
                })
                .collect();
        }
        self.wanted.push(level[0]);
    }

    fn matmul(&mut self, n: u32, k: u32, rng: &mut Rng) {
        let (pa, pb) = (self.prefix("block-a"), self.prefix("block-b"));
        let (pp, ps) = (self.prefix("product"), self.prefix("sum"));
        let block = 1u64 << 20;
        let a: Vec<u32> = (0..n * k)
            .map(|x| {
                let d = rng.log_range(500, 2_000) as u32;
                self.add(pa, x, &[], d, block)
            })
            .collect();
        let b: Vec<u32> = (0..n * k)
            .map(|x| {
                let d = rng.log_range(500, 2_000) as u32;
                self.add(pb, x, &[], d, block)
            })
            .collect();
        let mut products = Vec::with_capacity(k as usize);
        for i in 0..n {
            for j in 0..n {
                products.clear();
                for l in 0..k {
                    let inputs = [a[(i * k + l) as usize], b[(l * n + j) as usize]];
                    let d = rng.log_range(4_000, 8_000) as u32;
                    products.push(self.add(pp, (i * n + j) * k + l, &inputs, d, block));
                }
                let sum = self.add(ps, i * n + j, &products.clone(), 100 * k, block);
                self.wanted.push(sum);
            }
        }
    }

    fn random_dag(&mut self, tasks: u32, max_fan_in: u32, window: u32, rng: &mut Rng) {
        let p = self.prefix("random");
        let first = self.len() as u32;
        let mut read = vec![false; tasks as usize];
        let mut inputs = Vec::new();
        for x in 0..tasks {
            inputs.clear();
            let fan_in = if x < 16 {
                0
            } else {
                rng.range(0, u64::from(max_fan_in))
            };
            let lo = x.saturating_sub(window);
            for _ in 0..fan_in {
                let d = lo + rng.below(u64::from(x - lo)) as u32;
                if !inputs.contains(&(first + d)) {
                    inputs.push(first + d);
                    read[d as usize] = true;
                }
            }
            let d = rng.log_range(100, 10_000) as u32;
            let b = rng.log_range(1 << 10, 1 << 20);
            self.add(p, x, &inputs, d, b);
        }
        self.wanted
            .extend((0..tasks).filter(|&x| !read[x as usize]).map(|x| first + x));
    }

    /// Tasks in the graph.
    pub fn len(&self) -> usize {
        self.duration_us.len()
    }

    /// Whether the graph has no task.
    pub fn is_empty(&self) -> bool {
        self.duration_us.is_empty()
    }

    /// Task `i`'s inputs, in argument order.
    pub fn inputs(&self, i: u32) -> &[u32] {
        &self.inputs[self.starts[i as usize] as usize..self.starts[i as usize + 1] as usize]
    }

    /// Task `i`'s key, `{prefix}-{number}`.
    pub fn key(&self, i: u32) -> String {
        let (p, n) = self.names[i as usize];
        format!("{}-{n}", self.prefixes[p as usize])
    }

    /// Task `i` as the scheduler core receives it: its op is its key's prefix, its
    /// arguments `[index, duration_us, nbytes]` (what the simulated op computes from and
    /// how long it runs), its dependencies its inputs' keys.
    pub fn new_task(&self, i: u32) -> NewTask {
        let (p, _) = self.names[i as usize];
        NewTask {
            key: self.key(i),
            op: self.prefixes[p as usize].to_string(),
            args: Datum::List(vec![
                Datum::Int(i64::from(i)),
                Datum::Int(i64::from(self.duration_us[i as usize])),
                Datum::Int(self.nbytes[i as usize] as i64),
            ]),
            bufs: Vec::new(),
            deps: self.inputs(i).iter().map(|&d| self.key(d)).collect(),
            resources: Vec::new(),
            code: None,
        }
    }

    /// Every task's value: what a correct run produces ([`task_value`] of its inputs'
    /// values).
    pub fn expected_values(&self) -> Vec<u64> {
        let mut v = vec![0u64; self.len()];
        for i in 0..self.len() as u32 {
            v[i as usize] = task_value(u64::from(i), self.inputs(i).iter().map(|&d| v[d as usize]));
        }
        v
    }

    /// The longest path of nominal durations through the graph, in microseconds.
    pub fn critical_path_us(&self) -> u64 {
        let mut finish = vec![0u64; self.len()];
        for i in 0..self.len() as u32 {
            let ready = self.inputs(i).iter().map(|&d| finish[d as usize]).max();
            finish[i as usize] = ready.unwrap_or(0) + u64::from(self.duration_us[i as usize]);
        }
        finish.into_iter().max().unwrap_or(0)
    }

    /// The sum of all nominal durations, in microseconds.
    pub fn work_us(&self) -> u64 {
        self.duration_us.iter().map(|&d| u64::from(d)).sum()
    }

    /// The locality oracle, in bytes: for each task, the sizes of its inputs but the
    /// largest, summed — what moves if every task runs where its largest input is and
    /// each other input comes from another worker. A reference for placement quality, not
    /// a strict lower bound: a placement that keeps whole subtrees on one worker (at the
    /// cost of parallelism) moves less.
    pub fn locality_oracle_bytes(&self) -> u64 {
        (0..self.len() as u32)
            .map(|i| {
                let sizes = self.inputs(i).iter().map(|&d| self.nbytes[d as usize]);
                let (sum, max) = sizes.fold((0u64, 0u64), |(s, m), b| (s + b, m.max(b)));
                sum - max
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_reduce_tree_reduces_to_one_key() {
        let g = Graph::generate(
            Shape::MapReduce {
                maps: 64,
                fan_in: 8,
            },
            1,
        );
        assert_eq!(g.len(), 64 + 8 + 1);
        assert_eq!(g.wanted, vec![72]);
        assert_eq!(g.inputs(72), &[64, 65, 66, 67, 68, 69, 70, 71]);
        assert_eq!(g.key(72), "reduce-8");
    }

    #[test]
    fn a_matmul_sums_k_products_per_block() {
        let g = Graph::generate(Shape::Matmul { n: 3, k: 2 }, 1);
        assert_eq!(g.len(), 6 + 6 + 18 + 9);
        assert_eq!(g.wanted.len(), 9);
        let sum = g.wanted[0];
        assert_eq!(g.inputs(sum).len(), 2);
        // Product (0, 0, 1) reads A(0, 1) and B(1, 0).
        assert_eq!(g.inputs(g.inputs(sum)[1]), &[1, 6 + 3]);
        // Each sum reads k blocks of 1 MiB, and runs where one of them is.
        assert_eq!(g.locality_oracle_bytes(), 18 * (1 << 20) + 9 * (1 << 20));
    }

    #[test]
    fn a_mix_has_exactly_the_tasks_asked_and_three_parts() {
        let g = Graph::generate(Shape::Mix { tasks: 10_000 }, 3);
        assert_eq!(g.len(), 10_000);
        assert_eq!(g.parts.len(), 3);
        assert_eq!(g.parts[2].end, 10_000);
        assert!(g.critical_path_us() > 0 && g.critical_path_us() < g.work_us());
    }

    #[test]
    fn the_same_seed_gives_the_same_graph() {
        let a = Graph::generate(Shape::named("random", 500).unwrap(), 9);
        let b = Graph::generate(Shape::named("random", 500).unwrap(), 9);
        let c = Graph::generate(Shape::named("random", 500).unwrap(), 10);
        assert_eq!(a.expected_values(), b.expected_values());
        assert_eq!(a.inputs, b.inputs);
        assert_ne!(a.inputs, c.inputs);
    }
}
