#include "keysvc/hsm/call_stats.h"

#include <algorithm>

namespace keysvc::hsm {

std::string_view call_name(Call call) noexcept {
  // In the order of enum Call.
  static constexpr std::string_view kNames[] = {
      "C_Initialize",   "C_Finalize",        "C_GetSlotList",     "C_GetTokenInfo", "C_InitToken",       "C_InitPIN",
      "C_OpenSession",  "C_CloseSession",    "C_GetSessionInfo", "C_Login",         "C_Logout",
      "C_FindObjectsInit", "C_FindObjects",  "C_FindObjectsFinal", "C_GetAttributeValue", "C_CreateObject",
      "C_CopyObject",   "C_GenerateKey",     "C_GenerateKeyPair", "C_DestroyObject", "C_SignInit", "C_Sign",
      "C_GetInfo",      "C_GetMechanismList", "C_GetMechanismInfo", "C_SetAttributeValue",
  };
  static_assert(std::size(kNames) == kCallCount, "one name per Call");
  const auto i = static_cast<std::size_t>(call);
  return i < kCallCount ? kNames[i] : std::string_view("C_?");
}

std::uint64_t CallSnapshot::error_count() const noexcept {
  std::uint64_t n = 0;
  for (const auto& [rv, calls] : errors) n += calls;
  return n;
}

void CallStats::record(Call call, std::uint64_t elapsed_ns, CK_RV rv) noexcept {
  const auto i = static_cast<std::size_t>(call);
  if (i >= kCallCount) return;
  // First bound >= elapsed: "at most the bound", Prometheus' `le`.
  const auto bucket = static_cast<std::size_t>(
      std::lower_bound(kLatencyBoundsNs.begin(), kLatencyBoundsNs.end(), elapsed_ns) - kLatencyBoundsNs.begin());
  PerCall& c = calls_[i];
  c.buckets[bucket].fetch_add(1, std::memory_order_relaxed);
  c.total_ns.fetch_add(elapsed_ns, std::memory_order_relaxed);
  if (rv == CKR_OK) return;
  try {
    std::lock_guard lock(errors_mutex_);
    ++errors_[{call, rv}];
  } catch (...) {
    // std::map could not allocate: losing one error count beats failing the caller.
  }
}

CallSnapshot CallStats::snapshot(Call call) const {
  CallSnapshot s;
  s.call = call;
  const auto i = static_cast<std::size_t>(call);
  if (i >= kCallCount) return s;
  const PerCall& c = calls_[i];
  // The count is the sum of the buckets read here, so count and buckets always agree
  // (a Prometheus histogram's _count must equal its +Inf bucket).
  for (std::size_t b = 0; b < kLatencyBuckets; ++b) {
    s.buckets[b] = c.buckets[b].load(std::memory_order_relaxed);
    s.count += s.buckets[b];
  }
  s.total_ns = c.total_ns.load(std::memory_order_relaxed);
  std::lock_guard lock(errors_mutex_);
  for (auto it = errors_.lower_bound({call, 0}); it != errors_.end() && it->first.first == call; ++it)
    s.errors.emplace_back(it->first.second, it->second);
  return s;
}

std::vector<CallSnapshot> CallStats::snapshot() const {
  std::vector<CallSnapshot> all;
  for (std::size_t i = 0; i < kCallCount; ++i) {
    CallSnapshot s = snapshot(static_cast<Call>(i));
    if (s.count > 0) all.push_back(std::move(s));
  }
  return all;
}

}  // namespace keysvc::hsm
