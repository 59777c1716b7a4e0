// keysvcctl doctor: checks everything keysvc relies on in the configured token, and
// leaves nothing behind in it. Each check is a Finding with a verdict; doctor_command.cc
// prints them. The checks, in order:
//   module      C_GetInfo, and the profile keysvc applies (hsm/module_profile.h)
//   token       the token the URI names, its flags and session limits
//   login       the configured PIN source logs in
//   mechanism   C_GetMechanismInfo of CKM_SHA256_HMAC (sign), CKM_GENERIC_SECRET_KEY_GEN
//               (generate, 32-byte keys in its size range, in bits or bytes as the token
//               counts them) and CKM_SHA512_HMAC (rotation.derivation = 2 only)
//   keygen      a key made the way keysvc makes them, and its custody as the token reports it
//   hmac        HMAC-SHA256 with it: 32 bytes, the same input gives the same MAC
//   find        C_FindObjects by CKA_ID and label finds exactly that key
//   data        a private data object (keysvc's generation records): create, read, destroy
//   copies      session copies (C_CopyObject), used with hsm.session_copies
//   sessions    how many sessions open at once, against hsm.sessions
//   rescans     whether other processes' changes show without a re-initialise
//   leftovers   nothing of doctor's remains; keys reserved by a process that died
//   tiers       what the measured latencies mean: handshakes per second on the ticket
//               path, HSM operations per hour for rescans and rotation
// Latencies are measured over a few calls each (the median).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "keysvc/config.h"

namespace keysvcctl {

enum class Verdict { kOk, kInfo, kWarn, kFail };

struct Finding {
  std::string check;   // "mechanism", "keygen", ...
  std::string what;    // "CKM_SHA256_HMAC sign"
  Verdict verdict = Verdict::kOk;
  std::string detail;  // one line
  // Median latency of one operation in microseconds, and over how many calls (0: none).
  double median_us = 0;
  int calls = 0;
};

struct DoctorReport {
  std::vector<Finding> findings;
  // False if any check failed: keysvc cannot run on this token as configured.
  bool usable() const;
};

// Runs every check against the token `config` names. Never throws for what the token
// does (that is a finding); throws only for a config that names no module or PIN.
DoctorReport run_doctor(const keysvc::Config& config);

// "ok", "info", "WARN", "FAIL".
const char* verdict_name(Verdict v);

}  // namespace keysvcctl
