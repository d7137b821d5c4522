// The fp32_fused graph's row ops: BiasAddLayerNorm and BiasGelu, a bias added as a dequantization
// (BiasRows) so they run the row kernels the int8 ops run. A part of kernels.cc (see there).
#pragma once

#include "dispatch.h"
#include "op_support.h"

#include <cstdint>
#include <string>

namespace {

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

  void Row(int64_t r, Activation act, float* y) const {
    static const float one = 1.0f;
    Cpu().dequantize_row(x + r * n, 1.0f, &one, 1, bias, n, act, y);
  }
};

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
      rows.Row(r, Activation::kNone, y + r * rows.n);
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
    for (int64_t r = begin; r < end; ++r) rows.Row(r, Activation::kGelu, y + r * rows.n);
  });
  return Ort::Status(nullptr);
}

}  // namespace
