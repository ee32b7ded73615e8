// fill: out[i] = value; arange: out[i] = start + i * step.
#include "common.cuh"

#define FILL(T, S) \
extern "C" __global__ void fill_##S(T* out, u64 n, T value) { GRID_STRIDE(i, n) out[i] = value; } \
extern "C" __global__ void arange_##S(T* out, u64 n, T start, T step) { GRID_STRIDE(i, n) out[i] = start + (T)i * step; }

FILL(float, f32)
FILL(double, f64)
FILL(int, i32)
FILL(i64, i64)
