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
