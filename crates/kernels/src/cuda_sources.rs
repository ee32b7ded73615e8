//! The CUDA sources of `kernels/`, embedded, with `common.cuh` inlined so each file
//! compiles on its own (NVRTC is given one source text).

/// The shared header.
pub const COMMON: &str = include_str!("../../../kernels/common.cuh");

/// Every kernel file: (name, source as written).
pub const FILES: &[(&str, &str)] = &[
    ("fill.cu", include_str!("../../../kernels/fill.cu")),
    ("random.cu", include_str!("../../../kernels/random.cu")),
    (
        "elementwise.cu",
        include_str!("../../../kernels/elementwise.cu"),
    ),
    ("reduce.cu", include_str!("../../../kernels/reduce.cu")),
    (
        "transpose.cu",
        include_str!("../../../kernels/transpose.cu"),
    ),
];

/// A kernel file ready for NVRTC: the header inlined in place of its `#include`.
pub fn source(file: &str) -> Option<String> {
    let (_, text) = FILES.iter().find(|(n, _)| *n == file)?;
    let header = COMMON.replace("#pragma once", "");
    Some(text.replace("#include \"common.cuh\"", &header))
}
