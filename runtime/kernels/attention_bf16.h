// Attention with bf16 operands on CPUs with AVX-512 BF16 (namespace avx512_bf16): VDPBF16PS multiplies
// pairs of bf16 values and adds both products to an fp32 lane, twice the multiply-adds of an fp32 FMA
// per instruction. It computes what simd_kernels.inc's AttendHead<true> computes (operands rounded to
// bf16 to nearest even, products summed in fp32), with its operands laid out in pairs along the summed
// axis: keys as (channel 2c, 2c + 1) pairs, values and weights as (key 2t, 2t + 1) pairs. Compiled for
// "avx512f,avx512bw,avx512bf16" by the target region below. A part of kernels.cc (see there).
#pragma once

#include "attention_args.h"
#include "vec_avx512.h"
#include "x86.h"

#include <algorithm>
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

// Scores of kRows query rows (qp: their d / 2 pairs each) against C vectors of keys from j on, the
// score biases added and keys from l on at -inf; m[r] keeps each row's running max.
template <int C>
inline void ScoreTile(const AttentionArgs& a, int64_t b, int64_t h, const int64_t* rows, const uint32_t* qp,
                      int64_t d2, const uint32_t* kt, int64_t l, int64_t lp, int64_t j, float* const* s, __m512* m) {
  __m512 acc[kRows][C];
  for (auto& row : acc)
    for (auto& x : row) x = V::zero();
  for (int64_t c2 = 0; c2 < d2; ++c2) {
    __m512i key[C];
    for (int t = 0; t < C; ++t) key[t] = _mm512_loadu_si512(kt + c2 * lp + j + t * V::W);
    for (int r = 0; r < kRows; ++r) {
      const __m512i qc = _mm512_set1_epi32(static_cast<int>(qp[r * d2 + c2]));
      for (int t = 0; t < C; ++t) acc[r][t] = Dot(acc[r][t], qc, key[t]);
    }
  }
  for (int r = 0; r < kRows; ++r) {
    const float* b1 = a.bias1.Row(b, h, rows[r]);
    const float* b2 = a.bias2.Row(b, h, rows[r]);
    for (int t = 0; t < C; ++t) {
      const int64_t at = j + t * V::W;
      auto x = acc[r][t];
      if (b1) x = V::add(x, avx512::ScoreBiasAt(b1, a.bias1.per_key, at, l));
      if (b2) x = V::add(x, avx512::ScoreBiasAt(b2, a.bias2.per_key, at, l));
      if (at + V::W > l) x = V::keep_first(x, std::max<int64_t>(l - at, 0), -std::numeric_limits<float>::infinity());
      V::store(s[r] + at, x);
      m[r] = V::max(m[r], x);
    }
  }
}

// Row r's weights as bf16 pairs: exp(s - max) (avx512::ExpScores<true>'s exp), ~0 past l. Returns 1 / their sum.
inline float Weights(const float* s, __m512 m, int64_t lp, uint32_t* p) {
  const auto mv = V::set1(V::reduce_max(m));
  auto sum = V::zero();
  for (int64_t j = 0; j < lp; j += V::W) {
    const auto e = avx512::ExpNonPositive<4>(V::sub(V::load(s + j), mv));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + j / 2), (__m256i)_mm512_cvtneps_pbh(e));
    sum = V::add(sum, e);
  }
  return 1.0f / V::reduce_add(sum);
}

// y_r[c..c + C*W) = (p_r @ v) * inv_r + bv for kRows rows, p_r as lp / 2 pairs of weights.
template <int C>
inline void ContextTile(const uint32_t* const* p, const uint32_t* vt, int64_t l, int64_t d, int64_t c,
                        const float* inv, const float* bv, float* const* y) {
  __m512 acc[kRows][C];
  for (auto& row : acc)
    for (auto& x : row) x = V::zero();
  for (int64_t t2 = 0; t2 < (l + 1) / 2; ++t2) {
    __m512i val[C];
    for (int u = 0; u < C; ++u) val[u] = _mm512_loadu_si512(vt + t2 * d + c + u * V::W);
    for (int r = 0; r < kRows; ++r) {
      const __m512i pr = _mm512_set1_epi32(static_cast<int>(p[r][t2]));
      for (int u = 0; u < C; ++u) acc[r][u] = Dot(acc[r][u], pr, val[u]);
    }
  }
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
  float* scores = reinterpret_cast<float*>(vt + lp / 2 * d);  // kRows x lp
  auto* weights = reinterpret_cast<uint32_t*>(scores + kRows * lp);  // kRows x lp / 2 pairs
  uint32_t* qp = weights + kRows * lp / 2;           // kRows x d / 2 pairs
  const int64_t off = a.Start(b) * dm + h * d;
  const float* bq = a.bq ? a.bq + h * d : nullptr;
  const float* bv = a.bv ? a.bv + h * d : nullptr;
  KeyPairs(a.k + off, dm, a.bk ? a.bk + h * d : nullptr, l, lp, d, kt);
  ValuePairs(a.v + off, dm, l, lp, d, vt);
  const auto scale = V::set1(a.scale);
  for (int64_t i = 0; i < l; i += kRows) {
    float* s[kRows];
    float* y[kRows];
    const uint32_t* p[kRows];
    float inv[kRows];
    int64_t rows[kRows];
    __m512 m[kRows];
    for (int r = 0; r < kRows; ++r) {
      const int64_t row = rows[r] = std::min<int64_t>(i + r, l - 1);  // past the last row: recompute it
      const float* q = a.q + off + row * dm;
      for (int64_t c = 0; c < d; c += 2 * kPairs) {
        auto lo = V::load(q + c), hi = V::load(q + c + V::W);
        if (bq) lo = V::add(lo, V::load(bq + c)), hi = V::add(hi, V::load(bq + c + V::W));
        _mm512_storeu_si512(qp + r * d2 + c / 2, Pairs(V::mul(lo, scale), V::mul(hi, scale)));
      }
      s[r] = scores + r * lp;
      y[r] = a.y + off + row * dm;
      p[r] = weights + r * lp / 2;
      m[r] = V::set1(-std::numeric_limits<float>::infinity());
    }
    avx512::Tiles(lp, [&](auto chunks, int64_t j) {
      ScoreTile<decltype(chunks)::value>(a, b, h, rows, qp, d2, kt, l, lp, j, s, m);
    });
    for (int r = 0; r < kRows; ++r) inv[r] = Weights(s[r], m[r], lp, weights + r * lp / 2);
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
