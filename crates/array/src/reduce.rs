//! Reductions over everything or along an axis, with a tree of fan-in `split_every`;
//! `argmax`.

use crate::layout::*;
use crate::*;

/// Adds tasks combining `keys` elementwise by `op` (add, max, min), `fan_in` at a time,
/// into `out`; a key left alone at a level goes up to the next one as it is.
pub(crate) fn tree_combine(
    tasks: &mut Vec<Task>,
    op: &str,
    out: &str,
    mut keys: Vec<String>,
    fan_in: usize,
) {
    let mut level = 0;
    while keys.len() > fan_in {
        keys = keys
            .chunks(fan_in)
            .enumerate()
            .map(|(n, group)| {
                // A key left alone goes up as it is (no task copying it).
                if let [alone] = group {
                    return alone.clone();
                }
                let key = format!("{out}-t{level}-{n}");
                let mut args = vec![arg::str(op)];
                args.extend(group.iter().map(|k| Arg::Key(k.clone())));
                tasks.push(Task {
                    key: key.clone(),
                    op: "array.combine".into(),
                    args,
                });
                key
            })
            .collect();
        level += 1;
    }
    let mut args = vec![arg::str(op)];
    args.extend(keys.into_iter().map(Arg::Key));
    tasks.push(Task {
        key: out.to_string(),
        op: "array.combine".into(),
        args,
    });
}

impl Array {
    /// The sum of every element (a 0-d array): a sum per chunk, then a tree of additions
    /// with fan-in `split_every`.
    pub fn sum(&self, split_every: usize) -> Array {
        self.reduce("sum", None, split_every)
            .expect("a whole-array reduction is always valid")
    }

    /// The largest element (a 0-d array).
    pub fn max(&self) -> Array {
        self.reduce("max", None, 8)
            .expect("a whole-array reduction is always valid")
    }

    /// The smallest element (a 0-d array).
    pub fn min(&self) -> Array {
        self.reduce("min", None, 8)
            .expect("a whole-array reduction is always valid")
    }

    /// The mean of every element (a 0-d array).
    pub fn mean(&self) -> Array {
        &self.sum(8) / self.len().max(1) as f64
    }

    /// Sum along `axis` (the result has one dimension fewer).
    pub fn sum_axis(&self, axis: usize, split_every: usize) -> Result<Array, ArrayError> {
        self.reduce("sum", Some(axis), split_every)
    }

    /// Largest element along `axis` (the result has one dimension fewer); errs when the
    /// array has no such axis.
    pub fn max_axis(&self, axis: usize) -> Result<Array, ArrayError> {
        self.reduce("max", Some(axis), 8)
    }

    /// Smallest element along `axis` (as [`Array::max_axis`]).
    pub fn min_axis(&self, axis: usize) -> Result<Array, ArrayError> {
        self.reduce("min", Some(axis), 8)
    }

    /// Mean along `axis`.
    pub fn mean_axis(&self, axis: usize) -> Result<Array, ArrayError> {
        let n = *self
            .shape()
            .get(axis)
            .ok_or_else(|| ArrayError::Invalid(format!("no axis {axis}")))?;
        Ok(&self.sum_axis(axis, 8)? / n.max(1) as f64)
    }

    /// `op` (sum, max, min) over every element (`axis` None, a 0-d result) or along one
    /// axis: a reduction per chunk, then a tree combining `split_every` at a time.
    pub fn reduce(
        &self,
        op: &str,
        axis: Option<usize>,
        split_every: usize,
    ) -> Result<Array, ArrayError> {
        if !matches!(op, "sum" | "max" | "min") {
            return Err(ArrayError::Invalid(format!("unknown reduction {op:?}")));
        }
        if let Some(ax) = axis {
            if ax >= self.shape().len() {
                return Err(ArrayError::Invalid(format!(
                    "axis {ax} of a {}-d array",
                    self.shape().len()
                )));
            }
        }
        let a = self.clone();
        let (shape, chunks) = match axis {
            None => (vec![], vec![]),
            Some(ax) => {
                let mut s = self.shape().to_vec();
                let mut c = self.chunks().to_vec();
                s.remove(ax);
                c.remove(ax);
                (s, c)
            }
        };
        let along = axis.map_or(0, |ax| self.chunks()[ax].len());
        let all = a.chunk_indices();
        // Over every element, a chunk that is a transpose reduces to what its source does:
        // its source is read instead (and the transpose, read by nothing else, not run).
        let transposed: HashMap<&str, &str> = match axis {
            None => a.transposed_chunks(),
            Some(_) => HashMap::new(),
        };
        let source = |i: &[usize]| {
            let key = a.chunk_key(i);
            match transposed.get(key.as_str()) {
                Some(src) => src.to_string(),
                None => key,
            }
        };
        let combine = if op == "sum" { "add" } else { op }.to_string();
        let op = op.to_string();
        Ok(Array::new(
            &format!("{op}-reduce"),
            shape,
            chunks,
            self.dtype(),
            vec![a.clone()],
            |name, idx| {
                let mut tasks = Vec::new();
                for out_idx in idx {
                    let out = key_of(name, out_idx);
                    // The input chunks that fold into this output chunk.
                    let inputs: Vec<Vec<usize>> = match axis {
                        None => all.clone(),
                        Some(ax) => (0..along)
                            .map(|j| {
                                let mut i = out_idx.clone();
                                i.insert(ax, j);
                                i
                            })
                            .collect(),
                    };
                    let partials: Vec<String> = inputs
                        .iter()
                        .map(|i| {
                            let key = format!("{out}-c{}", key_of("", i));
                            tasks.push(Task {
                                key: key.clone(),
                                op: "array.reduce".into(),
                                args: vec![
                                    arg::str(op.clone()),
                                    Arg::from(axis.map_or(-1, |x| x as i64)),
                                    Arg::Key(source(i)),
                                ],
                            });
                            key
                        })
                        .collect();
                    tree_combine(&mut tasks, &combine, &out, partials, split_every.max(2));
                }
                tasks
            },
        ))
    }

    /// The flat (row-major) index of the first largest element, as a 0-d i64 array, like
    /// numpy's `argmax` without an axis. Each chunk finds its largest element and that
    /// element's global index; a tree (`split_every` at a time) keeps the larger, the
    /// earlier on ties.
    pub fn argmax(&self, split_every: usize) -> Array {
        let a = self.clone();
        let all = a.chunk_indices();
        let global = ints(self.shape());
        Array::new(
            "argmax",
            vec![],
            vec![],
            DType::I64,
            vec![a.clone()],
            |name, _| {
                let mut tasks = Vec::new();
                let out = key_of(name, &[]);
                let mut keys: Vec<String> = all
                    .iter()
                    .map(|i| {
                        let key = format!("{out}-c{}", key_of("", i));
                        tasks.push(Task {
                            key: key.clone(),
                            op: "array.argmax".into(),
                            args: vec![
                                Arg::Key(a.chunk_key(i)),
                                global.clone(),
                                ints(&a.chunk_origin(i)),
                            ],
                        });
                        key
                    })
                    .collect();
                let fan_in = split_every.max(2);
                let mut level = 0;
                while keys.len() > 1 {
                    keys = keys
                        .chunks(fan_in)
                        .enumerate()
                        .map(|(n, group)| {
                            let key = format!("{out}-t{level}-{n}");
                            tasks.push(Task {
                                key: key.clone(),
                                op: "array.argmax_combine".into(),
                                args: group.iter().map(|k| Arg::Key(k.clone())).collect(),
                            });
                            key
                        })
                        .collect();
                    level += 1;
                }
                tasks.push(Task {
                    key: out,
                    op: "array.argmax_index".into(),
                    args: vec![Arg::Key(keys.pop().expect("an array has a chunk"))],
                });
                tasks
            },
        )
    }
}
