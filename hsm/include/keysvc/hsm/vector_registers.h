// The calling thread's vector registers, cleared after key bytes passed through them.
//
// Copying 32 or 64 bytes (glibc's memcpy, OpenSSL's key set-up inside EVP_*Init and
// EVP_MAC_CTX_set_params, a PKCS#11 module writing a C_Sign result) moves them through
// SSE/AVX registers, and they stay there until other code happens to overwrite them.
// A thread that then sleeps keeps them in its saved register state, which a core dump
// (gcore, the kernel's core file) and ptrace show: with glibc's AVX-512 memcpy a whole
// 32-byte per-ticket key was found in ZMM16 of idle threads of keysvc-tls-server
// (tests/interop/core_dump_test.cc). Wiping memory does not reach registers.
#pragma once

namespace keysvc::hsm {

// Zeroes the calling thread's vector registers: on x86-64 XMM/YMM/ZMM 0-15 (VZEROALL,
// or PXOR without AVX) and ZMM 16-31 where the CPU and kernel have AVX-512. Every
// vector register is caller-saved in the System V ABI, so any caller may call it.
// A few tens of cycles; nothing on other architectures.
void clear_vector_registers() noexcept;

}  // namespace keysvc::hsm
