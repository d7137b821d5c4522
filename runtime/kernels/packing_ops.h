// PackRows and UnpackRows: padded (batch, length, hidden) rows to packed (1, tokens, hidden) rows, the
// real tokens only, and back; SumRows: each item's packed rows summed. A part of kernels.cc (see there).
#pragma once

#include "op_support.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace {

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

// The item lengths of packed rows (1, tokens, hidden) from their right-padded attention_mask, checked
// against the rows.
Ort::Status PackedLengths(const std::string& op, const Tensor<float>& packed, const Tensor<int64_t>& mask,
                          std::vector<int64_t>& lengths) {
  const auto s = packed.Shape();
  if (s.size() != 3 || s[0] != 1 || mask.Shape().size() != 2)
    return Invalid(op, "packed must be (1, tokens, hidden) and attention_mask (batch, length)");
  int64_t tokens = 0;
  if (auto status = MaskLengths(op, mask, lengths, tokens); !status.IsOK()) return status;
  if (tokens != s[1])
    return Invalid(op, "attention_mask has " + std::to_string(tokens) + " tokens but packed has " + std::to_string(s[1]) + " rows");
  return Ort::Status(nullptr);
}

Ort::Status UnpackRows(const Tensor<float>& packed, const Tensor<int64_t>& mask, Tensor<float>& x_out) {
  std::vector<int64_t> lengths;
  if (auto status = PackedLengths("UnpackRows", packed, mask, lengths); !status.IsOK()) return status;
  const int64_t h = packed.Shape()[2], l = mask.Shape()[1];
  float* x = x_out.Allocate({static_cast<int64_t>(lengths.size()), l, h});
  const float* from = packed.Data();
  for (size_t b = 0; b < lengths.size(); ++b) {
    float* row = x + static_cast<int64_t>(b) * l * h;
    std::copy_n(from, lengths[b] * h, row);
    from += lengths[b] * h;
    std::fill(row + lengths[b] * h, row + l * h, 0.0f);
  }
  return Ort::Status(nullptr);
}

// Each item's rows added in order, (batch, hidden): what the last position of a CumSum along the
// sequence gives on the unpacked rows times the mask (padding adds exact zeros after the item's rows),
// to the bit, without unpacking, masking or summing the padding.
Ort::Status SumRows(const Tensor<float>& packed, const Tensor<int64_t>& mask, Tensor<float>& sums_out) {
  std::vector<int64_t> lengths;
  if (auto status = PackedLengths("SumRows", packed, mask, lengths); !status.IsOK()) return status;
  const int64_t h = packed.Shape()[2];
  float* y = sums_out.Allocate({static_cast<int64_t>(lengths.size()), h});
  const float* from = packed.Data();
  for (size_t b = 0; b < lengths.size(); ++b) {
    float* sum = y + static_cast<int64_t>(b) * h;
    std::fill(sum, sum + h, 0.0f);
    for (int64_t i = 0; i < lengths[b]; ++i, from += h)
      for (int64_t j = 0; j < h; ++j) sum[j] += from[j];
  }
  return Ort::Status(nullptr);
}

}  // namespace
