#include "keysvc/hsm/thread_residue.h"

#include <string.h>

namespace keysvc::hsm {

#if defined(__x86_64__) && defined(__GNUC__)

namespace {

#define KEYSVC_XMM_0_15                                                                                      \
  "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", \
      "xmm13", "xmm14", "xmm15"

__attribute__((target("avx512f"))) void clear_avx512() noexcept {
  // VZEROALL zeroes ZMM0-15 whole in 64-bit mode; it leaves ZMM16-31, which glibc's
  // EVEX/AVX-512 string functions use precisely because VZEROUPPER does not touch them.
  asm volatile(
      "vzeroall\n\t"
      "vpxord %%zmm16, %%zmm16, %%zmm16\n\tvpxord %%zmm17, %%zmm17, %%zmm17\n\t"
      "vpxord %%zmm18, %%zmm18, %%zmm18\n\tvpxord %%zmm19, %%zmm19, %%zmm19\n\t"
      "vpxord %%zmm20, %%zmm20, %%zmm20\n\tvpxord %%zmm21, %%zmm21, %%zmm21\n\t"
      "vpxord %%zmm22, %%zmm22, %%zmm22\n\tvpxord %%zmm23, %%zmm23, %%zmm23\n\t"
      "vpxord %%zmm24, %%zmm24, %%zmm24\n\tvpxord %%zmm25, %%zmm25, %%zmm25\n\t"
      "vpxord %%zmm26, %%zmm26, %%zmm26\n\tvpxord %%zmm27, %%zmm27, %%zmm27\n\t"
      "vpxord %%zmm28, %%zmm28, %%zmm28\n\tvpxord %%zmm29, %%zmm29, %%zmm29\n\t"
      "vpxord %%zmm30, %%zmm30, %%zmm30\n\tvpxord %%zmm31, %%zmm31, %%zmm31"
      :
      :
      : KEYSVC_XMM_0_15, "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm24", "xmm25",
        "xmm26", "xmm27", "xmm28", "xmm29", "xmm30", "xmm31");
}

__attribute__((target("avx"))) void clear_avx() noexcept { asm volatile("vzeroall" : : : KEYSVC_XMM_0_15); }

void clear_sse() noexcept {
  asm volatile(
      "pxor %%xmm0, %%xmm0\n\tpxor %%xmm1, %%xmm1\n\tpxor %%xmm2, %%xmm2\n\tpxor %%xmm3, %%xmm3\n\t"
      "pxor %%xmm4, %%xmm4\n\tpxor %%xmm5, %%xmm5\n\tpxor %%xmm6, %%xmm6\n\tpxor %%xmm7, %%xmm7\n\t"
      "pxor %%xmm8, %%xmm8\n\tpxor %%xmm9, %%xmm9\n\tpxor %%xmm10, %%xmm10\n\tpxor %%xmm11, %%xmm11\n\t"
      "pxor %%xmm12, %%xmm12\n\tpxor %%xmm13, %%xmm13\n\tpxor %%xmm14, %%xmm14\n\tpxor %%xmm15, %%xmm15"
      :
      :
      : KEYSVC_XMM_0_15);
}

#undef KEYSVC_XMM_0_15

enum class Level { kSse, kAvx, kAvx512 };

// libgcc's CPU check also asks the kernel (XGETBV) whether it saves the AVX and
// AVX-512 state: an instruction the kernel does not enable would fault.
Level level_of_this_cpu() noexcept {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return Level::kAvx512;
  if (__builtin_cpu_supports("avx")) return Level::kAvx;
  return Level::kSse;
}

}  // namespace

void clear_vector_registers() noexcept {
  static const Level level = level_of_this_cpu();
  switch (level) {
    case Level::kAvx512:
      clear_avx512();
      break;
    case Level::kAvx:
      clear_avx();
      break;
    case Level::kSse:
      clear_sse();
      break;
  }
}

#else

void clear_vector_registers() noexcept {}

#endif

namespace {

// Its frame lies just below the caller's, where the frames of the caller's last call
// were. explicit_bzero is never optimised away; the empty asm keeps the buffer.
__attribute__((noinline)) void zero_stack_below() noexcept {
  unsigned char below[kStackResidueBytes];
  explicit_bzero(below, sizeof below);
  asm volatile("" : : "r"(below) : "memory");
}

}  // namespace

void clear_call_residue() noexcept {
  zero_stack_below();
  clear_vector_registers();
}

}  // namespace keysvc::hsm
