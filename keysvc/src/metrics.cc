#include "keysvc/metrics.h"

#include "keysvc/key_deriver.h"
#include "keysvc/token_gateway.h"

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
  TokenGateway& gateway = service.gateway();
  m.hsm_calls = gateway.call_stats().snapshot();
  m.hsm_sessions = gateway.open_sessions();
  m.generations = service.ring()->generations().size();
  m.encrypt_key = service.encrypt_key_name();
  m.epoch_keys = service.deriver().epoch_keys().size();
  return m;
}

}  // namespace keysvc
