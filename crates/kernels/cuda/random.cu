// random_uniform: low + (high - low) * U[0,1); random_normal: mean + std * N(0,1).
// Element i of an output of rows of `cols` elements uses counter
// `offset + (i / cols) * row_stride + i % cols`: a chunk passes the global index of its
// first element and the global row length, so the values are the same whatever the
// chunking and the device.
#include "common.cuh"

#define AT(i) (offset + ((i) / cols) * row_stride + (i) % cols)

extern "C" __global__ void random_uniform_f32(float* out, u64 n, u64 cols, u64 seed, u64 offset, u64 row_stride, float low, float high) {
    // In double, as the CPU twin computes it, then rounded once to float.
    GRID_STRIDE(i, n) out[i] = (float)((double)low + ((double)high - (double)low) * (double)uniform_f32_at(AT(i), seed));
}
extern "C" __global__ void random_uniform_f64(double* out, u64 n, u64 cols, u64 seed, u64 offset, u64 row_stride, double low, double high) {
    GRID_STRIDE(i, n) out[i] = low + (high - low) * uniform_f64_at(AT(i), seed);
}
extern "C" __global__ void random_normal_f32(float* out, u64 n, u64 cols, u64 seed, u64 offset, u64 row_stride, float mean, float std) {
    GRID_STRIDE(i, n) out[i] = (float)((double)mean + (double)std * normal_at(AT(i), seed));
}
extern "C" __global__ void random_normal_f64(double* out, u64 n, u64 cols, u64 seed, u64 offset, u64 row_stride, double mean, double std) {
    GRID_STRIDE(i, n) out[i] = mean + std * normal_at(AT(i), seed);
}
