// The "avx512" instruction set (AVX-512F, x86-64 only): VecAvx512, sixteen floats per vector, and
// simd_kernels.inc built on it (namespace avx512), every function compiled for "avx512f,avx2,fma" by
// the target region below whatever the compiler flags say. A part of kernels.cc (see there).
#pragma once

#include "attention_args.h"
#include "scalar_math.h"
#include "x86.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#ifdef EMBEDRT_X86
namespace {

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
#endif
struct VecAvx512 {
  using R = __m512;
  static constexpr int W = 16;
  static constexpr int kTile = 3;  // 32 registers: 24 accumulators, 3 keys and a broadcast
  static R load(const float* p) { return _mm512_loadu_ps(p); }
  static __mmask16 first(int64_t n) { return static_cast<__mmask16>((1u << n) - 1); }  // n < 16
  static R load_first(const float* p, int64_t n) { return _mm512_maskz_loadu_ps(first(n), p); }  // zeros past n
  static R keep_first(R v, int64_t n, float fill) { return _mm512_mask_blend_ps(first(n), _mm512_set1_ps(fill), v); }
  static void store(float* p, R v) { _mm512_storeu_ps(p, v); }
  static R set1(float v) { return _mm512_set1_ps(v); }
  static R zero() { return _mm512_setzero_ps(); }
  static R add(R a, R b) { return _mm512_add_ps(a, b); }
  static R sub(R a, R b) { return _mm512_sub_ps(a, b); }
  static R mul(R a, R b) { return _mm512_mul_ps(a, b); }
  static R div(R a, R b) { return _mm512_div_ps(a, b); }
  static R max(R a, R b) { return _mm512_max_ps(a, b); }
  static R min(R a, R b) { return _mm512_min_ps(a, b); }
  static R fmadd(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
  static R fnmadd(R a, R b, R c) { return _mm512_fnmadd_ps(a, b, c); }
  static R abs(R a) {
    return _mm512_castsi512_ps(_mm512_and_epi32(_mm512_castps_si512(a), _mm512_set1_epi32(0x7fffffff)));
  }
  static R sign_of(R magnitude, R sign) {
    const __m512i s = _mm512_and_epi32(_mm512_castps_si512(sign), _mm512_set1_epi32(static_cast<int>(0x80000000u)));
    return _mm512_castsi512_ps(_mm512_or_epi32(_mm512_castps_si512(magnitude), s));
  }
  static R round_even(R a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static R reciprocal(R a) {  // 14-bit estimate, one Newton step
    const R r = _mm512_rcp14_ps(a);
    return _mm512_mul_ps(r, _mm512_fnmadd_ps(a, r, _mm512_set1_ps(2.0f)));
  }
  static R scale2(R p, R n) { return _mm512_scalef_ps(p, n); }
  static float reduce_add(R v) { return _mm512_reduce_add_ps(v); }
  static float reduce_max(R v) { return _mm512_reduce_max_ps(v); }
  static float reduce_min(R v) { return _mm512_reduce_min_ps(v); }
  static void store_u8(uint8_t* q, R v) {  // clamp at 0, then unsigned saturation at 255
    const __m512i i32 = _mm512_max_epi32(_mm512_cvtps_epi32(v), _mm512_setzero_si512());
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q), _mm512_cvtusepi32_epi8(i32));
  }
  static R lo(R a, R b) { return _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a), _mm512_castps_pd(b))); }
  static R hi(R a, R b) { return _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a), _mm512_castps_pd(b))); }
  static R to_bf16(R a) {  // as VecScalar::to_bf16
    const __m512i u = _mm512_castps_si512(a);
    const __m512i odd = _mm512_and_epi32(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    const __m512i r = _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), odd);
    return _mm512_castsi512_ps(_mm512_and_epi32(r, _mm512_set1_epi32(static_cast<int>(0xffff0000u))));
  }
  static void transpose(R* r) {  // 16 x 16, in registers: pairs, then quads, then 128-bit lanes twice
    R t[16];
    for (int i = 0; i < 16; i += 2) {
      t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
      t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
      r[i] = lo(t[i], t[i + 2]);
      r[i + 1] = hi(t[i], t[i + 2]);
      r[i + 2] = lo(t[i + 1], t[i + 3]);
      r[i + 3] = hi(t[i + 1], t[i + 3]);
    }
    for (int i = 0; i < 4; ++i) {
      t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
      t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
      t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
      t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
    }
    for (int i = 0; i < 8; ++i) {
      r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
      r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
    }
  }
};
namespace avx512 {
using V = VecAvx512;
#include "simd_kernels.inc"
}  // namespace avx512
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

}  // namespace
#endif  // EMBEDRT_X86
