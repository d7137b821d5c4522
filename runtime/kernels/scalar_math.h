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

float GeluScalar(float v) {
  const float a = std::fabs(v) * kSqrtHalf;
  const float t = 1.0f / (1.0f + kErfP * a);
  const float poly = ((((kErfA[4] * t + kErfA[3]) * t + kErfA[2]) * t + kErfA[1]) * t + kErfA[0]) * t;
  const float e = 1.0f - poly * std::exp(-a * a);
  return 0.5f * v * (1.0f + (v < 0.0f ? -e : e));
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
