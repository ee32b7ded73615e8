//! The CUDA sources of this crate's `cuda/` directory, embedded, with `common.cuh`
//! inlined so each file compiles on its own (NVRTC is given one source text). They live
//! inside the crate so that its published package carries them.

/// The shared header.
pub const COMMON: &str = include_str!("../cuda/common.cuh");

/// Every kernel file: (name, source as written).
pub const FILES: &[(&str, &str)] = &[
    ("fill.cu", include_str!("../cuda/fill.cu")),
    ("random.cu", include_str!("../cuda/random.cu")),
    ("elementwise.cu", include_str!("../cuda/elementwise.cu")),
    ("reduce.cu", include_str!("../cuda/reduce.cu")),
    ("transpose.cu", include_str!("../cuda/transpose.cu")),
];

/// A kernel file ready for NVRTC: the header inlined in place of its `#include`.
pub fn source(file: &str) -> Option<String> {
    let (_, text) = FILES.iter().find(|(n, _)| *n == file)?;
    let header = COMMON.replace("#pragma once", "");
    Some(text.replace("#include \"common.cuh\"", &header))
}
