#include "keysvc/metrics.h"

#include "keysvc/hsm/module.h"
#include "keysvc/hsm/session_pool.h"
#include "keysvc/hsm/token.h"

namespace keysvc {

const hsm::CallSnapshot* MetricsSnapshot::hsm_call(hsm::Call call) const noexcept {
  for (const auto& c : hsm_calls)
    if (c.call == call) return &c;
  return nullptr;
}

MetricsSnapshot read_metrics(TicketKeyService& service) {
  MetricsSnapshot m;
  m.service = service.counters();
  m.usage = service.usage();
  hsm::SessionPool& pool = service.sessions();
  m.hsm_calls = pool.token().module()->stats().snapshot();
  m.hsm_sessions = pool.open_sessions();
  m.generations = service.ring()->generations().size();
  m.encrypt_key = service.encrypt_key_name();
  return m;
}

}  // namespace keysvc
