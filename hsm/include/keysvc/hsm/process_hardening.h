// Keeping a process that holds key material from being dumped or traced.
//
// Secure memory (secure_memory.h) already stays out of core dumps; the rest of the heap
// does not (OpenSSL's key schedules of per-ticket keys, the PKCS#11 module's own state).
// harden_process(false) makes the process non-dumpable (prctl(PR_SET_DUMPABLE, 0)): the
// kernel writes no core file for it, other processes of the same user cannot ptrace it
// (gdb -p, strace -p) or read its /proc/PID/mem, environ and fd links; root (with
// CAP_SYS_PTRACE) still can. It also sets the soft RLIMIT_CORE to 0, for core handlers
// that look at the limit. Costs: no core dump to debug a crash, no attaching a debugger
// as the service's user. keysvc calls it when a service opens, unless the configuration
// asks for core dumps ([process] core_dumps = true; docs/SECURITY.md).
#pragma once

namespace keysvc::hsm {

// What harden_process() left in force.
struct ProcessHardening {
  bool dumpable = true;        // prctl(PR_GET_DUMPABLE) afterwards
  bool core_limit_zero = false;  // the soft RLIMIT_CORE is 0
};

// With allow_core_dumps false: PR_SET_DUMPABLE 0 and soft RLIMIT_CORE 0. With true:
// changes nothing (a process someone made non-dumpable stays so). Idempotent; never
// throws; returns the state afterwards.
ProcessHardening harden_process(bool allow_core_dumps) noexcept;

}  // namespace keysvc::hsm
