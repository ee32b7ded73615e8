//! Slicing by ranges and rechunking: each output chunk assembled from the input chunks
//! it overlaps.

use crate::*;

/// The global linear index of element `i` (row-major within the chunk) of the chunk at
/// `origin`.
pub(crate) fn global_offset(global: &[u64], origin: &[u64], local: &[u64], mut i: u64) -> u64 {
    let mut idx = 0;
    let mut stride = 1;
    for d in (0..global.len()).rev() {
        let pos = i % local[d].max(1);
        i /= local[d].max(1);
        idx += (origin[d] + pos) * stride;
        stride *= global[d];
    }
    idx
}

pub(crate) fn key_of(name: &str, idx: &[usize]) -> String {
    let mut k = name.to_string();
    for i in idx {
        k.push('-');
        k.push_str(&i.to_string());
    }
    k
}

/// The index of the first element of chunk `idx`.
pub(crate) fn origin_of(chunks: &[Vec<u64>], idx: &[usize]) -> Vec<u64> {
    idx.iter()
        .enumerate()
        .map(|(d, &i)| chunks[d][..i].iter().sum())
        .collect()
}

/// The shape of chunk `idx`.
pub(crate) fn shape_of(chunks: &[Vec<u64>], idx: &[usize]) -> Vec<u64> {
    idx.iter().enumerate().map(|(d, &i)| chunks[d][i]).collect()
}

/// The parts of the chunks of one dimension (`lengths`) inside `[lo, hi)`: (chunk, offset
/// within it, length), in order.
pub(crate) fn overlaps(lengths: &[u64], lo: u64, hi: u64) -> Vec<(usize, u64, u64)> {
    let mut out = Vec::new();
    let mut origin = 0;
    for (i, &len) in lengths.iter().enumerate() {
        let (a, b) = (lo.max(origin), hi.min(origin + len));
        if a < b {
            out.push((i, a - origin, b - a));
        }
        origin += len;
        if origin >= hi {
            break;
        }
    }
    out
}

/// One chunk of an array being built: its grid index, origin and shape.
pub(crate) struct Block<'a> {
    pub(crate) idx: &'a [usize],
    pub(crate) origin: Vec<u64>,
    pub(crate) shape: Vec<u64>,
}

impl Array {
    /// The elements in `ranges` (one half-open range per dimension). Each output chunk is
    /// cut from exactly one input chunk, so slicing moves only the selected bytes.
    pub fn slice(&self, ranges: &[std::ops::Range<u64>]) -> Result<Array, ArrayError> {
        if ranges.len() != self.shape().len() {
            return Err(ArrayError::Invalid(format!(
                "{} ranges for a {}-d array",
                ranges.len(),
                self.shape().len()
            )));
        }
        // Per dimension: (input chunk, offset within it, length) of each output chunk.
        let mut pieces: Vec<Vec<(usize, u64, u64)>> = Vec::new();
        for (d, r) in ranges.iter().enumerate() {
            if r.start > r.end || r.end > self.shape()[d] {
                return Err(ArrayError::Invalid(format!(
                    "range {r:?} outside dimension {d} of length {}",
                    self.shape()[d]
                )));
            }
            let mut v = overlaps(&self.chunks()[d], r.start, r.end);
            if v.is_empty() {
                v.push((0, 0, 0));
            }
            pieces.push(v);
        }
        let shape: Vec<u64> = ranges.iter().map(|r| r.end - r.start).collect();
        let chunks: Vec<Vec<u64>> = pieces
            .iter()
            .map(|p| p.iter().map(|x| x.2).collect())
            .collect();
        let a = self.clone();
        Ok(Array::blockwise(
            "slice",
            shape,
            chunks,
            self.dtype(),
            vec![a.clone()],
            |b| {
                let piece = |d: usize| pieces[d][b.idx[d]];
                let rank = b.idx.len();
                let src: Vec<usize> = (0..rank).map(|d| piece(d).0).collect();
                let start: Vec<u64> = (0..rank).map(|d| piece(d).1).collect();
                let args = vec![
                    ints(&b.shape),
                    Arg::Key(a.chunk_key(&src)),
                    ints(&start),
                    ints(&vec![0; rank]),
                    ints(&b.shape),
                ];
                ("array.assemble".into(), args)
            },
        ))
    }

    /// The same array in chunks of `chunk`: each output chunk is assembled from the parts
    /// of the input chunks it overlaps.
    pub fn rechunk(&self, chunk: &[u64]) -> Result<Array, ArrayError> {
        let chunks = Self::regular(self.shape(), chunk)?;
        let a = self.clone();
        Ok(Array::blockwise(
            "rechunk",
            self.shape().to_vec(),
            chunks,
            self.dtype(),
            vec![a.clone()],
            |b| {
                // Per dimension, the input chunks this block overlaps; every combination is
                // one piece.
                let per_dim: Vec<Vec<(usize, u64, u64)>> = (0..b.idx.len())
                    .map(|d| overlaps(&a.chunks()[d], b.origin[d], b.origin[d] + b.shape[d]))
                    .collect();
                let mut args = vec![ints(&b.shape)];
                for combo in grid(&per_dim.iter().map(Vec::len).collect::<Vec<_>>()) {
                    let part = |d: usize| per_dim[d][combo[d]];
                    let src: Vec<usize> = (0..combo.len()).map(|d| part(d).0).collect();
                    let src_origin = a.chunk_origin(&src);
                    let src_start: Vec<u64> = (0..combo.len()).map(|d| part(d).1).collect();
                    let dst_start: Vec<u64> = (0..combo.len())
                        .map(|d| src_origin[d] + part(d).1 - b.origin[d])
                        .collect();
                    let extent: Vec<u64> = (0..combo.len()).map(|d| part(d).2).collect();
                    args.extend([
                        Arg::Key(a.chunk_key(&src)),
                        ints(&src_start),
                        ints(&dst_start),
                        ints(&extent),
                    ]);
                }
                ("array.assemble".into(), args)
            },
        ))
    }
}
