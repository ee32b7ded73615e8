//! Counter-based random numbers (Philox4x32-10, as `common.cuh`): an element's value
//! depends only on the seed and its index, so any chunk of an array can be generated on
//! its own, on the host or on a GPU.

use super::Float;

/// Philox4x32-10, as in `common.cuh`.
pub fn philox4x32_10(index: u64, seed: u64) -> [u32; 4] {
    let (mut c0, mut c1, mut c2, mut c3) = (index as u32, (index >> 32) as u32, 0u32, 0u32);
    let (mut k0, mut k1) = (seed as u32, (seed >> 32) as u32);
    for _ in 0..10 {
        let p0 = 0xD251_1F53u64 * c0 as u64;
        let p1 = 0xCD9E_8D57u64 * c2 as u64;
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        let n0 = hi1 ^ c1 ^ k0;
        let n2 = hi0 ^ c3 ^ k1;
        (c0, c1, c2, c3) = (n0, lo1, n2, lo0);
        k0 = k0.wrapping_add(0x9E37_79B9);
        k1 = k1.wrapping_add(0xBB67_AE85);
    }
    [c0, c1, c2, c3]
}

/// Element `index`'s uniform in [0, 1) with 24 bits: word `index % 4` of the Philox
/// block for counter `index / 4` (as `common.cuh`).
pub fn uniform_f32_at(index: u64, seed: u64) -> f32 {
    u24(philox4x32_10(index >> 2, seed)[(index & 3) as usize])
}

fn u24(w: u32) -> f32 {
    (w >> 8) as f32 * (1.0 / 16_777_216.0)
}

fn u53(hi: u32, lo: u32) -> f64 {
    (((hi as u64) << 21) ^ (lo >> 11) as u64) as f64 * (1.0 / 9_007_199_254_740_992.0)
}

/// Element `index`'s uniform in [0, 1) with 53 bits: word pair `index % 2` of counter
/// `index / 2`.
pub fn uniform_f64_at(index: u64, seed: u64) -> f64 {
    let p = philox4x32_10(index >> 1, seed);
    let k = 2 * (index & 1) as usize;
    u53(p[k], p[k + 1])
}

fn box_muller(p: [u32; 4]) -> (f64, f64) {
    let u1 = (p[0] as f64 + 1.0) * (1.0 / 4_294_967_296.0);
    let u2 = p[1] as f64 * (1.0 / 4_294_967_296.0);
    let r = (-2.0 * u1.ln()).sqrt();
    let t = std::f64::consts::TAU * u2;
    (r * t.cos(), r * t.sin())
}

/// Element `index`'s standard normal: Box-Muller on counter `index / 2`, the even element
/// the cosine, the odd the sine.
pub fn normal_at(index: u64, seed: u64) -> f64 {
    let (c, s) = box_muller(philox4x32_10(index >> 1, seed));
    if index & 1 == 1 {
        s
    } else {
        c
    }
}

/// `low + (high - low) * U[0,1)` for elements `offset..offset + out.len()`, one Philox
/// block per 4 (f32) or 2 (f64) elements.
pub fn random_uniform<T: Float>(out: &mut [T], seed: u64, offset: u64, low: f64, high: f64) {
    let scale = high - low;
    let f32s = T::NAME == "f32";
    let per = if f32s { 4 } else { 2 };
    let mut i = 0;
    while i < out.len() {
        let g = offset + i as u64;
        let block = philox4x32_10(g / per, seed);
        let first = (g % per) as usize;
        for w in first..per as usize {
            if i >= out.len() {
                break;
            }
            let u = if f32s {
                u24(block[w]) as f64
            } else {
                u53(block[2 * w], block[2 * w + 1])
            };
            out[i] = T::from_f64(low + scale * u);
            i += 1;
        }
    }
}

/// `mean + std * N(0,1)` for elements `offset..offset + out.len()`.
pub fn random_normal<T: Float>(out: &mut [T], seed: u64, offset: u64, mean: f64, std: f64) {
    let mut i = 0;
    while i < out.len() {
        let g = offset + i as u64;
        let (c, s) = box_muller(philox4x32_10(g >> 1, seed));
        for z in [c, s].into_iter().skip((g & 1) as usize) {
            if i >= out.len() {
                break;
            }
            out[i] = T::from_f64(mean + std * z);
            i += 1;
        }
    }
}

/// The twin of the `random_uniform_*` entry points: rows of `cols` elements, row `r`
/// starting at counter `offset + r * row_stride` (a chunk's rows in a larger array).
#[allow(clippy::too_many_arguments)]
pub fn random_rows<T: Float>(
    normal: bool,
    out: &mut [T],
    cols: usize,
    seed: u64,
    offset: u64,
    row_stride: u64,
    p0: f64,
    p1: f64,
) {
    for (r, row) in out.chunks_mut(cols.max(1)).enumerate() {
        let start = offset + r as u64 * row_stride;
        if normal {
            random_normal(row, seed, start, p0, p1);
        } else {
            random_uniform(row, seed, start, p0, p1);
        }
    }
}
