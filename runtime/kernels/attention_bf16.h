// Attention with bf16 operands on CPUs with AVX-512 BF16 (namespace avx512_bf16): VDPBF16PS multiplies
// pairs of bf16 values and adds both products to an fp32 lane, twice the multiply-adds of an fp32 FMA
// per instruction. It computes what simd_kernels.inc's AttendHead<true> computes (operands rounded to
// bf16 to nearest even, products summed in fp32; its exp is another polynomial, ~15x more accurate),
// with its operands laid out in pairs along the summed axis: keys as (channel 2c, 2c + 1) pairs, values
// and weights as (key 2t, 2t + 1) pairs. Compiled for
// "avx512f,avx512bw,avx512bf16" by the target region below. A part of kernels.cc (see there).
#pragma once

#include "attention_args.h"
#include "vec_avx512.h"
#include "x86.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#ifdef EMBEDRT_X86
namespace {

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512bf16,avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512bf16,avx2,fma")
#endif
namespace avx512_bf16 {

using V = VecAvx512;
constexpr int64_t kPairs = 16;  // bf16 pairs per vector: 32 channels (or keys)

// 32 floats, two vectors, as one vector of 16 bf16 pairs (lo's values first).
inline __m512i Pairs(__m512 lo, __m512 hi) { return (__m512i)_mm512_cvtne2ps_pbh(hi, lo); }

inline __m512 Dot(__m512 acc, __m512i a, __m512i b) {
  return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b);
}

// kt[c2 * lp + j] = the pair (channels 2 c2, 2 c2 + 1) of k_j + bk; zero from l to lp.
inline void KeyPairs(const float* k, int64_t dm, const float* bk, int64_t l, int64_t lp, int64_t d, uint32_t* kt) {
  for (int64_t c0 = 0; c0 < d; c0 += 2 * kPairs) {
    const auto b0 = bk ? V::load(bk + c0) : V::zero(), b1 = bk ? V::load(bk + c0 + V::W) : V::zero();
    for (int64_t j0 = 0; j0 < lp; j0 += V::W) {
      __m512 block[V::W];
      for (int r = 0; r < V::W; ++r) {
        const float* row = k + (j0 + r) * dm + c0;
        block[r] = j0 + r < l ? _mm512_castsi512_ps(Pairs(V::add(V::load(row), b0), V::add(V::load(row + V::W), b1)))
                              : V::zero();
      }
      V::transpose(block);  // 16 keys x 16 pairs -> 16 pairs x 16 keys, pairs moving as 32-bit lanes
      for (int r = 0; r < V::W; ++r) V::store(reinterpret_cast<float*>(kt + (c0 / 2 + r) * lp + j0), block[r]);
    }
  }
}

// vt[t2 * d + c] = the pair (v_2t2[c], v_2t2+1[c]); zero past l.
inline void ValuePairs(const float* v, int64_t dm, int64_t l, int64_t lp, int64_t d, uint32_t* vt) {
  alignas(64) static constexpr uint16_t kLo[32] = {0, 32, 1, 33, 2, 34, 3, 35, 4, 36, 5, 37, 6, 38, 7, 39,
                                                   8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
  const __m512i lo = _mm512_load_si512(kLo), hi = _mm512_add_epi16(lo, _mm512_set1_epi16(16));
  for (int64_t t = 0; t < lp; t += 2)
    for (int64_t c0 = 0; c0 < d; c0 += 2 * kPairs) {
      const float* r0 = v + t * dm + c0;
      const __m512i a = t < l ? Pairs(V::load(r0), V::load(r0 + V::W)) : _mm512_setzero_si512();
      const __m512i b = t + 1 < l ? Pairs(V::load(r0 + dm), V::load(r0 + dm + V::W)) : _mm512_setzero_si512();
      _mm512_storeu_si512(vt + t / 2 * d + c0, _mm512_permutex2var_epi16(a, lo, b));
      _mm512_storeu_si512(vt + t / 2 * d + c0 + kPairs, _mm512_permutex2var_epi16(a, hi, b));
    }
}

// qp[i * d / 2 + c2] = the pair (channels 2 c2, 2 c2 + 1) of (q_i + bq) * scale, for all l rows at once:
// their loads (rows dm apart, seldom in cache) then overlap instead of stalling each block of rows.
inline void QueryPairs(const float* q, int64_t dm, const float* bq, float scale, int64_t l, int64_t d, uint32_t* qp) {
  const auto sv = V::set1(scale);
  for (int64_t i = 0; i < l; ++i)
    for (int64_t c = 0; c < d; c += 2 * kPairs) {
      auto lo = V::load(q + i * dm + c), hi = V::load(q + i * dm + c + V::W);
      if (bq) lo = V::add(lo, V::load(bq + c)), hi = V::add(hi, V::load(bq + c + V::W));
      _mm512_storeu_si512(qp + i * (d / 2) + c / 2, Pairs(V::mul(lo, sv), V::mul(hi, sv)));
    }
}

// Scores of kRows query rows (q[r]: d2 pairs each) against C vectors of keys from j on, stored as they
// are in s's rows, lp apart; Biased adds the biases and the mask. The accumulators stay in registers only so:
// with the biases here, an array of output row pointers, or a loop that may run zero times, GCC 12 keeps
// them on the stack (measured: a fifth of the kernel's time).
template <int C>
inline void ScoreTile(const uint32_t* const* q, int64_t d2, const uint32_t* kt, int64_t lp, int64_t j, float* s) {
  __m512 acc[kRows][C];
  for (auto& row : acc)
    for (auto& x : row) x = V::zero();
  int64_t c2 = 0;
  do {  // d2 >= 16
    __m512i key[C];
    for (int t = 0; t < C; ++t) key[t] = _mm512_loadu_si512(kt + c2 * lp + j + t * V::W);
    for (int r = 0; r < kRows; ++r) {
      const __m512i qc = _mm512_set1_epi32(static_cast<int>(q[r][c2]));
      for (int t = 0; t < C; ++t) acc[r][t] = Dot(acc[r][t], qc, key[t]);
    }
  } while (++c2 < d2);
  for (int r = 0; r < kRows; ++r)
    for (int t = 0; t < C; ++t) V::store(s + r * lp + j + t * V::W, acc[r][t]);
}

// 2^t for t >= -126 (rounded to nearest): 2^n p(r), r = t - n in [-1/2, 1/2], p of degree 4 fitted to
// 2^r for least maximum relative error (2.7e-6; degree 3's 7.5e-5 moved a few times more weights across a
// bf16 rounding boundary than the exp before it).
inline __m512 Exp2(__m512 t) {
  const auto n = V::round_even(t), r = V::sub(t, n);
  auto p = V::fmadd(V::set1(0.00957010128f), r, V::set1(0.0559178628f));
  p = V::fmadd(p, r, V::set1(0.240247443f));
  p = V::fmadd(p, r, V::set1(0.693121791f));
  p = V::fmadd(p, r, V::set1(0.999999285f));
  return V::scale2(p, n);
}

// Query row `row`'s scores s with its biases added and keys from l on at -inf; returns their max.
inline float Biased(const AttentionArgs& a, int64_t b, int64_t h, int64_t row, int64_t l, float* s) {
  const float* b1 = a.bias1.Row(b, h, row);
  const float* b2 = a.bias2.Row(b, h, row);
  const auto biased = [&](int64_t j) {
    auto x = V::load(s + j);
    if (b1) x = V::add(x, avx512::ScoreBiasAt(b1, a.bias1.per_key, j, l));
    if (b2) x = V::add(x, avx512::ScoreBiasAt(b2, a.bias2.per_key, j, l));
    return x;
  };
  auto m = V::set1(-std::numeric_limits<float>::infinity());
  const int64_t whole = l - l % V::W;
  for (int64_t j = 0; j < whole; j += V::W) {
    const auto x = biased(j);
    if (b1 || b2) V::store(s + j, x);
    m = V::max(m, x);
  }
  if (whole < l) {
    const auto x = V::keep_first(biased(whole), l - whole, -std::numeric_limits<float>::infinity());
    V::store(s + whole, x);
    m = V::max(m, x);
  }
  return V::reduce_max(m);
}

// Row weights as bf16 pairs in p: exp(s - max) over lp keys (~0 from l on), taken as 2^(s log2 e - max
// log2 e): one FMA instead of a subtraction and the reduction to steps of ln 2. Returns 1 / their sum
// (before rounding), which the context applies.
inline float Weights(const float* s, float max, int64_t lp, uint32_t* p) {
  constexpr float kLog2e = 1.44269504f;
  // Where max log2 e would overflow (a row whose every key is masked by float's lowest), (s - max) log2 e:
  // its weights are then all 1, as Softmax weighs equal scores.
  const bool huge = !(std::fabs(max) < 1e37f);
  const auto log2e = V::set1(kLog2e), mv = V::set1(max), shift = V::set1(huge ? 0.0f : -max * kLog2e);
  const auto floor = V::set1(-126.0f);
  const auto weight = [&](int64_t j) {
    const auto x = V::load(s + j);
    return Exp2(V::max(huge ? V::mul(V::sub(x, mv), log2e) : V::fmadd(x, log2e, shift), floor));
  };
  auto sum0 = V::zero(), sum1 = V::zero();
  int64_t j = 0;
  for (; j + 2 * V::W <= lp; j += 2 * V::W) {
    const auto e0 = weight(j), e1 = weight(j + V::W);
    sum0 = V::add(sum0, e0), sum1 = V::add(sum1, e1);
    _mm512_storeu_si512(p + j / 2, Pairs(e0, e1));
  }
  if (j < lp) {
    const auto e = weight(j);
    sum0 = V::add(sum0, e);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + j / 2), (__m256i)_mm512_cvtneps_pbh(e));
  }
  return 1.0f / V::reduce_add(V::add(sum0, sum1));
}

// y_r[c..c + C*W) = (p_r @ v) * inv_r + bv for kRows rows, p_r as lp / 2 pairs of weights.
template <int C>
inline void ContextTile(const uint32_t* const* p, const uint32_t* vt, int64_t l, int64_t d, int64_t c,
                        const float* inv, const float* bv, float* const* y) {
  __m512 acc[kRows][C];
  for (auto& row : acc)
    for (auto& x : row) x = V::zero();
  int64_t t2 = 0;
  do {  // l >= 1: a do loop, as in ScoreTile
    __m512i val[C];
    for (int u = 0; u < C; ++u) val[u] = _mm512_loadu_si512(vt + t2 * d + c + u * V::W);
    for (int r = 0; r < kRows; ++r) {
      const __m512i pr = _mm512_set1_epi32(static_cast<int>(p[r][t2]));
      for (int u = 0; u < C; ++u) acc[r][u] = Dot(acc[r][u], pr, val[u]);
    }
  } while (++t2 < (l + 1) / 2);
  for (int r = 0; r < kRows; ++r)
    for (int u = 0; u < C; ++u) {
      const auto o = V::mul(acc[r][u], V::set1(inv[r]));
      V::store(y[r] + c + u * V::W, bv ? V::add(o, V::load(bv + c + u * V::W)) : o);
    }
}

// avx512::AttendHead<true> with VDPBF16PS, for head sizes that are whole numbers of 32 channels (false
// otherwise: the caller then runs avx512::AttendHead<true>). `scratch` holds AttendScratch(d, lp) floats.
inline bool AttendHead(const AttentionArgs& a, int64_t b, int64_t h, float* scratch) {
  const int64_t l = a.Length(b), dm = a.dm, d = a.d, d2 = d / 2, lp = (l + V::W - 1) / V::W * V::W;
  if (d % (2 * kPairs)) return false;
  auto* kt = reinterpret_cast<uint32_t*>(scratch);  // d / 2 x lp pairs
  uint32_t* vt = kt + d2 * lp;                       // lp / 2 x d pairs
  uint32_t* qp = vt + lp / 2 * d;                    // l x d / 2 pairs
  float* scores = reinterpret_cast<float*>(qp + l * d2);  // kRows x lp
  auto* weights = reinterpret_cast<uint32_t*>(scores + kRows * lp);  // kRows x lp / 2 pairs
  const int64_t off = a.Start(b) * dm + h * d;
  const float* bv = a.bv ? a.bv + h * d : nullptr;
  KeyPairs(a.k + off, dm, a.bk ? a.bk + h * d : nullptr, l, lp, d, kt);
  ValuePairs(a.v + off, dm, l, lp, d, vt);
  QueryPairs(a.q + off, dm, a.bq ? a.bq + h * d : nullptr, a.scale, l, d, qp);
  for (int64_t i = 0; i < l; i += kRows) {
    const uint32_t* q[kRows];
    float* y[kRows];
    uint32_t* p[kRows];
    float max[kRows], inv[kRows];
    int64_t rows[kRows];
    for (int r = 0; r < kRows; ++r) {
      const int64_t row = rows[r] = std::min<int64_t>(i + r, l - 1);  // past the last row: recompute it
      q[r] = qp + row * d2;
      y[r] = a.y + off + row * dm;
      p[r] = weights + r * lp / 2;
    }
    avx512::Tiles(lp, [&](auto chunks, int64_t j) { ScoreTile<decltype(chunks)::value>(q, d2, kt, lp, j, scores); });
    // Every row's max before any row's weights: the rows' reductions then overlap.
    for (int r = 0; r < kRows; ++r) max[r] = Biased(a, b, h, rows[r], l, scores + r * lp);
    for (int r = 0; r < kRows; ++r) inv[r] = Weights(scores + r * lp, max[r], lp, p[r]);
    avx512::Tiles(d, [&](auto chunks, int64_t c) { ContextTile<decltype(chunks)::value>(p, vt, l, d, c, inv, bv, y); });
  }
  return true;
}

}  // namespace avx512_bf16
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

}  // namespace
#endif  // EMBEDRT_X86
