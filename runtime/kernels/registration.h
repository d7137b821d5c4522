// The library's two exported functions: RegisterCustomOps, which ONNX Runtime calls when it loads the
// library, adds every op to the "ai.embedrt" domain; EmbedrtKernelIsa names the instruction set the
// kernels run on. A part of kernels.cc (see there). The ops, inputs -> outputs:
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
//   Both attention ops take the attribute operands = "fp32" (default) or "bf16": the two products'
//       operands, (q' * scale, k', the weights before normalization, v), rounded to bf16 and summed in fp32
//   PackRows(x, attention_mask) -> packed, lengths: the (batch, length, hidden) rows of real tokens,
//       one after another as (1, tokens, hidden), and each item's token count. The mask must be
//       right-padded (ones, then zeros), as embedrt's engine pads
//   UnpackRows(packed, attention_mask) -> x: back to (batch, length, hidden), zeros at padding
//   SumRows(packed, attention_mask) -> sums: each item's rows added in order, (batch, hidden)
//   QMatMulRowDequantize(q, w, w_scale, w_zero_sum, scale, x_float_1, w_float, like) -> y, and likewise
//   QMatMulRowDequantizeAddLayerNorm and QMatMulRowDequantizeGeluQuantize: the three above with the int8
//       GEMM before them, y_int = (q @ w - w_zero_sum) * w_scale, q u8 (m, k), w s8 packed (k / 4, n, 4)
//   QMatMulRowDequantizeAddLayerNormQuantize(the inputs of QMatMulRowDequantizeAddLayerNorm, inv_smooth,
//       float_channels, zero_point) -> y, q, scale, x_float_1: its y, and RowQuantize's outputs of y
//   BiasAddLayerNorm(x, bias, residual, gamma, beta, epsilon) -> LayerNorm(x + bias + residual)
//   BiasGelu(x, bias) -> GELU(x + bias)
// (the last two, with Attention, make the fp32_fused graph: fp32 arithmetic, one pass per row)
#pragma once

#include "attention_ops.h"
#include "bias_ops.h"
#include "dispatch.h"
#include "op_support.h"
#include "packing_ops.h"
#include "qgemm_ops.h"
#include "quantize_ops.h"

#include <cstdint>
#include <memory>
#include <mutex>

namespace {

// The oldest ONNX Runtime C API this library asks for (onnxruntime 1.20, pyproject's floor).
constexpr uint32_t kOrtApiVersion = 20;

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
      Op{CreateLiteCustomOp("QMatMulRowDequantize", kCpu, QMatMulRowDequantize)},
      Op{CreateLiteCustomOp("QMatMulRowDequantizeAddLayerNorm", kCpu, QMatMulRowDequantizeAddLayerNorm)},
      Op{CreateLiteCustomOp("QMatMulRowDequantizeGeluQuantize", kCpu, QMatMulRowDequantizeGeluQuantize)},
      Op{CreateLiteCustomOp("QMatMulRowDequantizeAddLayerNormQuantize", kCpu, QMatMulRowDequantizeAddLayerNormQuantize)},
      Op{CreateLiteCustomOp<Attention>("Attention", kCpu)},
      Op{CreateLiteCustomOp<PackedAttention>("PackedAttention", kCpu)},
      Op{CreateLiteCustomOp("PackRows", kCpu, PackRows)},
      Op{CreateLiteCustomOp("UnpackRows", kCpu, UnpackRows)},
      Op{CreateLiteCustomOp("SumRows", kCpu, SumRows)},
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
