// What every op uses: the ONNX Runtime API (Tensor), argument errors, blocks of rows on the
// session's intra-op threads, and row counts. A part of kernels.cc (see there).
#pragma once

#define ORT_API_MANUAL_INIT
#include "onnxruntime_cxx_api.h"
#include "onnxruntime_lite_custom_op.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

using Ort::Custom::Tensor;

namespace {

// An invalid-argument status: "ai.embedrt.<op>: <what>".
Ort::Status Invalid(const std::string& op, const std::string& what) {
  return Ort::Status(("ai.embedrt." + op + ": " + what).c_str(), ORT_INVALID_ARGUMENT);
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

}  // namespace
