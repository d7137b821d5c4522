// embedrt's ONNX Runtime kernels (op domain "ai.embedrt") for the int8_rowwise_fused and fp32_fused graphs.
//
// int8_rowwise (embedrt_export/rowwise.py) quantizes each token's row on its own; in standard ONNX ops
// that takes a dozen small kernels per MatMul input and three passes over every MatMul output, each
// a separate trip through memory. These kernels do each step in one pass over a row while it is in
// cache. The int8 GEMM itself stays ONNX Runtime's (com.microsoft.MatMulIntegerToFloat). The
// exporter's rewrite is embedrt_export/rowwise.py + kernel_fusion.py; the runtime registers this
// library through embedrt/kernels.py.
//
//   RowQuantize(x, inv_smooth, float_channels, zero_point) -> q, scale, x_float_1
//   RowDequantize(y_int, scale, x_float_1, w_float, like) -> y
//   RowDequantizeAddLayerNorm(y_int, scale, x_float_1, w_float, residual, gamma, beta, epsilon) -> y
//   RowDequantizeGeluQuantize(y_int, scale, x_float_1, w_float, inv_smooth, float_channels, zero_point)
//       -> q, scale, x_float_1
//   Attention(q, k, v, qkv_bias, scale, head_size, bias[, bias2]) -> y: softmax(q' k'^T * scale + biases) v'
//       per head, where q' = q + its third of qkv_bias (k', v' alike: the projections' biases, or zeros),
//       on the (batch, length, heads * head_size) rows the projections produce: no transposes
//   PackedAttention(q, k, v, qkv_bias, scale, head_size, lengths[, bias[, bias2]]) -> y: the same on
//       packed rows, (1, tokens, hidden): item b is the next lengths[b] rows, and padding is never
//       computed. Its biases keep the padded (batch, heads, L, L) layout, read at the item's own positions
//   PackRows(x, attention_mask) -> packed, lengths: the (batch, length, hidden) rows of real tokens,
//       one after another as (1, tokens, hidden), and each item's token count. The mask must be
//       right-padded (ones, then zeros), as embedrt's engine pads
//   UnpackRows(packed, attention_mask) -> x: back to (batch, length, hidden), zeros at padding
//   BiasAddLayerNorm(x, bias, residual, gamma, beta, epsilon) -> LayerNorm(x + bias + residual)
//   BiasGelu(x, bias) -> GELU(x + bias)
// (the last two, with Attention, make the fp32_fused graph: fp32 arithmetic, one pass per row)
//
// Every row is computed from that row alone, so an embedding never depends on its batch. The
// kernels are written once (simd_kernels.inc) and built for AVX-512, AVX2 + FMA and plain C++;
// the best the CPU has is chosen when the library loads.
#define ORT_API_MANUAL_INIT
#include "onnxruntime_cxx_api.h"
#include "onnxruntime_lite_custom_op.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define EMBEDRT_X86 1
#endif

using Ort::Custom::Tensor;

namespace {

// The oldest ONNX Runtime C API this library asks for (onnxruntime 1.20, pyproject's floor).
constexpr uint32_t kOrtApiVersion = 20;
constexpr int kRows = 8;  // attention query rows per block: each key or value load feeds kRows FMAs

constexpr float kErfP = 0.3275911f;
constexpr float kErfA[5] = {0.254829592f, -0.284496736f, 1.421413741f, -1.453152027f, 1.061405429f};
constexpr float kSqrtHalf = 0.70710678118654752f;

Ort::Status Invalid(const std::string& op, const std::string& what) {
  return Ort::Status(("ai.embedrt." + op + ": " + what).c_str(), ORT_INVALID_ARGUMENT);
}

// -- scalar steps: the tails of vector loops, and the arithmetic the vector code matches -------------
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

// A score bias broadcastable to (B, H, L, L): each axis full or 1.
struct ScoreBias {
  const float* data = nullptr;
  int64_t sb = 0, sh = 0, si = 0;  // strides of batch item, head and query row (0 where broadcast)
  bool per_key = true;

  static std::optional<ScoreBias> From(const Tensor<float>& t, int64_t b, int64_t h, int64_t l) {
    const auto s = t.Shape();
    if (s.size() != 4 || (s[0] != b && s[0] != 1) || (s[1] != h && s[1] != 1) || (s[2] != l && s[2] != 1) ||
        (s[3] != l && s[3] != 1))
      return std::nullopt;
    ScoreBias bias;
    bias.data = t.Data();
    bias.per_key = s[3] != 1;
    bias.si = s[2] == 1 ? 0 : s[3];
    bias.sh = s[1] == 1 ? 0 : s[2] * s[3];
    bias.sb = s[0] == 1 ? 0 : s[1] * s[2] * s[3];
    return bias;
  }

  // Query row i's biases: l values when per_key, else one; null when there is no bias.
  const float* Row(int64_t b, int64_t h, int64_t i) const { return data ? data + b * sb + h * sh + i * si : nullptr; }
};

struct AttentionArgs {
  const float *q, *k, *v;
  const float *bq, *bk, *bv;  // the projections' biases, each hidden wide; null when all zero
  float* y;
  int64_t l, dm, d;
  float scale;
  ScoreBias bias1, bias2;
  // Packed rows (PackedAttention): item b is rows starts[b] .. starts[b] + lengths[b], no padding.
  // Null: item b is rows b * l .. (b + 1) * l.
  const int64_t *starts = nullptr, *lengths = nullptr;

  int64_t Length(int64_t b) const { return lengths ? lengths[b] : l; }
  int64_t Start(int64_t b) const { return starts ? starts[b] : b * l; }
};

// -- vector types: the operations simd_kernels.inc needs ---------------------------------------------
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
};

namespace generic {
using V = VecScalar;
#include "simd_kernels.inc"
}  // namespace generic

#ifdef EMBEDRT_X86
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
struct VecAvx2 {
  using R = __m256;
  static constexpr int W = 8;
  static constexpr int kTile = 1;  // 16 registers: 8 accumulators, a key and a broadcast
  static R load(const float* p) { return _mm256_loadu_ps(p); }
  static __m256i first(int64_t n) {  // lanes below n all ones
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static R load_first(const float* p, int64_t n) { return _mm256_maskload_ps(p, first(n)); }  // zeros past n
  static R keep_first(R v, int64_t n, float fill) {
    return _mm256_blendv_ps(_mm256_set1_ps(fill), v, _mm256_castsi256_ps(first(n)));
  }
  static void store(float* p, R v) { _mm256_storeu_ps(p, v); }
  static R set1(float v) { return _mm256_set1_ps(v); }
  static R zero() { return _mm256_setzero_ps(); }
  static R add(R a, R b) { return _mm256_add_ps(a, b); }
  static R sub(R a, R b) { return _mm256_sub_ps(a, b); }
  static R mul(R a, R b) { return _mm256_mul_ps(a, b); }
  static R div(R a, R b) { return _mm256_div_ps(a, b); }
  static R max(R a, R b) { return _mm256_max_ps(a, b); }
  static R min(R a, R b) { return _mm256_min_ps(a, b); }
  static R fmadd(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
  static R fnmadd(R a, R b, R c) { return _mm256_fnmadd_ps(a, b, c); }
  static R abs(R a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
  static R sign_of(R magnitude, R sign) { return _mm256_or_ps(magnitude, _mm256_and_ps(sign, _mm256_set1_ps(-0.0f))); }
  static R round_even(R a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static R reciprocal(R a) {  // ~12-bit estimate, one Newton step: ~23 bits
    const R r = _mm256_rcp_ps(a);
    return _mm256_mul_ps(r, _mm256_fnmadd_ps(a, r, _mm256_set1_ps(2.0f)));
  }
  static R scale2(R p, R n) {
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
  }
  static float reduce_add(R v) {
    const __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 q = _mm_add_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q)));
  }
  static float reduce_max(R v) {
    alignas(32) float x[8];
    _mm256_store_ps(x, v);
    return *std::max_element(x, x + 8);
  }
  static float reduce_min(R v) {
    alignas(32) float x[8];
    _mm256_store_ps(x, v);
    return *std::min_element(x, x + 8);
  }
  static void store_u8(uint8_t* q, R v) {  // saturating packs i32 -> i16 -> u8 clamp to 0..255
    const __m256i i32 = _mm256_cvtps_epi32(v);
    const __m128i i16 = _mm_packs_epi32(_mm256_castsi256_si128(i32), _mm256_extracti128_si256(i32, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(q), _mm_packus_epi16(i16, i16));
  }
  static void transpose(R* r) {  // 8 x 8, in registers
    R t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
      t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
      t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
      u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
      u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
      u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
      u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int i = 0; i < 4; ++i) {
      r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
      r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
    }
  }
};
namespace avx2 {
using V = VecAvx2;
#include "simd_kernels.inc"
}  // namespace avx2
#if defined(__clang__)
#pragma clang attribute pop
#pragma clang attribute push(__attribute__((target("avx512f,avx2,fma"))), apply_to = function)
#else
#pragma GCC pop_options
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
#endif  // EMBEDRT_X86

// The kernels for this CPU, chosen once.
struct Kernels {
  float (*quantize_row)(const float*, const float*, int64_t, float, float*, uint8_t*);
  void (*dequantize_row)(const float*, float, const float*, int64_t, const float*, int64_t, bool, float*);
  void (*add_layer_norm_row)(float*, const float*, int64_t, const float*, const float*, float);
  bool (*attend_head)(const AttentionArgs&, int64_t, int64_t, float*, float*, float*);
  int width;  // floats per vector: attention scratch is padded to it
  const char* isa;
};

#define EMBEDRT_TABLE(ns, width) \
  Kernels { ns::QuantizeRow, ns::DequantizeRow, ns::AddLayerNormRow, ns::AttendHead, width, #ns }

// The best instruction set the CPU has, at most EMBEDRT_KERNELS_ISA ("avx512", "avx2" or "generic";
// embedrt.kernels refuses other values) when set: tests run every path on one machine, and a user can rule out a suspect one.
const Kernels& Cpu() {
  static const Kernels kernels = [] {
    const char* cap_env = std::getenv("EMBEDRT_KERNELS_ISA");
    const std::string cap = cap_env && *cap_env ? cap_env : "avx512";
#ifdef EMBEDRT_X86
    if (cap == "avx512" && __builtin_cpu_supports("avx512f")) return EMBEDRT_TABLE(avx512, 16);
    if ((cap == "avx512" || cap == "avx2") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      return EMBEDRT_TABLE(avx2, 8);
#endif
    return EMBEDRT_TABLE(generic, 1);
  }();
  return kernels;
}

// Runs fn(begin, end) over [0, total) in blocks of `grain`, on the session's intra-op threads.
template <class F>
void ParallelBlocks(OrtKernelContext* context, int64_t total, int64_t grain, F&& fn) {
  const int64_t blocks = (total + grain - 1) / grain;
  if (blocks <= 1) {
    fn(int64_t{0}, total);
    return;
  }
  struct Job {
    F* fn;
    int64_t total, grain;
  } job{&fn, total, grain};
  Ort::KernelContext(context).ParallelFor(
      [](void* data, size_t block) {
        const Job& j = *static_cast<Job*>(data);
        const int64_t begin = static_cast<int64_t>(block) * j.grain;
        (*j.fn)(begin, std::min(begin + j.grain, j.total));
      },
      static_cast<size_t>(blocks), 0, &job);
}

constexpr int64_t kRowGrain = 64;

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
        k_(inv_smooth.NumberOfElement()), zero_point_(static_cast<float>(*zero_point.Data())) {}

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

  int64_t width() const { return k_; }

  // Quantize `row` as row r; `scratch` holds k floats.
  void Row(int64_t r, const float* row, float* scratch) const {
    scale_[r] = Cpu().quantize_row(row, inv_, k_, zero_point_, scratch, q_ + r * k_);
    float* f = floats_ + r * (n_float_ + 1);
    for (int64_t c = 0; c < n_float_; ++c) f[c] = row[channels_[c]];
    f[n_float_] = 1.0f;
  }

 private:
  const float* inv_;
  const int64_t* channels_;
  int64_t n_float_, k_;
  float zero_point_;
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

  void Row(int64_t r, bool gelu, float* y) const {
    Cpu().dequantize_row(u + r * n, s[r], f + r * nf, nf, w, n, gelu, y);
  }
};

// -- the ops ------------------------------------------------------------------------------------------
Ort::Status RowQuantize(OrtKernelContext* context, const Tensor<float>& x, const Tensor<float>& inv_smooth,
                        const Tensor<int64_t>& float_channels, const Tensor<uint8_t>& zero_point, Tensor<uint8_t>& q,
                        Tensor<float>& scale, Tensor<float>& floats) {
  const auto shape = x.Shape();
  if (shape.empty()) return Invalid("RowQuantize", "input must have at least one axis");
  Quantizer quantizer(inv_smooth, float_channels, zero_point);
  if (auto status = quantizer.Check("RowQuantize", shape.back()); !status.IsOK()) return status;
  const int64_t m = LeadingRows(shape), k = shape.back();
  quantizer.Allocate(m, q, scale, floats);
  const float* data = x.Data();
  ParallelBlocks(context, m, kRowGrain, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(static_cast<size_t>(k));
    for (int64_t r = begin; r < end; ++r) quantizer.Row(r, data + r * k, scratch.data());
  });
  return Ort::Status(nullptr);
}

// y = y_int * scale + x_float_1 @ w_float, shaped like `like` with its last axis n.
Ort::Status RowDequantize(OrtKernelContext* context, const Tensor<float>& y_int, const Tensor<float>& scale,
                          const Tensor<float>& floats, const Tensor<float>& w_float, const Tensor<float>& like,
                          Tensor<float>& y_out) {
  Dequantized d;
  if (auto status = d.Read("RowDequantize", y_int, scale, floats, w_float); !status.IsOK()) return status;
  std::vector<int64_t> shape = like.Shape();
  if (shape.empty() || LeadingRows(shape) != d.m) return Invalid("RowDequantize", "`like` has another row count");
  shape.back() = d.n;
  float* y = y_out.Allocate(shape);
  ParallelBlocks(context, d.m, kRowGrain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) d.Row(r, false, y + r * d.n);
  });
  return Ort::Status(nullptr);
}

// LayerNormalization(RowDequantize + residual) over the last axis, shaped like `residual`.
Ort::Status RowDequantizeAddLayerNorm(OrtKernelContext* context, const Tensor<float>& y_int,
                                      const Tensor<float>& scale, const Tensor<float>& floats,
                                      const Tensor<float>& w_float, const Tensor<float>& residual,
                                      const Tensor<float>& gamma, const Tensor<float>& beta,
                                      const Tensor<float>& epsilon, Tensor<float>& y_out) {
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
  ParallelBlocks(context, d.m, kRowGrain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      d.Row(r, false, y + r * d.n);
      Cpu().add_layer_norm_row(y + r * d.n, res + r * d.n, d.n, g, b, eps);
    }
  });
  return Ort::Status(nullptr);
}

// RowDequantize, GELU, then RowQuantize for the next MatMul: the wide fp32 activation between the
// two feed-forward MatMuls never leaves the cache.
Ort::Status RowDequantizeGeluQuantize(OrtKernelContext* context, const Tensor<float>& y_int,
                                      const Tensor<float>& scale, const Tensor<float>& floats,
                                      const Tensor<float>& w_float, const Tensor<float>& inv_smooth,
                                      const Tensor<int64_t>& float_channels, const Tensor<uint8_t>& zero_point,
                                      Tensor<uint8_t>& q_out, Tensor<float>& scale_out, Tensor<float>& floats_out) {
  const std::string op = "RowDequantizeGeluQuantize";
  Dequantized d;
  if (auto status = d.Read(op, y_int, scale, floats, w_float); !status.IsOK()) return status;
  Quantizer quantizer(inv_smooth, float_channels, zero_point);
  if (auto status = quantizer.Check(op, d.n); !status.IsOK()) return status;
  quantizer.Allocate(d.m, q_out, scale_out, floats_out);
  ParallelBlocks(context, d.m, kRowGrain, [&](int64_t begin, int64_t end) {
    std::vector<float> row(static_cast<size_t>(d.n)), scratch(static_cast<size_t>(d.n));
    for (int64_t r = begin; r < end; ++r) {
      d.Row(r, true, row.data());
      quantizer.Row(r, row.data(), scratch.data());
    }
  });
  return Ort::Status(nullptr);
}

// x + bias as a dequantization: x * 1 + [1] @ [bias], exactly x + bias.
struct BiasRows {
  int64_t m = 0, n = 0;
  const float *x = nullptr, *bias = nullptr;

  Ort::Status Read(const std::string& op, const Tensor<float>& x_in, const Tensor<float>& bias_in) {
    const auto shape = x_in.Shape();
    if (shape.empty() || bias_in.NumberOfElement() != shape.back())
      return Invalid(op, "bias must have the last axis' width");
    n = shape.back(), m = LeadingRows(shape), x = x_in.Data(), bias = bias_in.Data();
    return Ort::Status(nullptr);
  }

  void Row(int64_t r, bool gelu, float* y) const {
    static const float one = 1.0f;
    Cpu().dequantize_row(x + r * n, 1.0f, &one, 1, bias, n, gelu, y);
  }
};

// Each item's token count, and their sum, from a right-padded (batch, length) attention mask of ones and zeros.
Ort::Status MaskLengths(const std::string& op, const Tensor<int64_t>& mask, std::vector<int64_t>& lengths,
                        int64_t& tokens) {
  const auto s = mask.Shape();
  if (s.size() != 2) return Invalid(op, "attention_mask must be (batch, length)");
  const int64_t* m = mask.Data();
  lengths.assign(static_cast<size_t>(s[0]), 0);
  tokens = 0;
  for (int64_t b = 0; b < s[0]; ++b) {
    const int64_t* row = m + b * s[1];
    int64_t n = 0;
    while (n < s[1] && row[n] == 1) ++n;
    for (int64_t j = n; j < s[1]; ++j)
      if (row[j] != 0)
        return Invalid(op, "attention_mask row " + std::to_string(b) +
                           " is not right-padded ones then zeros; this graph runs on packed rows and needs that");
    lengths[b] = n;
    tokens += n;
  }
  return Ort::Status(nullptr);
}

Ort::Status PackRows(const Tensor<float>& x, const Tensor<int64_t>& mask, Tensor<float>& packed_out,
                     Tensor<int64_t>& lengths_out) {
  const std::string op = "PackRows";
  const auto s = x.Shape();
  if (s.size() != 3 || mask.Shape() != std::vector<int64_t>{s[0], s[1]})
    return Invalid(op, "x must be (batch, length, hidden) and attention_mask (batch, length)");
  std::vector<int64_t> lengths;
  int64_t tokens = 0;
  if (auto status = MaskLengths(op, mask, lengths, tokens); !status.IsOK()) return status;
  float* y = packed_out.Allocate({1, tokens, s[2]});
  std::copy(lengths.begin(), lengths.end(), lengths_out.Allocate({s[0]}));
  for (int64_t b = 0; b < s[0]; ++b) y = std::copy_n(x.Data() + b * s[1] * s[2], lengths[b] * s[2], y);
  return Ort::Status(nullptr);
}

Ort::Status UnpackRows(const Tensor<float>& packed, const Tensor<int64_t>& mask, Tensor<float>& x_out) {
  const std::string op = "UnpackRows";
  const auto s = packed.Shape();
  const auto ms = mask.Shape();
  if (s.size() != 3 || s[0] != 1 || ms.size() != 2) return Invalid(op, "packed must be (1, tokens, hidden) and attention_mask (batch, length)");
  std::vector<int64_t> lengths;
  int64_t tokens = 0;
  if (auto status = MaskLengths(op, mask, lengths, tokens); !status.IsOK()) return status;
  if (tokens != s[1])
    return Invalid(op, "attention_mask has " + std::to_string(tokens) + " tokens but packed has " + std::to_string(s[1]) + " rows");
  float* x = x_out.Allocate({ms[0], ms[1], s[2]});
  const float* from = packed.Data();
  for (int64_t b = 0; b < ms[0]; ++b) {
    float* row = x + b * ms[1] * s[2];
    std::copy_n(from, lengths[b] * s[2], row);
    from += lengths[b] * s[2];
    std::fill(row + lengths[b] * s[2], row + ms[1] * s[2], 0.0f);
  }
  return Ort::Status(nullptr);
}

// LayerNormalization(x + bias + residual) over the last axis.
Ort::Status BiasAddLayerNorm(OrtKernelContext* context, const Tensor<float>& x, const Tensor<float>& bias,
                             const Tensor<float>& residual, const Tensor<float>& gamma, const Tensor<float>& beta,
                             const Tensor<float>& epsilon, Tensor<float>& y_out) {
  const std::string op = "BiasAddLayerNorm";
  BiasRows rows;
  if (auto status = rows.Read(op, x, bias); !status.IsOK()) return status;
  if (residual.Shape() != x.Shape()) return Invalid(op, "residual's shape differs from the input's");
  if (gamma.NumberOfElement() != rows.n || beta.NumberOfElement() != rows.n || epsilon.NumberOfElement() != 1)
    return Invalid(op, "gamma and beta must have the row's width, epsilon one value");
  float* y = y_out.Allocate(x.Shape());
  const float *res = residual.Data(), *g = gamma.Data(), *b = beta.Data();
  const float eps = *epsilon.Data();
  ParallelBlocks(context, rows.m, kRowGrain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      rows.Row(r, false, y + r * rows.n);
      Cpu().add_layer_norm_row(y + r * rows.n, res + r * rows.n, rows.n, g, b, eps);
    }
  });
  return Ort::Status(nullptr);
}

// GELU(x + bias), erf form.
Ort::Status BiasGelu(OrtKernelContext* context, const Tensor<float>& x, const Tensor<float>& bias, Tensor<float>& y_out) {
  BiasRows rows;
  if (auto status = rows.Read("BiasGelu", x, bias); !status.IsOK()) return status;
  float* y = y_out.Allocate(x.Shape());
  ParallelBlocks(context, rows.m, kRowGrain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) rows.Row(r, true, y + r * rows.n);
  });
  return Ort::Status(nullptr);
}

// Every (item, head) of `a` on the pool; `longest` is the most keys an item has.
Ort::Status RunAttention(OrtKernelContext* context, AttentionArgs& a, int64_t nb, int64_t heads, int64_t longest) {
  const int width = Cpu().width;
  const int64_t lp = (longest + width - 1) / width * width;
  ParallelBlocks(context, nb * heads, 1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> scratch;  // kept across heads and calls: no allocation per head
    const auto need = static_cast<size_t>((a.d + kRows) * lp + kRows * a.d);
    if (scratch.size() < need) scratch.resize(need);
    float* kt = scratch.data();
    float* scores = kt + a.d * lp;
    float* qb = scores + kRows * lp;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / heads, h = task % heads;
      if (!Cpu().attend_head(a, b, h, kt, scores, qb))
        generic::AttendHead(a, b, h, kt, scores, qb);  // head size: not whole vectors
    }
  });
  return Ort::Status(nullptr);
}

// The shared part of both attention ops' arguments: head size, heads and the projections' biases.
Ort::Status ReadAttention(const std::string& op, const Tensor<float>& q, const Tensor<float>& k,
                          const Tensor<float>& v, const Tensor<float>& qkv_bias, const Tensor<float>& scale,
                          const Tensor<int64_t>& head_size, AttentionArgs& a, int64_t& heads) {
  const auto shape = q.Shape();
  if (shape.size() != 3 || k.Shape() != shape || v.Shape() != shape)
    return Invalid(op, "q, k and v must share one (batch, length, hidden) shape");
  const int64_t dm = shape[2], d = *head_size.Data();
  if (d <= 0 || dm % d) return Invalid(op, "hidden size is not a multiple of head_size");
  heads = dm / d;
  if (qkv_bias.NumberOfElement() != 3 * dm) return Invalid(op, "qkv_bias must hold 3 * hidden values");
  const float* qkv_b = qkv_bias.Data();
  const bool biased = std::any_of(qkv_b, qkv_b + 3 * dm, [](float x) { return x != 0.0f; });
  a = AttentionArgs{q.Data(), k.Data(), v.Data(), biased ? qkv_b : nullptr, biased ? qkv_b + dm : nullptr,
                    biased ? qkv_b + 2 * dm : nullptr, nullptr, shape[1], dm, d, *scale.Data(), {}, {}};
  return Ort::Status(nullptr);
}

Ort::Status Attention(OrtKernelContext* context, const Tensor<float>& q, const Tensor<float>& k,
                      const Tensor<float>& v, const Tensor<float>& qkv_bias, const Tensor<float>& scale,
                      const Tensor<int64_t>& head_size,
                      const Tensor<float>& bias, std::optional<const Tensor<float>*> bias2, Tensor<float>& y_out) {
  const std::string op = "Attention";
  AttentionArgs a;
  int64_t heads = 0;
  if (auto status = ReadAttention(op, q, k, v, qkv_bias, scale, head_size, a, heads); !status.IsOK()) return status;
  const int64_t nb = q.Shape()[0], l = a.l;
  const auto b1 = ScoreBias::From(bias, nb, heads, l);
  const auto b2 = bias2.has_value() && *bias2 ? ScoreBias::From(**bias2, nb, heads, l) : std::optional<ScoreBias>{ScoreBias{}};
  if (!b1 || !b2) return Invalid(op, "a score bias does not broadcast to (batch, heads, length, length)");
  a.bias1 = *b1;
  a.bias2 = *b2;
  a.y = y_out.Allocate(q.Shape());
  return RunAttention(context, a, nb, heads, l);
}

// A PackedAttention bias: (batch | 1, heads | 1, L | 1, L | 1) for an L of at least the longest item.
std::optional<ScoreBias> PackedBias(std::optional<const Tensor<float>*> t, int64_t nb, int64_t heads, int64_t longest) {
  if (!t.has_value() || !*t) return ScoreBias{};
  const auto s = (*t)->Shape();
  const int64_t l = s.size() == 4 ? std::max(s[2], s[3]) : 0;
  if (l < longest && !(s.size() == 4 && s[2] == 1 && s[3] == 1)) return std::nullopt;
  return ScoreBias::From(**t, nb, heads, l);
}

Ort::Status PackedAttention(OrtKernelContext* context, const Tensor<float>& q, const Tensor<float>& k,
                            const Tensor<float>& v, const Tensor<float>& qkv_bias, const Tensor<float>& scale,
                            const Tensor<int64_t>& head_size, const Tensor<int64_t>& lengths,
                            std::optional<const Tensor<float>*> bias, std::optional<const Tensor<float>*> bias2,
                            Tensor<float>& y_out) {
  const std::string op = "PackedAttention";
  AttentionArgs a;
  int64_t heads = 0;
  if (auto status = ReadAttention(op, q, k, v, qkv_bias, scale, head_size, a, heads); !status.IsOK()) return status;
  if (q.Shape()[0] != 1) return Invalid(op, "q, k and v must be packed rows, (1, tokens, hidden)");
  if (lengths.Shape().size() != 1) return Invalid(op, "lengths must be one-dimensional, one per item");
  const int64_t nb = lengths.Shape()[0], tokens = a.l;
  const int64_t* len = lengths.Data();
  std::vector<int64_t> starts(static_cast<size_t>(nb));
  int64_t total = 0, longest = 0;
  for (int64_t b = 0; b < nb; ++b) {
    if (len[b] < 0) return Invalid(op, "lengths must not be negative");
    starts[b] = total;
    total += len[b];
    longest = std::max(longest, len[b]);
  }
  if (total != tokens)
    return Invalid(op, "lengths sum to " + std::to_string(total) + " but q has " + std::to_string(tokens) + " rows");
  const auto b1 = PackedBias(bias, nb, heads, longest);
  const auto b2 = PackedBias(bias2, nb, heads, longest);
  if (!b1 || !b2) return Invalid(op, "a score bias does not broadcast to (items, heads, L, L) with L >= the longest item");
  a.bias1 = *b1;
  a.bias2 = *b2;
  a.starts = starts.data();
  a.lengths = len;
  a.y = y_out.Allocate(q.Shape());
  return RunAttention(context, a, nb, heads, longest);
}

}  // namespace

// The instruction set the kernels run on: "avx512", "avx2" or "generic" (embedrt.kernels.isa()).
extern "C" __attribute__((visibility("default"))) const char* EmbedrtKernelIsa() { return Cpu().isa; }

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
      Op{CreateLiteCustomOp("Attention", kCpu, Attention)},
      Op{CreateLiteCustomOp("PackedAttention", kCpu, PackedAttention)},
      Op{CreateLiteCustomOp("PackRows", kCpu, PackRows)},
      Op{CreateLiteCustomOp("UnpackRows", kCpu, UnpackRows)},
      Op{CreateLiteCustomOp("BiasAddLayerNorm", kCpu, BiasAddLayerNorm)},
      Op{CreateLiteCustomOp("BiasGelu", kCpu, BiasGelu)},
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
