// The attention ops: Attention on padded (batch, length, hidden) rows and PackedAttention on packed
// (1, tokens, hidden) rows, each (item, head) one task on the session's threads. A part of kernels.cc
// (see there).
#pragma once

#include "attention_args.h"
#include "dispatch.h"
#include "op_support.h"
#include "vec_scalar.h"

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace {

// The precision of attention's operands, the ops' "operands" attribute: "fp32" (the default) or "bf16"
// (q, k, the weights and v rounded to bf16, products summed in fp32: simd_kernels.inc's AttendHead),
// read once when ONNX Runtime creates the kernel.
class Operands {
 public:
  Operands(const OrtApi* api, const OrtKernelInfo* info) {
    size_t size = 0;
    if (OrtStatus* missing = api->KernelInfoGetAttribute_string(info, "operands", nullptr, &size)) {
      api->ReleaseStatus(missing);
      return;
    }
    std::string value(size, '\0');
    Ort::ThrowOnError(api->KernelInfoGetAttribute_string(info, "operands", value.data(), &size));
    value.resize(size ? size - 1 : 0);  // the size counts the terminating null
    bf16_ = value == "bf16";
    if (!bf16_ && value != "fp32") unknown_ = value;
  }

  // Whether the operands are bf16; an error status for a value other than "fp32" or "bf16".
  Ort::Status Read(const std::string& op, bool& bf16) const {
    if (unknown_) return Invalid(op, "attribute operands='" + *unknown_ + "': expected 'fp32' or 'bf16'");
    bf16 = bf16_;
    return Ort::Status(nullptr);
  }

 private:
  bool bf16_ = false;
  std::optional<std::string> unknown_;
};

// Every (item, head) of `a` on the pool; `longest` is the most keys an item has.
Ort::Status RunAttention(OrtKernelContext* context, AttentionArgs& a, int64_t nb, int64_t heads, int64_t longest,
                         bool bf16) {
  const int width = Cpu().width;
  const int64_t lp = (longest + width - 1) / width * width;
  const auto attend = bf16 ? Cpu().attend_head_bf16 : Cpu().attend_head;
  const auto portable = bf16 ? generic::AttendHead<true> : generic::AttendHead<false>;
  ParallelBlocks(context, nb * heads, 1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> scratch;  // kept across heads and calls: no allocation per head
    const auto need = static_cast<size_t>(AttendScratch(a.d, lp));
    if (scratch.size() < need) scratch.resize(need);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / heads, h = task % heads;
      if (!attend(a, b, h, scratch.data())) portable(a, b, h, scratch.data());  // head size: not whole vectors
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

struct Attention {
  Attention(const OrtApi* api, const OrtKernelInfo* info) : operands(api, info) {}
  Ort::Status Compute(OrtKernelContext* context, const Tensor<float>& q, const Tensor<float>& k,
                      const Tensor<float>& v, const Tensor<float>& qkv_bias, const Tensor<float>& scale,
                      const Tensor<int64_t>& head_size, const Tensor<float>& bias,
                      std::optional<const Tensor<float>*> bias2, Tensor<float>& y_out);
  Operands operands;
};

Ort::Status Attention::Compute(OrtKernelContext* context, const Tensor<float>& q, const Tensor<float>& k,
                               const Tensor<float>& v, const Tensor<float>& qkv_bias, const Tensor<float>& scale,
                               const Tensor<int64_t>& head_size, const Tensor<float>& bias,
                               std::optional<const Tensor<float>*> bias2, Tensor<float>& y_out) {
  const std::string op = "Attention";
  bool bf16 = false;
  if (auto status = operands.Read(op, bf16); !status.IsOK()) return status;
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
  return RunAttention(context, a, nb, heads, l, bf16);
}

// A PackedAttention bias: (batch | 1, heads | 1, L | 1, L | 1) for an L of at least the longest item.
std::optional<ScoreBias> PackedBias(std::optional<const Tensor<float>*> t, int64_t nb, int64_t heads, int64_t longest) {
  if (!t.has_value() || !*t) return ScoreBias{};
  const auto s = (*t)->Shape();
  const int64_t l = s.size() == 4 ? std::max(s[2], s[3]) : 0;
  if (l < longest && !(s.size() == 4 && s[2] == 1 && s[3] == 1)) return std::nullopt;
  return ScoreBias::From(**t, nb, heads, l);
}

struct PackedAttention {
  PackedAttention(const OrtApi* api, const OrtKernelInfo* info) : operands(api, info) {}
  Ort::Status Compute(OrtKernelContext* context, const Tensor<float>& q, const Tensor<float>& k,
                      const Tensor<float>& v, const Tensor<float>& qkv_bias, const Tensor<float>& scale,
                      const Tensor<int64_t>& head_size, const Tensor<int64_t>& lengths,
                      std::optional<const Tensor<float>*> bias, std::optional<const Tensor<float>*> bias2,
                      Tensor<float>& y_out);
  Operands operands;
};

// `bias` with no data when every value an item reads is zero, as a padding mask is on packed rows
// (they have no padding): the kernel then adds nothing, instead of a row of bias per score row and
// head. The check stops at the first nonzero value, as a position bias has at once.
ScoreBias WithoutZeroMask(ScoreBias bias, int64_t nb, int64_t heads, const int64_t* lengths) {
  if (!bias.data) return bias;
  for (int64_t b = 0; b < nb; ++b)
    for (int64_t h = 0; h < (bias.sh ? heads : 1); ++h)
      for (int64_t i = 0; i < (bias.si ? lengths[b] : 1); ++i) {
        const float* row = bias.Row(b, h, i);
        if (std::any_of(row, row + (bias.per_key ? lengths[b] : 1), [](float x) { return x != 0.0f; })) return bias;
      }
  return ScoreBias{};
}

Ort::Status PackedAttention::Compute(OrtKernelContext* context, const Tensor<float>& q, const Tensor<float>& k,
                                     const Tensor<float>& v, const Tensor<float>& qkv_bias, const Tensor<float>& scale,
                                     const Tensor<int64_t>& head_size, const Tensor<int64_t>& lengths,
                                     std::optional<const Tensor<float>*> bias,
                                     std::optional<const Tensor<float>*> bias2, Tensor<float>& y_out) {
  const std::string op = "PackedAttention";
  bool bf16 = false;
  if (auto status = operands.Read(op, bf16); !status.IsOK()) return status;
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
  a.bias1 = WithoutZeroMask(*b1, nb, heads, len);
  a.bias2 = WithoutZeroMask(*b2, nb, heads, len);
  a.starts = starts.data();
  a.lengths = len;
  a.y = y_out.Allocate(q.Shape());
  return RunAttention(context, a, nb, heads, longest, bf16);
}

}  // namespace
