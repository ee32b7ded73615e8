// Shared definitions of Rask's kernels. Every entry point is `extern "C"` and named
// {op}_{dtype}; sizes and indices are 64-bit; every kernel is a grid-stride loop, so any
// launch shape covers any length. Each entry point has a CPU twin in rask-kernels.
#pragma once

typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;

#define GRID_STRIDE(i, n) \
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (u64)blockDim.x * gridDim.x)

// Philox4x32-10: a counter-based generator, so a value depends only on (seed, index),
// never on the device, the launch shape or the chunking.
struct Philox4 { u32 v[4]; };

__device__ __forceinline__ Philox4 philox4x32_10(u64 index, u64 seed) {
    u32 c0 = (u32)index, c1 = (u32)(index >> 32), c2 = 0, c3 = 0;
    u32 k0 = (u32)seed, k1 = (u32)(seed >> 32);
    for (int r = 0; r < 10; r++) {
        u32 hi0 = __umulhi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
        u32 hi1 = __umulhi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
        u32 n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
        k0 += 0x9E3779B9u; k1 += 0xBB67AE85u;
    }
    Philox4 out = {{c0, c1, c2, c3}};
    return out;
}

// Element `index` takes word index % 4 of the block for counter index / 4 (f32), or the
// word pair index % 2 of counter index / 2 (f64, normals): every word is used once.
// Uniform in [0, 1): 24 bits for f32, 53 for f64.
__device__ __forceinline__ float uniform_f32_at(u64 index, u64 seed) {
    Philox4 p = philox4x32_10(index >> 2, seed);
    return (float)(p.v[index & 3] >> 8) * (1.0f / 16777216.0f);
}

__device__ __forceinline__ double uniform_f64_at(u64 index, u64 seed) {
    Philox4 p = philox4x32_10(index >> 1, seed);
    u32 hi = p.v[2 * (index & 1)], lo = p.v[2 * (index & 1) + 1];
    u64 bits = ((u64)hi << 21) ^ (u64)(lo >> 11);
    return (double)bits * (1.0 / 9007199254740992.0);
}

// Standard normal by Box-Muller: counter index / 2 gives two uniforms in (0, 1] and
// two normals; the even element takes the cosine one, the odd the sine one.
__device__ __forceinline__ double normal_at(u64 index, u64 seed) {
    Philox4 p = philox4x32_10(index >> 1, seed);
    double u1 = ((double)p.v[0] + 1.0) * (1.0 / 4294967296.0);
    double u2 = (double)p.v[1] * (1.0 / 4294967296.0);
    double r = sqrt(-2.0 * log(u1));
    double t = 6.283185307179586 * u2;
    return (index & 1) ? r * sin(t) : r * cos(t);
}

// Infinities (NVRTC has no <math.h> macros).
#define RASK_INF_F __int_as_float(0x7f800000)
#define RASK_INF_D __longlong_as_double(0x7ff0000000000000LL)
