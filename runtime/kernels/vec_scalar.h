// The "generic" instruction set: VecScalar, one float per vector in plain C++, and simd_kernels.inc
// built on it (namespace generic). Every CPU runs it; the x86 ones run it where a head size is not a
// whole number of vectors. A part of kernels.cc (see there).
#pragma once

#include "attention_args.h"
#include "scalar_math.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

namespace {

// -- vector types: the operations simd_kernels.inc needs (VecAvx2 and VecAvx512 have the same) -----
// kTile: the most vectors of keys (or head channels) an attention tile spans, kRows accumulators each.
struct VecScalar {
  using R = float;
  static constexpr int W = 1;
  static constexpr int kTile = 1;
  static R load(const float* p) { return *p; }
  static void store(float* p, R v) { *p = v; }
  static R set1(float v) { return v; }
  static R zero() { return 0.0f; }
  static R add(R a, R b) { return a + b; }
  static R sub(R a, R b) { return a - b; }
  static R mul(R a, R b) { return a * b; }
  static R div(R a, R b) { return a / b; }
  static R max(R a, R b) { return std::max(a, b); }
  static R min(R a, R b) { return std::min(a, b); }
  static R fmadd(R a, R b, R c) { return std::fma(a, b, c); }
  static R fnmadd(R a, R b, R c) { return std::fma(-a, b, c); }
  static R abs(R a) { return std::fabs(a); }
  static R sign_of(R magnitude, R sign) { return std::copysign(magnitude, sign); }
  static R round_even(R a) { return std::nearbyint(a); }
  static R reciprocal(R a) { return 1.0f / a; }
  static R scale2(R p, R n) { return std::ldexp(p, static_cast<int>(n)); }
  static float reduce_max(R a) { return a; }
  static float reduce_min(R a) { return a; }
  static float reduce_add(R a) { return a; }
  static void store_u8(uint8_t* q, R v) { *q = static_cast<uint8_t>(std::clamp(v, 0.0f, 255.0f)); }
  static R load_first(const float* p, int64_t) { return *p; }  // W = 1: never a partial vector
  static R keep_first(R v, int64_t, float) { return v; }
  static void transpose(R*) {}
  static R to_bf16(R a) {  // round half to even at bit 16: the bf16 nearest a, as a float
    uint32_t u;
    std::memcpy(&u, &a, sizeof u);
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    std::memcpy(&a, &u, sizeof u);
    return a;
  }
};

namespace generic {
using V = VecScalar;
#include "simd_kernels.inc"
}  // namespace generic

}  // namespace
