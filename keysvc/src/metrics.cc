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
  auto ring = service.ring();
  m.generations = ring->generations().size();
  for (const auto& g : ring->generations()) m.refused_generations += g.refused.empty() ? 0 : 1;
  m.encrypt_key = service.encrypt_key_name();
  m.epoch_keys = service.deriver().epoch_keys().size();
  return m;
}

}  // namespace keysvc
