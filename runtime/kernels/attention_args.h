// What an attention kernel reads: AttentionArgs (the rows, the projections' biases, packed or padded
// items) and ScoreBias (a bias added to the scores). A part of kernels.cc (see there).
#pragma once

#include "op_support.h"

#include <cstdint>
#include <optional>

namespace {

constexpr int kRows = 8;  // attention query rows per block: each key or value load feeds kRows FMAs

// The floats of scratch one (item, head) of attention needs, head size d, keys padded to lp.
constexpr int64_t AttendScratch(int64_t d, int64_t lp) { return (2 * d + kRows) * lp + kRows * d; }

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

}  // namespace
