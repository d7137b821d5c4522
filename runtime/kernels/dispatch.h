// The instruction set the kernels run on, chosen once when the library first runs one (Cpu()): the
// table of one ISA's row, attention and int8 GEMM kernels. A part of kernels.cc (see there).
#pragma once

#include "attention_args.h"
#include "attention_bf16.h"
#include "qgemm.h"
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
  void (*dequantize_row)(const float*, float, const float*, int64_t, const float*, int64_t, Activation, float*);
  void (*add_layer_norm_row)(float*, const float*, int64_t, const float*, const float*, float);
  bool (*attend_head)(const AttentionArgs&, int64_t, int64_t, float*);       // fp32 operands
  bool (*attend_head_bf16)(const AttentionArgs&, int64_t, int64_t, float*);  // bf16 operands
  void (*qgemm_rows)(const uint8_t*, int64_t, int64_t, const int8_t*, int64_t, const float*, const int32_t*,
                     float*);  // at most kQRows rows
  int width;  // floats per vector: attention scratch is padded to it
  const char* isa;
};

#define EMBEDRT_TABLE(ns, width) \
  Kernels { ns::QuantizeRow, ns::DequantizeRow, ns::AddLayerNormRow, ns::AttendHead<false>, ns::AttendHead<true>, \
            generic::QGemmRows, width, #ns }

#ifdef EMBEDRT_X86
// bf16 attention with VDPBF16PS where the head size allows it, else in fp32 instructions on rounded operands.
bool AttendHeadBf16Native(const AttentionArgs& a, int64_t b, int64_t h, float* scratch) {
  return avx512_bf16::AttendHead(a, b, h, scratch) || avx512::AttendHead<true>(a, b, h, scratch);
}
#endif

// The best instruction set the CPU has, at most EMBEDRT_KERNELS_ISA ("avx512", "avx2" or "generic";
// embedrt.kernels refuses other values) when set: tests run every path on one machine, and a user can rule out a suspect one.
const Kernels& Cpu() {
  static const Kernels kernels = [] {
    const char* cap_env = std::getenv("EMBEDRT_KERNELS_ISA");
    const std::string cap = cap_env && *cap_env ? cap_env : "avx512";
#ifdef EMBEDRT_X86
    if (cap == "avx512" && __builtin_cpu_supports("avx512f")) {
      Kernels table = EMBEDRT_TABLE(avx512, 16);
      if (__builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512bf16"))
        table.attend_head_bf16 = AttendHeadBf16Native;
      if (__builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vnni"))
        table.qgemm_rows = avx512_vnni::QGemmRows;
      return table;
    }
    if ((cap == "avx512" || cap == "avx2") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      return EMBEDRT_TABLE(avx2, 8);
#endif
    return EMBEDRT_TABLE(generic, 1);
  }();
  return kernels;
}

}  // namespace
