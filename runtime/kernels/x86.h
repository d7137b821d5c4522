// EMBEDRT_X86, defined on x86-64 (with the intrinsics) only: it guards the AVX2 and AVX-512 code so
// that other CPUs build the generic kernels alone. A part of kernels.cc (see there).
#pragma once

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define EMBEDRT_X86 1
#endif
