// The scalar steps: GELU, quantize and dequantize one value. The vector loops (simd_kernels.inc) finish
// their rows with these and match their arithmetic. A part of kernels.cc (see there).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace {

constexpr float kErfP = 0.3275911f;
constexpr float kErfA[5] = {0.254829592f, -0.284496736f, 1.421413741f, -1.453152027f, 1.061405429f};
constexpr float kSqrtHalf = 0.70710678118654752f;

// What follows a dequantized row: nothing, GELU with erf within 1.5e-7 (Abramowitz & Stegun 7.1.26), or
// GELU with erf within ~1e-6 in float (A&S 7.1.28, no exp: a third fewer vector operations) for a row that
// is quantized to 8 bits next, whose steps are thousands of times wider.
enum class Activation { kNone, kGelu, kGeluBeforeQuantize };

constexpr float kErfB[6] = {0.0705230784f, 0.0422820123f, 0.0092705272f, 0.0001520143f, 0.0002765672f, 0.0000430638f};
constexpr float kErfBLimit = 6.0f;  // erf is 1 in float from here on; the 16th power stays finite below it

float GeluScalar(float v) {
  const float a = std::fabs(v) * kSqrtHalf;
  const float t = 1.0f / (1.0f + kErfP * a);
  const float poly = ((((kErfA[4] * t + kErfA[3]) * t + kErfA[2]) * t + kErfA[1]) * t + kErfA[0]) * t;
  const float e = 1.0f - poly * std::exp(-a * a);
  return 0.5f * v * (1.0f + (v < 0.0f ? -e : e));
}

// erf(a) = 1 - 1 / (1 + b1 a + ... + b6 a^6)^16.
float GeluBeforeQuantizeScalar(float v) {
  const float a = std::min(std::fabs(v) * kSqrtHalf, kErfBLimit);
  float p = kErfB[5];
  for (int i = 4; i >= 0; --i) p = p * a + kErfB[i];
  p = p * a + 1.0f;
  for (int i = 0; i < 4; ++i) p *= p;
  const float e = 1.0f - 1.0f / p;
  return 0.5f * v * (1.0f + (v < 0.0f ? -e : e));
}

float ActivateScalar(Activation act, float v) {
  if (act == Activation::kGelu) return GeluScalar(v);
  return act == Activation::kGeluBeforeQuantize ? GeluBeforeQuantizeScalar(v) : v;
}

// ONNX QuantizeLinear's arithmetic: saturate(round_half_even(x / s) + zp).
uint8_t QuantizeScalar(float x, float s, float zp) {
  return static_cast<uint8_t>(std::clamp(std::nearbyint(x / s) + zp, 0.0f, 255.0f));
}

float DequantizeScalar(const float* u, float s, const float* f, int64_t nf, const float* w, int64_t n, int64_t j) {
  float acc = u[j] * s;
  for (int64_t c = 0; c < nf; ++c) acc = std::fma(f[c], w[c * n + j], acc);
  return acc;
}

}  // namespace
