// embedrt's ONNX Runtime kernel library (op domain "ai.embedrt") for the int8_rowwise_fused and
// fp32_fused graphs: the one file setup.py compiles, which includes the parts below.
//
// int8_rowwise (embedrt_export/variants/rowwise.py) quantizes each token's row on its own; in standard ONNX ops
// that takes a dozen small kernels per MatMul input and three passes over every MatMul output, each
// a separate trip through memory. These kernels do each step in one pass over a row while it is in
// cache. Where the weights' shape allows (qgemm_ops.h) the int8 GEMM is embedrt's too, its output finished
// in cache; elsewhere it is ONNX Runtime's (com.microsoft.MatMulIntegerToFloat). The
// exporter's rewrite is embedrt_export/variants/rowwise.py + kernel_fusion.py; the runtime registers this
// library through embedrt/kernels.py.
//
// Every row is computed from that row alone, so an embedding never depends on its batch. The
// kernels are written once (simd_kernels.inc) and built for AVX-512, AVX2 + FMA and plain C++;
// the best the CPU has is chosen when the library loads.
//
// The parts, each a header by job, in the order they build on each other:
//   op_support.h        the ONNX Runtime API as the ops use it, argument errors, ParallelBlocks
//   scalar_math.h       GELU, quantize and dequantize of one value: the tails of the vector loops
//   attention_args.h    AttentionArgs and ScoreBias, what an attention kernel reads
//   simd_kernels.inc    the row and attention loops, written once against a vector type V
//   vec_scalar.h        VecScalar and the loops built on it: the "generic" instruction set
//   x86.h               EMBEDRT_X86, the guard around the x86-only code
//   vec_avx2.h          VecAvx2 and its loops, in an "avx2,fma" target region
//   vec_avx512.h        VecAvx512 and its loops, in an "avx512f,avx2,fma" target region
//   attention_bf16.h    attention on bf16 operands with VDPBF16PS, in an "avx512bf16" target region
//   qgemm.h             the int8 GEMM of a few rows: VPDPBUSD in an "avx512vnni" target region, and portable
//   dispatch.h          Kernels and Cpu(): the instruction set chosen when the library loads (and, on
//                       AVX-512, whether bf16 attention runs on VDPBF16PS and the int8 GEMM on VPDPBUSD)
//   quantize_ops.h      RowQuantize, RowDequantize, RowDequantizeAddLayerNorm, RowDequantizeGeluQuantize
//   qgemm_ops.h         QMatMulRowDequantize*: the int8 GEMM and one of those epilogues in one op
//   bias_ops.h          BiasAddLayerNorm, BiasGelu
//   packing_ops.h       PackRows, UnpackRows
//   attention_ops.h     Attention, PackedAttention
//   registration.h      RegisterCustomOps and EmbedrtKernelIsa, the only exported symbols; it lists
//                       every op's inputs and outputs
//
// Why one compilation unit: every part defines its code in an anonymous namespace, so the library
// exports the two functions of registration.h and nothing else, and the compiler sees every call
// whole: the ops inline Cpu() and the row helpers, and each instruction set's loops are compiled inside
// their header's target region. Separate .cc files would need external linkage for what the ops share,
// a header of declarations, and calls across units that the compiler cannot inline without link-time
// optimization. The headers are parts of this file, not an interface: include them nowhere else.
#include "op_support.h"
#include "scalar_math.h"
#include "attention_args.h"
#include "vec_scalar.h"
#include "x86.h"
#include "vec_avx2.h"
#include "vec_avx512.h"
#include "attention_bf16.h"
#include "qgemm.h"
#include "dispatch.h"
#include "quantize_ops.h"
#include "qgemm_ops.h"
#include "bias_ops.h"
#include "packing_ops.h"
#include "attention_ops.h"
#include "registration.h"
