// embedrt's ONNX Runtime kernels (op domain "ai.embedrt") for the int8_rowwise_fused graph.
//
// int8_rowwise (embedrt_export/rowwise.py) quantizes each token's row on its own; in standard ONNX ops
// that takes a dozen small kernels per MatMul input and three passes over every MatMul output, each
// a separate trip through memory. These kernels do each step in one pass over a row while it is in
// cache. The int8 GEMM itself stays ONNX Runtime's (com.microsoft.MatMulIntegerToFloat). The
// exporter's rewrite is embedrt_export/kernels.py; the runtime registers this library through
// embedrt/kernels.py.
//
//   RowQuantize(x, inv_smooth, float_channels, zero_point) -> q, scale, x_float_1
//   RowDequantize(y_int, scale, x_float_1, w_float, like) -> y
//   RowDequantizeAddLayerNorm(y_int, scale, x_float_1, w_float, residual, gamma, beta, epsilon) -> y
//   RowDequantizeGeluQuantize(y_int, scale, x_float_1, w_float, inv_smooth, float_channels, zero_point)
//       -> q, scale, x_float_1
//
// Every row is computed from that row alone, so an embedding never depends on its batch.
#define ORT_API_MANUAL_INIT
#include "onnxruntime_cxx_api.h"
#include "onnxruntime_lite_custom_op.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define EMBEDRT_X86 1
#define EMBEDRT_AVX2 __attribute__((target("avx2,fma")))
#endif

using Ort::Custom::Tensor;

namespace {

// The oldest ONNX Runtime C API this library asks for (onnxruntime 1.20, pyproject's floor).
constexpr uint32_t kOrtApiVersion = 20;

Ort::Status Invalid(const std::string& op, const std::string& what) {
  return Ort::Status(("ai.embedrt." + op + ": " + what).c_str(), ORT_INVALID_ARGUMENT);
}

// GELU (erf form) with Abramowitz & Stegun 7.1.26 for erf: |error| <= 1.5e-7.
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

// y[j] = u[j] * s + sum_c f[c] * w[c, j] for j >= from: the int8 product rescaled by its row's
// scale, plus the fp32 channels (the last of them a column of ones against the bias row).
void DequantizeRowScalar(const float* u, float s, const float* f, int64_t nf, const float* w, int64_t n, int64_t from,
                         float* y) {
  for (int64_t j = from; j < n; ++j) {
    float acc = u[j] * s;
    for (int64_t c = 0; c < nf; ++c) acc = std::fma(f[c], w[c * n + j], acc);
    y[j] = acc;
  }
}

// x = row / smooth (fp32 channels zeroed); scale = max(hi / (255 - zp), lo / -zp, 1e-12);
// q = saturate(round_half_even(x / scale) + zp): the arithmetic of ONNX QuantizeLinear.
float QuantizeRowScalar(const float* row, const float* inv, int64_t k, float zp, float* x, uint8_t* q) {
  float hi = row[0] * inv[0], lo = hi;
  for (int64_t j = 0; j < k; ++j) {
    x[j] = row[j] * inv[j];
    hi = std::max(hi, x[j]);
    lo = std::min(lo, x[j]);
  }
  const float s = std::max(std::max(hi / (255.0f - zp), lo / -zp), 1e-12f);
  for (int64_t j = 0; j < k; ++j) q[j] = static_cast<uint8_t>(std::clamp(std::nearbyint(x[j] / s) + zp, 0.0f, 255.0f));
  return s;
}

void AddLayerNormRowScalar(float* y, const float* res, int64_t n, const float* g, const float* b, float eps) {
  float sum = 0.0f;
  for (int64_t j = 0; j < n; ++j) sum += (y[j] += res[j]);
  const float mean = sum / static_cast<float>(n);
  float sq = 0.0f;
  for (int64_t j = 0; j < n; ++j) sq += (y[j] - mean) * (y[j] - mean);
  const float inv_std = 1.0f / std::sqrt(sq / static_cast<float>(n) + eps);
  for (int64_t j = 0; j < n; ++j) y[j] = (y[j] - mean) * inv_std * g[j] + b[j];
}

#ifdef EMBEDRT_X86
EMBEDRT_AVX2 float Sum256(__m256 v) {
  const __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 q = _mm_add_ps(h, _mm_movehl_ps(h, h));
  return _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q)));
}

// exp(x) for x <= 0, relative error ~1e-7: 2^n * p(r), r = x - n ln2 (two-part ln2), p of degree 7.
EMBEDRT_AVX2 __m256 ExpNonPositive(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145752f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.42860677e-6f), r);
  __m256 p = _mm256_set1_ps(1.0f / 5040);
  for (const float c : {1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f})
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

EMBEDRT_AVX2 __m256 Gelu256(__m256 v) {
  const __m256 sign = _mm256_set1_ps(-0.0f), one = _mm256_set1_ps(1.0f);
  const __m256 a = _mm256_mul_ps(_mm256_andnot_ps(sign, v), _mm256_set1_ps(kSqrtHalf));
  const __m256 den = _mm256_fmadd_ps(_mm256_set1_ps(kErfP), a, one);
  __m256 t = _mm256_rcp_ps(den);                                      // ~12 bits
  t = _mm256_mul_ps(t, _mm256_fnmadd_ps(den, t, _mm256_set1_ps(2.0f)));  // one Newton step: ~23 bits
  __m256 poly = _mm256_set1_ps(kErfA[4]);
  for (int i = 3; i >= 0; --i) poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(kErfA[i]));
  poly = _mm256_mul_ps(poly, t);
  const __m256 e = _mm256_fnmadd_ps(poly, ExpNonPositive(_mm256_mul_ps(_mm256_sub_ps(_mm256_setzero_ps(), a), a)), one);
  const __m256 erf = _mm256_or_ps(e, _mm256_and_ps(v, sign));
  return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), v), _mm256_add_ps(one, erf));
}

EMBEDRT_AVX2 void DequantizeRowAvx2(const float* u, float s, const float* f, int64_t nf, const float* w, int64_t n,
                                    bool gelu, float* y) {
  const __m256 sv = _mm256_set1_ps(s);
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {  // the row's products stay in registers until stored once
    __m256 a0 = _mm256_mul_ps(_mm256_loadu_ps(u + j), sv);
    __m256 a1 = _mm256_mul_ps(_mm256_loadu_ps(u + j + 8), sv);
    for (int64_t c = 0; c < nf; ++c) {
      const __m256 fc = _mm256_set1_ps(f[c]);
      a0 = _mm256_fmadd_ps(fc, _mm256_loadu_ps(w + c * n + j), a0);
      a1 = _mm256_fmadd_ps(fc, _mm256_loadu_ps(w + c * n + j + 8), a1);
    }
    if (gelu) {
      a0 = Gelu256(a0);
      a1 = Gelu256(a1);
    }
    _mm256_storeu_ps(y + j, a0);
    _mm256_storeu_ps(y + j + 8, a1);
  }
  DequantizeRowScalar(u, s, f, nf, w, n, j, y);
  if (gelu)
    for (; j < n; ++j) y[j] = GeluScalar(y[j]);
}

EMBEDRT_AVX2 float QuantizeRowAvx2(const float* row, const float* inv, int64_t k, float zp, float* x, uint8_t* q) {
  __m256 hi = _mm256_set1_ps(row[0] * inv[0]), lo = hi;
  for (int64_t j = 0; j < k; j += 8) {
    const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(row + j), _mm256_loadu_ps(inv + j));
    _mm256_storeu_ps(x + j, v);
    hi = _mm256_max_ps(hi, v);
    lo = _mm256_min_ps(lo, v);
  }
  alignas(32) float h[8], l[8];
  _mm256_store_ps(h, hi);
  _mm256_store_ps(l, lo);
  const float s = std::max(std::max(*std::max_element(h, h + 8) / (255.0f - zp), *std::min_element(l, l + 8) / -zp),
                           1e-12f);
  const __m256 sv = _mm256_set1_ps(s), zv = _mm256_set1_ps(zp);
  for (int64_t j = 0; j < k; j += 8) {
    const __m256 r =
        _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(x + j), sv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256i i32 = _mm256_cvtps_epi32(_mm256_add_ps(r, zv));
    // Saturating packs (i32 -> i16 -> u8) clamp to 0..255, as QuantizeLinear does.
    const __m128i i16 = _mm_packs_epi32(_mm256_castsi256_si128(i32), _mm256_extracti128_si256(i32, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(q + j), _mm_packus_epi16(i16, i16));
  }
  return s;
}

EMBEDRT_AVX2 void AddLayerNormRowAvx2(float* y, const float* res, int64_t n, const float* g, const float* b, float eps) {
  __m256 sum = _mm256_setzero_ps();
  for (int64_t j = 0; j < n; j += 8) {
    const __m256 v = _mm256_add_ps(_mm256_loadu_ps(y + j), _mm256_loadu_ps(res + j));
    _mm256_storeu_ps(y + j, v);
    sum = _mm256_add_ps(sum, v);
  }
  const __m256 mean = _mm256_set1_ps(Sum256(sum) / static_cast<float>(n));
  __m256 sq = _mm256_setzero_ps();
  for (int64_t j = 0; j < n; j += 8) {
    const __m256 c = _mm256_sub_ps(_mm256_loadu_ps(y + j), mean);
    sq = _mm256_fmadd_ps(c, c, sq);
  }
  const __m256 inv_std = _mm256_set1_ps(1.0f / std::sqrt(Sum256(sq) / static_cast<float>(n) + eps));
  for (int64_t j = 0; j < n; j += 8) {
    const __m256 c = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(y + j), mean), inv_std);
    _mm256_storeu_ps(y + j, _mm256_fmadd_ps(c, _mm256_loadu_ps(g + j), _mm256_loadu_ps(b + j)));
  }
}

const bool kAvx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif

// The row kernels: AVX2 + FMA where the CPU has them (and a row is a whole number of vectors), else
// portable loops (the compiler vectorizes them for the target, e.g. NEON).
void DequantizeRow(const float* u, float s, const float* f, int64_t nf, const float* w, int64_t n, bool gelu,
                   float* y) {
#ifdef EMBEDRT_X86
  if (kAvx2) return DequantizeRowAvx2(u, s, f, nf, w, n, gelu, y);
#endif
  DequantizeRowScalar(u, s, f, nf, w, n, 0, y);
  if (gelu)
    for (int64_t j = 0; j < n; ++j) y[j] = GeluScalar(y[j]);
}

float QuantizeRow(const float* row, const float* inv, int64_t k, float zp, float* x, uint8_t* q) {
#ifdef EMBEDRT_X86
  if (kAvx2 && k % 8 == 0) return QuantizeRowAvx2(row, inv, k, zp, x, q);
#endif
  return QuantizeRowScalar(row, inv, k, zp, x, q);
}

void AddLayerNormRow(float* y, const float* res, int64_t n, const float* g, const float* b, float eps) {
#ifdef EMBEDRT_X86
  if (kAvx2 && n % 8 == 0) return AddLayerNormRowAvx2(y, res, n, g, b, eps);
#endif
  AddLayerNormRowScalar(y, res, n, g, b, eps);
}

int64_t LeadingRows(const std::vector<int64_t>& shape) {
  int64_t m = 1;
  for (size_t i = 0; i + 1 < shape.size(); ++i) m *= shape[i];
  return m;
}

// One group's quantization constants and the buffers it writes: q (m, k) u8, scale (m, 1) and
// x_float_1 (m, n_float + 1) = [the fp32 channels of the row, 1].
class Quantizer {
 public:
  Quantizer(const Tensor<float>& inv_smooth, const Tensor<int64_t>& float_channels, const Tensor<uint8_t>& zero_point)
      : inv_(inv_smooth.Data()), channels_(float_channels.Data()), n_float_(float_channels.NumberOfElement()),
        k_(inv_smooth.NumberOfElement()), zero_point_(static_cast<float>(*zero_point.Data())),
        scratch_(static_cast<size_t>(k_)) {}

  Ort::Status Check(const std::string& op, int64_t k) const {
    if (k != k_) return Invalid(op, "row width " + std::to_string(k) + " != smoothing size " + std::to_string(k_));
    for (int64_t c = 0; c < n_float_; ++c)
      if (channels_[c] < 0 || channels_[c] >= k_) return Invalid(op, "fp32 channel index out of range");
    return Ort::Status(nullptr);
  }

  void Allocate(int64_t m, Tensor<uint8_t>& q, Tensor<float>& scale, Tensor<float>& floats) {
    q_ = q.Allocate({m, k_});
    scale_ = scale.Allocate({m, 1});
    floats_ = floats.Allocate({m, n_float_ + 1});
  }

  void Row(int64_t r, const float* row) {
    scale_[r] = QuantizeRow(row, inv_, k_, zero_point_, scratch_.data(), q_ + r * k_);
    float* f = floats_ + r * (n_float_ + 1);
    for (int64_t c = 0; c < n_float_; ++c) f[c] = row[channels_[c]];
    f[n_float_] = 1.0f;
  }

 private:
  const float* inv_;
  const int64_t* channels_;
  int64_t n_float_, k_;
  float zero_point_;
  std::vector<float> scratch_;
  uint8_t* q_ = nullptr;
  float* scale_ = nullptr;
  float* floats_ = nullptr;
};

// The inputs every dequantizing op shares, checked against each other.
struct Dequantized {
  int64_t m = 0, n = 0, nf = 0;
  const float *u = nullptr, *s = nullptr, *f = nullptr, *w = nullptr;

  Ort::Status Read(const std::string& op, const Tensor<float>& y_int, const Tensor<float>& scale,
                   const Tensor<float>& floats, const Tensor<float>& w_float) {
    const auto ys = y_int.Shape(), fs = floats.Shape(), ws = w_float.Shape();
    if (ys.size() != 2 || fs.size() != 2 || ws.size() != 2) return Invalid(op, "expects 2-D rows and weights");
    m = ys[0], n = ys[1], nf = fs[1];
    if (scale.NumberOfElement() != m || fs[0] != m || ws[0] != nf || ws[1] != n)
      return Invalid(op, "row counts or widths of its inputs disagree");
    u = y_int.Data(), s = scale.Data(), f = floats.Data(), w = w_float.Data();
    return Ort::Status(nullptr);
  }
};

Ort::Status RowQuantize(const Tensor<float>& x, const Tensor<float>& inv_smooth, const Tensor<int64_t>& float_channels,
                        const Tensor<uint8_t>& zero_point, Tensor<uint8_t>& q, Tensor<float>& scale,
                        Tensor<float>& floats) {
  const auto shape = x.Shape();
  if (shape.empty()) return Invalid("RowQuantize", "input must have at least one axis");
  Quantizer quantizer(inv_smooth, float_channels, zero_point);
  if (auto status = quantizer.Check("RowQuantize", shape.back()); !status.IsOK()) return status;
  const int64_t m = LeadingRows(shape), k = shape.back();
  quantizer.Allocate(m, q, scale, floats);
  for (int64_t r = 0; r < m; ++r) quantizer.Row(r, x.Data() + r * k);
  return Ort::Status(nullptr);
}

// y = y_int * scale + x_float_1 @ w_float, shaped like `like` with its last axis n.
Ort::Status RowDequantize(const Tensor<float>& y_int, const Tensor<float>& scale, const Tensor<float>& floats,
                          const Tensor<float>& w_float, const Tensor<float>& like, Tensor<float>& y_out) {
  Dequantized d;
  if (auto status = d.Read("RowDequantize", y_int, scale, floats, w_float); !status.IsOK()) return status;
  std::vector<int64_t> shape = like.Shape();
  if (shape.empty() || LeadingRows(shape) != d.m) return Invalid("RowDequantize", "`like` has another row count");
  shape.back() = d.n;
  float* y = y_out.Allocate(shape);
  for (int64_t r = 0; r < d.m; ++r) DequantizeRow(d.u + r * d.n, d.s[r], d.f + r * d.nf, d.nf, d.w, d.n, false, y + r * d.n);
  return Ort::Status(nullptr);
}

// LayerNormalization(RowDequantize + residual) over the last axis, shaped like `residual`.
Ort::Status RowDequantizeAddLayerNorm(const Tensor<float>& y_int, const Tensor<float>& scale,
                                      const Tensor<float>& floats, const Tensor<float>& w_float,
                                      const Tensor<float>& residual, const Tensor<float>& gamma,
                                      const Tensor<float>& beta, const Tensor<float>& epsilon, Tensor<float>& y_out) {
  const std::string op = "RowDequantizeAddLayerNorm";
  Dequantized d;
  if (auto status = d.Read(op, y_int, scale, floats, w_float); !status.IsOK()) return status;
  const auto shape = residual.Shape();
  if (shape.empty() || LeadingRows(shape) != d.m || shape.back() != d.n)
    return Invalid(op, "residual's shape does not match the rows");
  if (gamma.NumberOfElement() != d.n || beta.NumberOfElement() != d.n || epsilon.NumberOfElement() != 1)
    return Invalid(op, "gamma and beta must have the row's width, epsilon one value");
  float* y = y_out.Allocate(shape);
  const float *res = residual.Data(), *g = gamma.Data(), *b = beta.Data();
  const float eps = *epsilon.Data();
  for (int64_t r = 0; r < d.m; ++r) {
    DequantizeRow(d.u + r * d.n, d.s[r], d.f + r * d.nf, d.nf, d.w, d.n, false, y + r * d.n);
    AddLayerNormRow(y + r * d.n, res + r * d.n, d.n, g, b, eps);
  }
  return Ort::Status(nullptr);
}

// RowDequantize, GELU, then RowQuantize for the next MatMul: the wide fp32 activation between the
// two feed-forward MatMuls never leaves the cache.
Ort::Status RowDequantizeGeluQuantize(const Tensor<float>& y_int, const Tensor<float>& scale,
                                      const Tensor<float>& floats, const Tensor<float>& w_float,
                                      const Tensor<float>& inv_smooth, const Tensor<int64_t>& float_channels,
                                      const Tensor<uint8_t>& zero_point, Tensor<uint8_t>& q_out,
                                      Tensor<float>& scale_out, Tensor<float>& floats_out) {
  const std::string op = "RowDequantizeGeluQuantize";
  Dequantized d;
  if (auto status = d.Read(op, y_int, scale, floats, w_float); !status.IsOK()) return status;
  Quantizer quantizer(inv_smooth, float_channels, zero_point);
  if (auto status = quantizer.Check(op, d.n); !status.IsOK()) return status;
  quantizer.Allocate(d.m, q_out, scale_out, floats_out);
  std::vector<float> row(static_cast<size_t>(d.n));
  for (int64_t r = 0; r < d.m; ++r) {
    DequantizeRow(d.u + r * d.n, d.s[r], d.f + r * d.nf, d.nf, d.w, d.n, true, row.data());
    quantizer.Row(r, row.data());
  }
  return Ort::Status(nullptr);
}

}  // namespace

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  const OrtApi* api = api_base->GetApi(kOrtApiVersion);
  if (api == nullptr) return nullptr;  // older runtime: session creation then names the missing ops
  Ort::InitApi(api);
  using Ort::Custom::CreateLiteCustomOp;
  using Op = std::unique_ptr<Ort::Custom::OrtLiteCustomOp>;
  constexpr const char* kCpu = "CPUExecutionProvider";
  static Ort::CustomOpDomain domain{"ai.embedrt"};
  static Op ops[] = {
      Op{CreateLiteCustomOp("RowQuantize", kCpu, RowQuantize)},
      Op{CreateLiteCustomOp("RowDequantize", kCpu, RowDequantize)},
      Op{CreateLiteCustomOp("RowDequantizeAddLayerNorm", kCpu, RowDequantizeAddLayerNorm)},
      Op{CreateLiteCustomOp("RowDequantizeGeluQuantize", kCpu, RowDequantizeGeluQuantize)},
  };
  static std::once_flag once;
  std::call_once(once, [] {
    for (auto& op : ops) domain.Add(op.get());
  });
  try {
    Ort::UnownedSessionOptions(options).Add(domain);
  } catch (const Ort::Exception& e) {
    return api->CreateStatus(e.GetOrtErrorCode(), e.what());
  }
  return nullptr;
}
