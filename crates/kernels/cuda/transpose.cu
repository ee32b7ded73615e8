// out (cols × rows) = transpose of a (rows × cols), row-major, through 32×32 tiles in
// shared memory (padded against bank conflicts). Launch with 32×8 threads and a grid
// covering the tiles.
#include "common.cuh"

#define TILE 32
#define ROWS 8

#define TRANSPOSE(T, S) \
extern "C" __global__ void transpose_##S(const T* a, T* out, u64 rows, u64 cols) { \
    __shared__ T tile[TILE][TILE + 1]; \
    u64 x = (u64)blockIdx.x * TILE + threadIdx.x; \
    u64 y = (u64)blockIdx.y * TILE + threadIdx.y; \
    for (int j = 0; j < TILE; j += ROWS) \
        if (x < cols && y + j < rows) tile[threadIdx.y + j][threadIdx.x] = a[(y + j) * cols + x]; \
    __syncthreads(); \
    x = (u64)blockIdx.y * TILE + threadIdx.x; \
    y = (u64)blockIdx.x * TILE + threadIdx.y; \
    for (int j = 0; j < TILE; j += ROWS) \
        if (x < rows && y + j < cols) out[(y + j) * rows + x] = tile[threadIdx.x][threadIdx.y + j]; }

TRANSPOSE(float, f32)
TRANSPOSE(double, f64)
TRANSPOSE(int, i32)
TRANSPOSE(i64, i64)
