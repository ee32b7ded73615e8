// Binary ops with scalar broadcast (an operand flagged scalar is read at index 0),
// unary ops, axpy, comparisons (to 0/1 bytes) and where.
#include "common.cuh"

#define BINARY(OP, T, S, EXPR) \
extern "C" __global__ void OP##_##S(const T* a, const T* b, T* out, u64 n, int a_scalar, int b_scalar) { \
    GRID_STRIDE(i, n) { T x = a[a_scalar ? 0 : i]; T y = b[b_scalar ? 0 : i]; out[i] = (EXPR); } }

#define BINARY_ALL(T, S) \
    BINARY(add, T, S, x + y) \
    BINARY(sub, T, S, x - y) \
    BINARY(mul, T, S, x * y) \
    BINARY(max, T, S, x > y ? x : y) \
    BINARY(min, T, S, x < y ? x : y)

BINARY_ALL(float, f32)
BINARY_ALL(double, f64)
BINARY_ALL(int, i32)
BINARY_ALL(i64, i64)
BINARY(div, float, f32, x / y)
BINARY(div, double, f64, x / y)
BINARY(pow, float, f32, powf(x, y))
BINARY(pow, double, f64, pow(x, y))

#define UNARY(OP, T, S, EXPR) \
extern "C" __global__ void OP##_##S(const T* a, T* out, u64 n) { GRID_STRIDE(i, n) { T x = a[i]; out[i] = (EXPR); } }

UNARY(neg, float, f32, -x)
UNARY(neg, double, f64, -x)
UNARY(neg, int, i32, -x)
UNARY(neg, i64, i64, -x)
UNARY(abs, float, f32, fabsf(x))
UNARY(abs, double, f64, fabs(x))
UNARY(abs, int, i32, x < 0 ? -x : x)
UNARY(abs, i64, i64, x < 0 ? -x : x)
UNARY(exp, float, f32, expf(x))
UNARY(exp, double, f64, exp(x))
UNARY(log, float, f32, logf(x))
UNARY(log, double, f64, log(x))
UNARY(sqrt, float, f32, sqrtf(x))
UNARY(sqrt, double, f64, sqrt(x))
UNARY(sin, float, f32, sinf(x))
UNARY(sin, double, f64, sin(x))
UNARY(cos, float, f32, cosf(x))
UNARY(cos, double, f64, cos(x))
UNARY(tanh, float, f32, tanhf(x))
UNARY(tanh, double, f64, tanh(x))

// y = alpha * x + y
#define AXPY(T, S) \
extern "C" __global__ void axpy_##S(T alpha, const T* x, T* y, u64 n) { GRID_STRIDE(i, n) y[i] = alpha * x[i] + y[i]; }
AXPY(float, f32)
AXPY(double, f64)

// Comparisons write 1 or 0 bytes; where picks a where the mask is non-zero, else b.
#define COMPARE(OP, T, S, EXPR) \
extern "C" __global__ void OP##_##S(const T* a, const T* b, unsigned char* out, u64 n, int a_scalar, int b_scalar) { \
    GRID_STRIDE(i, n) { T x = a[a_scalar ? 0 : i]; T y = b[b_scalar ? 0 : i]; out[i] = (EXPR) ? 1 : 0; } }
#define COMPARE_ALL(T, S) COMPARE(lt, T, S, x < y) COMPARE(gt, T, S, x > y) COMPARE(eq, T, S, x == y)
COMPARE_ALL(float, f32)
COMPARE_ALL(double, f64)
COMPARE_ALL(int, i32)
COMPARE_ALL(i64, i64)

#define WHERE(T, S) \
extern "C" __global__ void where_##S(const unsigned char* mask, const T* a, const T* b, T* out, u64 n) { \
    GRID_STRIDE(i, n) out[i] = mask[i] ? a[i] : b[i]; }
WHERE(float, f32)
WHERE(double, f64)
WHERE(int, i32)
WHERE(i64, i64)
