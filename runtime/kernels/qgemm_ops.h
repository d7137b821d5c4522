// QMatMulRowDequantize, QMatMulRowDequantizeAddLayerNorm[Quantize] and QMatMulRowDequantizeGeluQuantize: an
// int8 GEMM (qgemm.h) and the epilogue after it (quantize_ops.h) in one op, in place of MatMulIntegerToFloat
// and the RowDequantize* that reads its output (and the RowQuantize of a LayerNorm's output after it).
// kQRows rows at a time go through the GEMM into a buffer that stays in cache and the epilogue finishes
// them there: the GEMM's fp32 output (the widest tensor of a layer, (tokens, 4 x hidden) after the first
// feed-forward MatMul) is never written out.
// A part of kernels.cc (see there).
#pragma once

#include "dispatch.h"
#include "op_support.h"
#include "qgemm.h"
#include "quantize_ops.h"

#include <cstdint>
#include <string>
#include <vector>

namespace {

// The GEMM's rows as a source for the epilogues: q (m, k) u8 times w (k / 4, n, 4) s8.
struct QMatMul {
  int64_t m = 0, n = 0, k = 0;
  const uint8_t* a = nullptr;
  const int8_t* w4 = nullptr;
  const float* ws = nullptr;
  const int32_t* zero_sum = nullptr;

  Ort::Status Read(const std::string& op, const Tensor<uint8_t>& q, const Tensor<int8_t>& w,
                   const Tensor<float>& w_scale, const Tensor<int32_t>& w_zero_sum) {
    const auto qs = q.Shape(), wsh = w.Shape();
    if (qs.size() != 2 || wsh.size() != 3 || wsh[2] != 4)
      return Invalid(op, "expects 2-D rows and weights packed as (k / 4, n, 4)");
    m = qs[0], k = qs[1], n = wsh[1];
    if (wsh[0] * 4 != k) return Invalid(op, "the weights' depth " + std::to_string(wsh[0] * 4) + " != row width " +
                                            std::to_string(k));
    if (n % 16 != 0) return Invalid(op, "output width " + std::to_string(n) + " is not a multiple of 16");
    if (w_scale.NumberOfElement() != n || w_zero_sum.NumberOfElement() != n)
      return Invalid(op, "w_scale and w_zero_sum must have the output width");
    a = q.Data(), w4 = w.Data(), ws = w_scale.Data(), zero_sum = w_zero_sum.Data();
    return Ort::Status(nullptr);
  }

  // As UnscaledRows::ForRows, each row's sums computed kQRows rows at a time into a per-block buffer;
  // blocks of whole tiles (60 rows, not kRowGrain's 64), so that only the last block has a narrower one.
  template <class Make>
  void ForRows(OrtKernelContext* context, Make&& make) const {
    ParallelBlocks(context, m, kQRows * 10, [&](int64_t begin, int64_t end) {
      auto row = make();
      std::vector<float> u(static_cast<size_t>(kQRows * n));
      for (int64_t r0 = begin; r0 < end; r0 += kQRows) {
        const int64_t rows = std::min(kQRows, end - r0);
        Cpu().qgemm_rows(a + r0 * k, rows, k, w4, n, ws, zero_sum, u.data());
        for (int64_t i = 0; i < rows; ++i) row(r0 + i, u.data() + i * n);
      }
    });
  }
};

Ort::Status QMatMulRowDequantize(OrtKernelContext* context, const Tensor<uint8_t>& q, const Tensor<int8_t>& w,
                                 const Tensor<float>& w_scale, const Tensor<int32_t>& w_zero_sum,
                                 const Tensor<float>& scale, const Tensor<float>& floats,
                                 const Tensor<float>& w_float, const Tensor<float>& like, Tensor<float>& y_out) {
  const std::string op = "QMatMulRowDequantize";
  QMatMul rows;
  if (auto status = rows.Read(op, q, w, w_scale, w_zero_sum); !status.IsOK()) return status;
  return Dequantize(op, context, rows, scale, floats, w_float, like, y_out);
}

Ort::Status QMatMulRowDequantizeAddLayerNorm(OrtKernelContext* context, const Tensor<uint8_t>& q,
                                             const Tensor<int8_t>& w, const Tensor<float>& w_scale,
                                             const Tensor<int32_t>& w_zero_sum, const Tensor<float>& scale,
                                             const Tensor<float>& floats, const Tensor<float>& w_float,
                                             const Tensor<float>& residual, const Tensor<float>& gamma,
                                             const Tensor<float>& beta, const Tensor<float>& epsilon,
                                             Tensor<float>& y_out) {
  const std::string op = "QMatMulRowDequantizeAddLayerNorm";
  QMatMul rows;
  if (auto status = rows.Read(op, q, w, w_scale, w_zero_sum); !status.IsOK()) return status;
  return DequantizeAddLayerNorm(op, context, rows, scale, floats, w_float, residual, gamma, beta, epsilon, y_out);
}

// QMatMulRowDequantizeAddLayerNorm, and its output rows quantized as RowQuantize would (the q, scale and
// x_float_1 of the next MatMul's input) while they are in cache.
Ort::Status QMatMulRowDequantizeAddLayerNormQuantize(
    OrtKernelContext* context, const Tensor<uint8_t>& q, const Tensor<int8_t>& w, const Tensor<float>& w_scale,
    const Tensor<int32_t>& w_zero_sum, const Tensor<float>& scale, const Tensor<float>& floats,
    const Tensor<float>& w_float, const Tensor<float>& residual, const Tensor<float>& gamma, const Tensor<float>& beta,
    const Tensor<float>& epsilon, const Tensor<float>& inv_smooth, const Tensor<int64_t>& float_channels,
    const Tensor<uint8_t>& zero_point, Tensor<float>& y_out, Tensor<uint8_t>& q_out, Tensor<float>& scale_out,
    Tensor<float>& floats_out) {
  const std::string op = "QMatMulRowDequantizeAddLayerNormQuantize";
  QMatMul rows;
  if (auto status = rows.Read(op, q, w, w_scale, w_zero_sum); !status.IsOK()) return status;
  Quantizer quantizer(inv_smooth, float_channels, zero_point);
  if (auto status = quantizer.Check(op, rows.n); !status.IsOK()) return status;
  quantizer.Allocate(rows.m, q_out, scale_out, floats_out);
  return DequantizeAddLayerNorm(op, context, rows, scale, floats, w_float, residual, gamma, beta, epsilon, y_out,
                                &quantizer);
}

Ort::Status QMatMulRowDequantizeGeluQuantize(OrtKernelContext* context, const Tensor<uint8_t>& q,
                                             const Tensor<int8_t>& w, const Tensor<float>& w_scale,
                                             const Tensor<int32_t>& w_zero_sum, const Tensor<float>& scale,
                                             const Tensor<float>& floats, const Tensor<float>& w_float,
                                             const Tensor<float>& inv_smooth, const Tensor<int64_t>& float_channels,
                                             const Tensor<uint8_t>& zero_point, Tensor<uint8_t>& q_out,
                                             Tensor<float>& scale_out, Tensor<float>& floats_out) {
  const std::string op = "QMatMulRowDequantizeGeluQuantize";
  QMatMul rows;
  if (auto status = rows.Read(op, q, w, w_scale, w_zero_sum); !status.IsOK()) return status;
  return DequantizeGeluQuantize(op, context, rows, scale, floats, w_float, inv_smooth, float_channels, zero_point,
                                q_out, scale_out, floats_out);
}

}  // namespace
