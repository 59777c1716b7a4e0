// What key bytes leave behind in the calling thread after they were used: copies in its
// vector registers and in stack frames of calls that have returned. A thread that then
// sleeps keeps both, and a core dump (gcore, the kernel's core file) or ptrace shows
// them; wiping keysvc's own buffers reaches neither.
//
// Registers: copying 32 or 64 bytes (glibc's memcpy, OpenSSL's key set-up inside
// EVP_*Init and EVP_MAC_CTX_set_params, a PKCS#11 module writing a C_Sign result) moves
// them through SSE/AVX registers, where they stay until other code overwrites them. With
// glibc's AVX-512 memcpy a whole 32-byte per-ticket key was found in ZMM16 of idle
// threads of keysvc-tls-server (tests/interop/core_dump_test.cc).
//
// Stack: a PKCS#11 module computes in its own frames, on the caller's thread, and may
// leave what it computed there: the epoch key was found on the stack of the
// keysvc-tls-server thread that made the C_Sign deriving it, although keysvc hands
// C_Sign its secure buffer (the copy is the module's or its crypto library's).
#pragma once

namespace keysvc::hsm {

// Zeroes the calling thread's vector registers: on x86-64 XMM/YMM/ZMM 0-15 (VZEROALL,
// or PXOR without AVX) and ZMM 16-31 where the CPU and kernel have AVX-512. Every
// vector register is caller-saved in the System V ABI, so any caller may call it.
// A few tens of cycles; nothing on other architectures.
void clear_vector_registers() noexcept;

// Zeroes the kStackResidueBytes of stack below the caller's frame, where the frames of
// a call it just made were, then the vector registers. For after each PKCS#11 call
// (HsmGuard). About 900 cycles (0.4 us at 2.3 GHz).
inline constexpr unsigned kStackResidueBytes = 32 * 1024;
void clear_call_residue() noexcept;

}  // namespace keysvc::hsm
