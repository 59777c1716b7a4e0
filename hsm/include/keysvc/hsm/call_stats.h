// Statistics of the PKCS#11 calls made through one Module: per function, how many
// calls, how long they took (a latency histogram) and which CK_RV the failed ones
// returned.
//
// Every C_* call keysvc makes goes through call() below, which times it with
// steady_clock and records it in the CallStats of the module the call went to
// (Module::stats(); Session::stats() is the same object). Callers reach it through
// Module::call() / hsm::call(Session&, ...) (module.h, session.h), which add the
// module's restart gate; the checked_call() variants throw on anything but CKR_OK. Recording is on the ticket
// hot path (two C_SignInit + C_Sign per derived ticket, ~10-35 us each on SoftHSM), so
// a successful call costs two clock reads and two relaxed atomic adds on a cache line
// of its own function; only a failed call takes a mutex (to count its CK_RV).
//
// The hsm layer knows nothing of Prometheus: it exposes plain counters and buckets
// (snapshot()), and keysvc/metrics.h maps them to whatever exporter a server uses.
#pragma once

#include <p11-kit/pkcs11.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string_view>
#include <utility>
#include <vector>

#include "keysvc/hsm/error.h"

namespace keysvc::hsm {

// The PKCS#11 functions keysvc calls. kCount is not a function.
enum class Call : std::uint8_t {
  kInitialize,
  kFinalize,
  kGetSlotList,
  kGetTokenInfo,
  kInitToken,
  kInitPIN,
  kOpenSession,
  kCloseSession,
  kGetSessionInfo,
  kLogin,
  kLogout,
  kFindObjectsInit,
  kFindObjects,
  kFindObjectsFinal,
  kGetAttributeValue,
  kCreateObject,
  kCopyObject,
  kGenerateKey,
  kGenerateKeyPair,
  kDestroyObject,
  kSignInit,
  kSign,
  kGetInfo,
  kGetMechanismList,
  kGetMechanismInfo,
  kSetAttributeValue,
  kCount
};
inline constexpr std::size_t kCallCount = static_cast<std::size_t>(Call::kCount);

// The PKCS#11 name of `call`: "C_Sign".
std::string_view call_name(Call call) noexcept;

// Upper bounds of the latency buckets in nanoseconds (a call of exactly a bound's
// duration falls in that bucket), from 1 us to 2.5 s in 1-2.5-5 steps; one more,
// unbounded bucket follows the last.
inline constexpr std::array<std::uint64_t, 20> kLatencyBoundsNs = {
    1'000,       2'500,       5'000,       10'000,        25'000,        50'000,        100'000,
    250'000,     500'000,     1'000'000,   2'500'000,     5'000'000,     10'000'000,    25'000'000,
    50'000'000,  100'000'000, 250'000'000, 500'000'000,   1'000'000'000, 2'500'000'000,
};
inline constexpr std::size_t kLatencyBuckets = kLatencyBoundsNs.size() + 1;

// One function's statistics at one moment.
struct CallSnapshot {
  Call call = Call::kCount;
  std::uint64_t count = 0;     // calls made, failed ones included (= the sum of `buckets`)
  std::uint64_t total_ns = 0;  // their summed latency
  // Calls per latency bucket (not cumulative): buckets[i] took at most
  // kLatencyBoundsNs[i] and more than the bound before; the last took longer than 2.5 s.
  std::array<std::uint64_t, kLatencyBuckets> buckets{};
  // Failed calls by return value, ascending by CK_RV.
  std::vector<std::pair<CK_RV, std::uint64_t>> errors;

  std::uint64_t error_count() const noexcept;
};

class CallStats {
 public:
  CallStats() = default;
  CallStats(const CallStats&) = delete;
  CallStats& operator=(const CallStats&) = delete;

  // Records one call of `call` that took `elapsed_ns` and returned `rv` (anything but
  // CKR_OK counts as an error under that CK_RV). Safe from any thread; never throws
  // (if counting an error cannot allocate, that error goes uncounted).
  void record(Call call, std::uint64_t elapsed_ns, CK_RV rv) noexcept;

  // The statistics of one function (zeros if it was never called).
  CallSnapshot snapshot(Call call) const;
  // The statistics of every function called at least once, in enum order.
  std::vector<CallSnapshot> snapshot() const;

 private:
  // One cache line (or more) per function, so threads signing do not contend with
  // threads finding objects.
  struct alignas(64) PerCall {
    std::array<std::atomic<std::uint64_t>, kLatencyBuckets> buckets{};
    std::atomic<std::uint64_t> total_ns{0};
  };
  std::array<PerCall, kCallCount> calls_{};
  mutable std::mutex errors_mutex_;
  std::map<std::pair<Call, CK_RV>, std::uint64_t> errors_;
};

// Makes the PKCS#11 call f(args...) (any C_* function pointer of a CK_FUNCTION_LIST),
// records it in `stats` as `c`, and returns its CK_RV.
template <class F, class... Args>
CK_RV call(CallStats& stats, Call c, F f, Args&&... args) {
  const auto start = std::chrono::steady_clock::now();
  const CK_RV rv = f(std::forward<Args>(args)...);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  stats.record(c, static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count()),
               rv);
  return rv;
}

// Throws Pkcs11Error(call_name(c), rv) unless rv is CKR_OK: the checked_call() variants.
inline void throw_unless_ok(Call c, CK_RV rv) {
  if (rv != CKR_OK) throw Pkcs11Error(std::string(call_name(c)), rv);
}

// call(), then throws Pkcs11Error(call_name(c), rv) unless the call returned CKR_OK.
template <class F, class... Args>
void checked_call(CallStats& stats, Call c, F f, Args&&... args) {
  throw_unless_ok(c, call(stats, c, f, std::forward<Args>(args)...));
}

}  // namespace keysvc::hsm
