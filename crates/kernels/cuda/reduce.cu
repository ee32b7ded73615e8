// Whole-array reductions: each block reduces a grid-stride share of the input by a tree
// in shared memory and writes one partial; a second launch with one block reduces the
// partials (the launcher chains them). Launch with 256 threads per block.
#include "common.cuh"

#define BLOCK 256

#define REDUCE(OP, T, S, INIT, COMBINE) \
extern "C" __global__ void OP##_##S(const T* a, T* partials, u64 n) { \
    __shared__ T s[BLOCK]; \
    T acc = INIT; \
    GRID_STRIDE(i, n) { T x = a[i]; acc = COMBINE; } \
    s[threadIdx.x] = acc; \
    __syncthreads(); \
    for (unsigned w = BLOCK / 2; w > 0; w >>= 1) { \
        if (threadIdx.x < w) { T x = s[threadIdx.x + w]; acc = s[threadIdx.x]; s[threadIdx.x] = COMBINE; } \
        __syncthreads(); \
    } \
    if (threadIdx.x == 0) partials[blockIdx.x] = s[0]; }

#define REDUCE_ALL(T, S, LOWEST, HIGHEST) \
    REDUCE(sum, T, S, (T)0, acc + x) \
    REDUCE(amax, T, S, LOWEST, x > acc ? x : acc) \
    REDUCE(amin, T, S, HIGHEST, x < acc ? x : acc)

REDUCE_ALL(float, f32, -RASK_INF_F, RASK_INF_F)
REDUCE_ALL(double, f64, -RASK_INF_D, RASK_INF_D)
REDUCE_ALL(int, i32, (int)0x80000000, 0x7fffffff)
REDUCE_ALL(i64, i64, (i64)0x8000000000000000ULL, 0x7fffffffffffffffLL)

// argmax: the index of the first largest element. Partials are (value, index) pairs;
// pass `index_in` = null on the first launch (indices are positions), the previous
// launch's indices afterwards.
#define ARGMAX(T, S) \
extern "C" __global__ void argmax_##S(const T* a, const i64* index_in, T* value_out, i64* index_out, u64 n) { \
    __shared__ T sv[BLOCK]; __shared__ i64 si[BLOCK]; \
    T best = a[0]; i64 at = -1; \
    GRID_STRIDE(i, n) { \
        i64 idx = index_in ? index_in[i] : (i64)i; \
        if (at < 0 || a[i] > best || (a[i] == best && idx < at)) { best = a[i]; at = idx; } } \
    sv[threadIdx.x] = best; si[threadIdx.x] = at; \
    __syncthreads(); \
    for (unsigned w = BLOCK / 2; w > 0; w >>= 1) { \
        if (threadIdx.x < w) { \
            T v = sv[threadIdx.x + w]; i64 j = si[threadIdx.x + w]; \
            if (j >= 0 && (si[threadIdx.x] < 0 || v > sv[threadIdx.x] || (v == sv[threadIdx.x] && j < si[threadIdx.x]))) { \
                sv[threadIdx.x] = v; si[threadIdx.x] = j; } } \
        __syncthreads(); \
    } \
    if (threadIdx.x == 0) { value_out[blockIdx.x] = sv[0]; index_out[blockIdx.x] = si[0]; } }

ARGMAX(float, f32)
ARGMAX(double, f64)
ARGMAX(int, i32)
ARGMAX(i64, i64)

// Reductions along one axis of a chunk seen as (outer, len, inner): out[o * inner + j]
// combines a[(o * len + k) * inner + j] over k. One thread per output element.
#define REDUCE_AXIS(OP, T, S, INIT, COMBINE) \
extern "C" __global__ void OP##_axis_##S(const T* a, T* out, u64 outer, u64 len, u64 inner) { \
    GRID_STRIDE(t, outer * inner) { \
        u64 o = t / inner, j = t % inner; \
        T acc = INIT; \
        for (u64 k = 0; k < len; k++) { T x = a[(o * len + k) * inner + j]; acc = COMBINE; } \
        out[t] = acc; } }

#define REDUCE_AXIS_ALL(T, S, LOWEST, HIGHEST) \
    REDUCE_AXIS(sum, T, S, (T)0, acc + x) \
    REDUCE_AXIS(amax, T, S, LOWEST, x > acc ? x : acc) \
    REDUCE_AXIS(amin, T, S, HIGHEST, x < acc ? x : acc)

REDUCE_AXIS_ALL(float, f32, -RASK_INF_F, RASK_INF_F)
REDUCE_AXIS_ALL(double, f64, -RASK_INF_D, RASK_INF_D)
REDUCE_AXIS_ALL(int, i32, (int)0x80000000, 0x7fffffff)
REDUCE_AXIS_ALL(i64, i64, (i64)0x8000000000000000ULL, 0x7fffffffffffffffLL)

// Reductions along the last axis (rows of `len` contiguous elements): one block of
// BLOCK threads per row (a grid-stride loop over rows), thread t combining elements
// t, t + BLOCK, … of its row — neighbouring threads read neighbouring elements — then a
// tree in shared memory as in the whole-array reductions. For rows the one-thread-per-
// output kernels above would read with a stride of `len` and, with few rows, use few
// threads.
#define REDUCE_ROWS(OP, T, S, INIT, COMBINE) \
extern "C" __global__ void OP##_rows_##S(const T* a, T* out, u64 rows, u64 len) { \
    __shared__ T s[BLOCK]; \
    for (u64 r = blockIdx.x; r < rows; r += gridDim.x) { \
        const T* row = a + r * len; \
        T acc = INIT; \
        for (u64 k = threadIdx.x; k < len; k += BLOCK) { T x = row[k]; acc = COMBINE; } \
        s[threadIdx.x] = acc; \
        __syncthreads(); \
        for (unsigned w = BLOCK / 2; w > 0; w >>= 1) { \
            if (threadIdx.x < w) { T x = s[threadIdx.x + w]; acc = s[threadIdx.x]; s[threadIdx.x] = COMBINE; } \
            __syncthreads(); \
        } \
        if (threadIdx.x == 0) out[r] = s[0]; \
        __syncthreads(); } }

#define REDUCE_ROWS_ALL(T, S, LOWEST, HIGHEST) \
    REDUCE_ROWS(sum, T, S, (T)0, acc + x) \
    REDUCE_ROWS(amax, T, S, LOWEST, x > acc ? x : acc) \
    REDUCE_ROWS(amin, T, S, HIGHEST, x < acc ? x : acc)

REDUCE_ROWS_ALL(float, f32, -RASK_INF_F, RASK_INF_F)
REDUCE_ROWS_ALL(double, f64, -RASK_INF_D, RASK_INF_D)
REDUCE_ROWS_ALL(int, i32, (int)0x80000000, 0x7fffffff)
REDUCE_ROWS_ALL(i64, i64, (i64)0x8000000000000000ULL, 0x7fffffffffffffffLL)
