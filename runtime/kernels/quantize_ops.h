// The int8_rowwise_fused graph's row ops: RowQuantize, and the three epilogues of an int8 GEMM (Dequantize,
// DequantizeAddLayerNorm, DequantizeGeluQuantize) written once for any source of GEMM rows: here
// MatMulIntegerToFloat's output (RowDequantize, RowDequantizeAddLayerNorm, RowDequantizeGeluQuantize),
// in qgemm_ops.h embedrt's own GEMM. A part of kernels.cc (see there).
#pragma once

#include "dispatch.h"
#include "op_support.h"

#include <cstdint>
#include <string>
#include <vector>

namespace {

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

// The inputs every dequantizing op shares, checked against the rows' count m and width n.
struct Dequantized {
  int64_t m = 0, n = 0, nf = 0;
  const float *s = nullptr, *f = nullptr, *w = nullptr;

  Ort::Status Read(const std::string& op, int64_t rows, int64_t width, const Tensor<float>& scale,
                   const Tensor<float>& floats, const Tensor<float>& w_float) {
    const auto fs = floats.Shape(), ws = w_float.Shape();
    if (fs.size() != 2 || ws.size() != 2) return Invalid(op, "expects 2-D rows and weights");
    m = rows, n = width, nf = fs[1];
    if (scale.NumberOfElement() != m || fs[0] != m || ws[0] != nf || ws[1] != n)
      return Invalid(op, "row counts or widths of its inputs disagree");
    s = scale.Data(), f = floats.Data(), w = w_float.Data();
    return Ort::Status(nullptr);
  }

  // Row r of the output from u, its n unscaled GEMM sums.
  void Row(int64_t r, const float* u, Activation act, float* y) const {
    Cpu().dequantize_row(u, s[r], f + r * nf, nf, w, n, act, y);
  }
};

// The rows a dequantizing op finishes, as MatMulIntegerToFloat wrote them: y_int (m, n).
struct UnscaledRows {
  int64_t m = 0, n = 0;
  const float* u = nullptr;

  Ort::Status Read(const std::string& op, const Tensor<float>& y_int) {
    const auto shape = y_int.Shape();
    if (shape.size() != 2) return Invalid(op, "expects 2-D rows and weights");
    m = shape[0], n = shape[1], u = y_int.Data();
    return Ort::Status(nullptr);
  }

  // Calls make() once per block of rows on the intra-op threads, and what it returns on each row
  // of the block: (row index, its n sums).
  template <class Make>
  void ForRows(OrtKernelContext* context, Make&& make) const {
    ParallelBlocks(context, m, kRowGrain, [&](int64_t begin, int64_t end) {
      auto row = make();
      for (int64_t r = begin; r < end; ++r) row(r, u + r * n);
    });
  }
};

// The three epilogues, for any source of rows (UnscaledRows, or the GEMM of qgemm_ops.h).

// y = u * scale + x_float_1 @ w_float, shaped like `like` with its last axis n.
template <class Rows>
Ort::Status Dequantize(const std::string& op, OrtKernelContext* context, const Rows& rows, const Tensor<float>& scale,
                       const Tensor<float>& floats, const Tensor<float>& w_float, const Tensor<float>& like,
                       Tensor<float>& y_out) {
  Dequantized d;
  if (auto status = d.Read(op, rows.m, rows.n, scale, floats, w_float); !status.IsOK()) return status;
  std::vector<int64_t> shape = like.Shape();
  if (shape.empty() || LeadingRows(shape) != d.m) return Invalid(op, "`like` has another row count");
  shape.back() = d.n;
  float* y = y_out.Allocate(shape);
  rows.ForRows(context, [&] {
    return [&](int64_t r, const float* u) { d.Row(r, u, Activation::kNone, y + r * d.n); };
  });
  return Ort::Status(nullptr);
}

// LayerNormalization(the dequantized rows + residual) over the last axis, shaped like `residual`; with a
// `quantizer` (allocated for the rows), each output row also quantized for the next MatMul while in cache.
template <class Rows>
Ort::Status DequantizeAddLayerNorm(const std::string& op, OrtKernelContext* context, const Rows& rows,
                                   const Tensor<float>& scale, const Tensor<float>& floats,
                                   const Tensor<float>& w_float, const Tensor<float>& residual,
                                   const Tensor<float>& gamma, const Tensor<float>& beta,
                                   const Tensor<float>& epsilon, Tensor<float>& y_out,
                                   const Quantizer* quantizer = nullptr) {
  Dequantized d;
  if (auto status = d.Read(op, rows.m, rows.n, scale, floats, w_float); !status.IsOK()) return status;
  const auto shape = residual.Shape();
  if (shape.empty() || LeadingRows(shape) != d.m || shape.back() != d.n)
    return Invalid(op, "residual's shape does not match the rows");
  if (gamma.NumberOfElement() != d.n || beta.NumberOfElement() != d.n || epsilon.NumberOfElement() != 1)
    return Invalid(op, "gamma and beta must have the row's width, epsilon one value");
  float* y = y_out.Allocate(shape);
  const float *res = residual.Data(), *g = gamma.Data(), *b = beta.Data();
  const float eps = *epsilon.Data();
  rows.ForRows(context, [&] {
    const auto width = static_cast<size_t>(quantizer ? d.n : 0);
    return [&, scratch = std::vector<float>(width)](int64_t r, const float* u) mutable {
      d.Row(r, u, Activation::kNone, y + r * d.n);
      Cpu().add_layer_norm_row(y + r * d.n, res + r * d.n, d.n, g, b, eps);
      if (quantizer) quantizer->Row(r, y + r * d.n, scratch.data());
    };
  });
  return Ort::Status(nullptr);
}

// Dequantize, GELU, then RowQuantize for the next MatMul: the wide fp32 activation between the
// two feed-forward MatMuls never leaves the cache.
template <class Rows>
Ort::Status DequantizeGeluQuantize(const std::string& op, OrtKernelContext* context, const Rows& rows,
                                   const Tensor<float>& scale, const Tensor<float>& floats,
                                   const Tensor<float>& w_float, const Tensor<float>& inv_smooth,
                                   const Tensor<int64_t>& float_channels, const Tensor<uint8_t>& zero_point,
                                   Tensor<uint8_t>& q_out, Tensor<float>& scale_out, Tensor<float>& floats_out) {
  Dequantized d;
  if (auto status = d.Read(op, rows.m, rows.n, scale, floats, w_float); !status.IsOK()) return status;
  Quantizer quantizer(inv_smooth, float_channels, zero_point);
  if (auto status = quantizer.Check(op, d.n); !status.IsOK()) return status;
  quantizer.Allocate(d.m, q_out, scale_out, floats_out);
  rows.ForRows(context, [&] {
    const auto width = static_cast<size_t>(d.n);
    return [&, row = std::vector<float>(width), scratch = std::vector<float>(width)](int64_t r, const float* u) mutable {
      d.Row(r, u, Activation::kGeluBeforeQuantize, row.data());
      quantizer.Row(r, row.data(), scratch.data());
    };
  });
  return Ort::Status(nullptr);
}

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

// The epilogues after MatMulIntegerToFloat, whose output y_int they read.
Ort::Status RowDequantize(OrtKernelContext* context, const Tensor<float>& y_int, const Tensor<float>& scale,
                          const Tensor<float>& floats, const Tensor<float>& w_float, const Tensor<float>& like,
                          Tensor<float>& y_out) {
  UnscaledRows rows;
  if (auto status = rows.Read("RowDequantize", y_int); !status.IsOK()) return status;
  return Dequantize("RowDequantize", context, rows, scale, floats, w_float, like, y_out);
}

Ort::Status RowDequantizeAddLayerNorm(OrtKernelContext* context, const Tensor<float>& y_int,
                                      const Tensor<float>& scale, const Tensor<float>& floats,
                                      const Tensor<float>& w_float, const Tensor<float>& residual,
                                      const Tensor<float>& gamma, const Tensor<float>& beta,
                                      const Tensor<float>& epsilon, Tensor<float>& y_out) {
  UnscaledRows rows;
  if (auto status = rows.Read("RowDequantizeAddLayerNorm", y_int); !status.IsOK()) return status;
  return DequantizeAddLayerNorm("RowDequantizeAddLayerNorm", context, rows, scale, floats, w_float, residual, gamma,
                                beta, epsilon, y_out);
}

Ort::Status RowDequantizeGeluQuantize(OrtKernelContext* context, const Tensor<float>& y_int,
                                      const Tensor<float>& scale, const Tensor<float>& floats,
                                      const Tensor<float>& w_float, const Tensor<float>& inv_smooth,
                                      const Tensor<int64_t>& float_channels, const Tensor<uint8_t>& zero_point,
                                      Tensor<uint8_t>& q_out, Tensor<float>& scale_out, Tensor<float>& floats_out) {
  UnscaledRows rows;
  if (auto status = rows.Read("RowDequantizeGeluQuantize", y_int); !status.IsOK()) return status;
  return DequantizeGeluQuantize("RowDequantizeGeluQuantize", context, rows, scale, floats, w_float, inv_smooth,
                                float_channels, zero_point, q_out, scale_out, floats_out);
}

}  // namespace
