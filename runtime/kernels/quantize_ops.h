// The int8_rowwise_fused graph's ops: RowQuantize, RowDequantize, RowDequantizeAddLayerNorm and
// RowDequantizeGeluQuantize, and what they share (Quantizer, Dequantized). A part of kernels.cc (see there).
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

}  // namespace
