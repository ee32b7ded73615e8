// random_uniform: low + (high - low) * U[0,1); random_normal: mean + std * N(0,1).
// Element i of an array uses counter `offset + i`: a chunk passes its global offset, so
// the values are the same whatever the chunking and the device.
#include "common.cuh"

extern "C" __global__ void random_uniform_f32(float* out, u64 n, u64 seed, u64 offset, float low, float high) {
    GRID_STRIDE(i, n) out[i] = low + (high - low) * uniform_f32_at(offset + i, seed);
}
extern "C" __global__ void random_uniform_f64(double* out, u64 n, u64 seed, u64 offset, double low, double high) {
    GRID_STRIDE(i, n) out[i] = low + (high - low) * uniform_f64_at(offset + i, seed);
}
extern "C" __global__ void random_normal_f32(float* out, u64 n, u64 seed, u64 offset, float mean, float std) {
    GRID_STRIDE(i, n) out[i] = (float)((double)mean + (double)std * normal_at(offset + i, seed));
}
extern "C" __global__ void random_normal_f64(double* out, u64 n, u64 seed, u64 offset, double mean, double std) {
    GRID_STRIDE(i, n) out[i] = mean + std * normal_at(offset + i, seed);
}
