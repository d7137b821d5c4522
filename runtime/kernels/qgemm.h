// The int8 GEMM of the QMatMul* ops (qgemm_ops.h), for a few rows at a time:
//   u[r, c] = float(sum_k a[r, k] * w[k, c] - w_zero_sum[c]) * w_scale[c]
// with a u8 (rows, k), w s8 in the dot product's layout w4[(k4 * n + c) * 4 + i] = w[4 k4 + i, c] (the
// exporter packs it so), and w_zero_sum[c] = zero_point * sum_k w[k, c]: exactly what
// MatMulIntegerToFloat computes with a_scale 1, so the ops that replace it and the RowDequantize after it
// give the same bits. The sums are exact in int32 (k * 255 * 127 stays far below 2^31 for any model's width).
//
// Two builds: avx512_vnni (VPDPBUSD: four u8 x s8 products added to each int32 lane, never saturating;
// a tile of kRows rows x 64 columns in 24 registers) and the portable one, plain C++ on the same layout.
// A part of kernels.cc (see there).
#pragma once

#include "x86.h"

#include <cstdint>
#include <cstring>

namespace {

constexpr int64_t kQRows = 6;  // rows per call: a tile's accumulators fill the registers

namespace generic {

// u for `rows` rows (any count), columns in blocks of 64 int32 sums on the stack.
inline void QGemmRows(const uint8_t* a, int64_t rows, int64_t k, const int8_t* w4, int64_t n, const float* ws,
                      const int32_t* zero_sum, float* u) {
  constexpr int64_t kBlock = 64;
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* row = a + r * k;
    for (int64_t c0 = 0; c0 < n; c0 += kBlock) {
      const int64_t width = n - c0 < kBlock ? n - c0 : kBlock;
      int32_t acc[kBlock] = {};
      for (int64_t k4 = 0; k4 < k / 4; ++k4) {
        const uint8_t* x = row + 4 * k4;
        const int8_t* b = w4 + (k4 * n + c0) * 4;
        for (int64_t c = 0; c < width; ++c)
          acc[c] += x[0] * b[4 * c] + x[1] * b[4 * c + 1] + x[2] * b[4 * c + 2] + x[3] * b[4 * c + 3];
      }
      for (int64_t c = 0; c < width; ++c)
        u[r * n + c0 + c] = static_cast<float>(acc[c] - zero_sum[c0 + c]) * ws[c0 + c];
    }
  }
}

}  // namespace generic

#ifdef EMBEDRT_X86
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vnni,avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vnni,avx2,fma")
#endif
namespace avx512_vnni {

// acc + the four-wide u8 x s8 dot products of x and w, per int32 lane. In asm, not _mm512_dpbusd_epi32:
// GCC 12 then copies every accumulator through the stack on each step of Tile's loop (measured: half
// the rate; clang compiles either well).
inline __m512i Dot(__m512i acc, __m512i x, __m512i w) {
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(x), "v"(w));
  return acc;
}

// R rows x C vectors of 16 columns from column j: all of k summed in registers, then rescaled once.
template <int R, int C>
inline void Tile(const uint8_t* a, int64_t k, const int8_t* w4, int64_t n, int64_t j, const float* ws,
                 const int32_t* zero_sum, float* u) {
  __m512i acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < C; ++t) acc[r][t] = _mm512_setzero_si512();
  const int8_t* b = w4 + j * 4;
  int64_t k4 = 0;
  do {  // k >= 4 (QGemmRows): with a loop that may run zero times GCC 12 keeps acc on the stack
    __m512i w[C];
    for (int t = 0; t < C; ++t) w[t] = _mm512_loadu_si512(b + 64 * t);
    for (int r = 0; r < R; ++r) {
      int32_t x;  // the row's four u8 at k4, broadcast to every lane
      std::memcpy(&x, a + r * k + 4 * k4, sizeof x);
      const __m512i xv = _mm512_set1_epi32(x);
      for (int t = 0; t < C; ++t) acc[r][t] = Dot(acc[r][t], xv, w[t]);
    }
    b += n * 4;
  } while (++k4 < k / 4);
  for (int t = 0; t < C; ++t) {
    const __m512i z = _mm512_loadu_si512(zero_sum + j + 16 * t);
    const __m512 s = _mm512_loadu_ps(ws + j + 16 * t);
    for (int r = 0; r < R; ++r)
      _mm512_storeu_ps(u + r * n + j + 16 * t, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r][t], z)), s));
  }
}

template <int R>
inline void Rows(const uint8_t* a, int64_t k, const int8_t* w4, int64_t n, const float* ws, const int32_t* zero_sum,
                 float* u) {
  int64_t j = 0;
  for (; j + 64 <= n; j += 64) Tile<R, 4>(a, k, w4, n, j, ws, zero_sum, u);
  switch ((n - j) / 16) {
    case 3: Tile<R, 3>(a, k, w4, n, j, ws, zero_sum, u); break;
    case 2: Tile<R, 2>(a, k, w4, n, j, ws, zero_sum, u); break;
    case 1: Tile<R, 1>(a, k, w4, n, j, ws, zero_sum, u); break;
    default: break;
  }
}

// u for `rows` <= kQRows rows; n a multiple of 16, k of 4 (QMatMul checks both).
inline void QGemmRows(const uint8_t* a, int64_t rows, int64_t k, const int8_t* w4, int64_t n, const float* ws,
                      const int32_t* zero_sum, float* u) {
  static_assert(kQRows == 6, "one case per row count below");
  if (k < 4) return generic::QGemmRows(a, rows, k, w4, n, ws, zero_sum, u);  // no products: the sums are 0
  switch (rows) {
    case 6: Rows<6>(a, k, w4, n, ws, zero_sum, u); break;
    case 5: Rows<5>(a, k, w4, n, ws, zero_sum, u); break;
    case 4: Rows<4>(a, k, w4, n, ws, zero_sum, u); break;
    case 3: Rows<3>(a, k, w4, n, ws, zero_sum, u); break;
    case 2: Rows<2>(a, k, w4, n, ws, zero_sum, u); break;
    case 1: Rows<1>(a, k, w4, n, ws, zero_sum, u); break;
    default: break;
  }
}

}  // namespace avx512_vnni
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif  // EMBEDRT_X86

}  // namespace
