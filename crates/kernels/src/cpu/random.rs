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

/// Counters Philox runs side by side in [`philox_lanes`]: wide enough for AVX-512's 8
/// 64-bit products per instruction, twice.
const LANES: usize = 16;

/// [`philox4x32_10`] of counters `first..first + LANES`, word by word: the same
/// arithmetic lane by lane, so the compiler turns each round into vector instructions.
#[inline(always)]
fn philox_lanes(first: u64, seed: u64) -> [[u32; LANES]; 4] {
    let mut c0: [u32; LANES] = std::array::from_fn(|l| (first + l as u64) as u32);
    let mut c1: [u32; LANES] = std::array::from_fn(|l| ((first + l as u64) >> 32) as u32);
    let (mut c2, mut c3) = ([0u32; LANES], [0u32; LANES]);
    let (mut k0, mut k1) = (seed as u32, (seed >> 32) as u32);
    for _ in 0..10 {
        for l in 0..LANES {
            let p0 = 0xD251_1F53u64 * c0[l] as u64;
            let p1 = 0xCD9E_8D57u64 * c2[l] as u64;
            let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
            let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
            let n0 = hi1 ^ c1[l] ^ k0;
            let n2 = hi0 ^ c3[l] ^ k1;
            (c0[l], c1[l], c2[l], c3[l]) = (n0, lo1, n2, lo0);
        }
        k0 = k0.wrapping_add(0x9E37_79B9);
        k1 = k1.wrapping_add(0xBB67_AE85);
    }
    [c0, c1, c2, c3]
}

/// Uniform f32s for whole Philox blocks: `out` (4 · LANES · m elements) gets counters
/// `first..`, element 4c + w from word w of counter c, exactly as the scalar loop.
#[inline(always)]
fn uniform_f32_blocks(out: &mut [f32], seed: u64, first: u64, low: f64, scale: f64) {
    for (b, run) in out.chunks_exact_mut(4 * LANES).enumerate() {
        let words = philox_lanes(first + (b * LANES) as u64, seed);
        for (l, quad) in run.chunks_exact_mut(4).enumerate() {
            for (w, o) in quad.iter_mut().enumerate() {
                *o = (low + scale * u24(words[w][l]) as f64) as f32;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512vl")]
fn uniform_f32_blocks_avx512(out: &mut [f32], seed: u64, first: u64, low: f64, scale: f64) {
    uniform_f32_blocks(out, seed, first, low, scale)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn uniform_f32_blocks_avx2(out: &mut [f32], seed: u64, first: u64, low: f64, scale: f64) {
    uniform_f32_blocks(out, seed, first, low, scale)
}

/// [`uniform_f32_blocks`] with the widest vector instructions this CPU has (checked at
/// run time; the binary is built for the baseline).
fn uniform_f32_dispatch(out: &mut [f32], seed: u64, first: u64, low: f64, scale: f64) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl")
        {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { uniform_f32_blocks_avx512(out, seed, first, low, scale) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: as above.
            return unsafe { uniform_f32_blocks_avx2(out, seed, first, low, scale) };
        }
    }
    uniform_f32_blocks(out, seed, first, low, scale)
}

/// `low + (high - low) * U[0,1)` for elements `offset..offset + out.len()`, one Philox
/// block per 4 (f32) or 2 (f64) elements.
pub fn random_uniform<T: Float>(out: &mut [T], seed: u64, offset: u64, low: f64, high: f64) {
    let scale = high - low;
    let f32s = T::NAME == "f32";
    let per = if f32s { 4 } else { 2 };
    let mut i = 0;
    // f32: the whole blocks in the middle, LANES counters at a time.
    if f32s {
        let len = out.len();
        let lead = ((4 - offset % 4) % 4).min(len as u64) as usize;
        let body = (len - lead) / (4 * LANES) * (4 * LANES);
        if let (Some(o), true) = (super::cast_mut::<f32>(super::as_bytes_mut(out)), body > 0) {
            let first = (offset + lead as u64) / 4;
            uniform_f32_dispatch(&mut o[lead..lead + body], seed, first, low, scale);
            random_uniform(&mut o[..lead], seed, offset, low, high);
            let rest = lead + body;
            random_uniform(&mut o[rest..], seed, offset + rest as u64, low, high);
            return;
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Each instruction set's copy of the block loop gives the same bits as the portable
    /// one (workers on different CPUs generate the same arrays).
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn every_instruction_sets_copy_gives_the_same_bits() {
        let n = 4 * LANES * 5;
        let mut portable = vec![0f32; n];
        uniform_f32_blocks(&mut portable, 9, 1 << 20, -2.0, 5.0);
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            let mut v = vec![f32::NAN; n];
            // SAFETY: the CPU has the features the function is compiled for.
            unsafe { uniform_f32_blocks_avx2(&mut v, 9, 1 << 20, -2.0, 5.0) };
            assert!(v
                .iter()
                .zip(&portable)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
        }
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl")
        {
            let mut v = vec![f32::NAN; n];
            // SAFETY: as above.
            unsafe { uniform_f32_blocks_avx512(&mut v, 9, 1 << 20, -2.0, 5.0) };
            assert!(v
                .iter()
                .zip(&portable)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }

    /// The vectorised f32 path (whole runs of LANES blocks) gives the per-element values,
    /// from any offset, with the scalar head and tail around it.
    #[test]
    fn vector_f32_uniforms_equal_the_per_element_scheme() {
        for offset in [0u64, 1, 2, 3, 61, (1 << 32) - 70, 1 << 33] {
            for len in [63usize, 64, 65, 67, 200, 1000] {
                let mut f = vec![f32::NAN; len];
                random_uniform(&mut f, 77, offset, -1.0, 2.0);
                for (i, v) in f.iter().enumerate() {
                    let u = uniform_f32_at(offset + i as u64, 77) as f64;
                    assert_eq!(*v, (-1.0 + 3.0 * u) as f32, "{offset}+{i} of {len}");
                }
            }
        }
    }
}
