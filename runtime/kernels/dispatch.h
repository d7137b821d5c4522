// The instruction set the kernels run on, chosen once when the library first runs one (Cpu()): the
// table of one ISA's row and attention kernels. A part of kernels.cc (see there).
#pragma once

#include "attention_args.h"
#include "vec_avx2.h"
#include "vec_avx512.h"
#include "vec_scalar.h"
#include "x86.h"

#include <cstdint>
#include <cstdlib>
#include <string>

namespace {

// The kernels for this CPU, chosen once.
struct Kernels {
  float (*quantize_row)(const float*, const float*, int64_t, float, float*, uint8_t*);
  void (*dequantize_row)(const float*, float, const float*, int64_t, const float*, int64_t, bool, float*);
  void (*add_layer_norm_row)(float*, const float*, int64_t, const float*, const float*, float);
  bool (*attend_head)(const AttentionArgs&, int64_t, int64_t, float*, float*, float*);
  int width;  // floats per vector: attention scratch is padded to it
  const char* isa;
};

#define EMBEDRT_TABLE(ns, width) \
  Kernels { ns::QuantizeRow, ns::DequantizeRow, ns::AddLayerNormRow, ns::AttendHead, width, #ns }

// The best instruction set the CPU has, at most EMBEDRT_KERNELS_ISA ("avx512", "avx2" or "generic";
// embedrt.kernels refuses other values) when set: tests run every path on one machine, and a user can rule out a suspect one.
const Kernels& Cpu() {
  static const Kernels kernels = [] {
    const char* cap_env = std::getenv("EMBEDRT_KERNELS_ISA");
    const std::string cap = cap_env && *cap_env ? cap_env : "avx512";
#ifdef EMBEDRT_X86
    if (cap == "avx512" && __builtin_cpu_supports("avx512f")) return EMBEDRT_TABLE(avx512, 16);
    if ((cap == "avx512" || cap == "avx2") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      return EMBEDRT_TABLE(avx2, 8);
#endif
    return EMBEDRT_TABLE(generic, 1);
  }();
  return kernels;
}

}  // namespace
