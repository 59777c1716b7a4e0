// Everything keysvc counts, read at once through the C++ API, for servers that export
// metrics their own way. (adapters/prometheus serves the same snapshot as Prometheus
// metrics; docs/METRICS.md lists what each number means.)
//
//   keysvc::MetricsSnapshot m = keysvc::read_metrics(*service);
//   m.service.issued, m.usage.find(name)->counters, m.hsm_calls[i].buckets ...
//
// Every counter is cumulative (never decreases): the service's and the per-key ones since
// TicketKeyService::open(), the HSM call statistics since the PKCS#11 module was loaded
// in this process (they cover every call keysvc's hsm layer made through that module:
// the ticket path, ring reloads, rotation, audit seals).
#pragma once

#include <cstddef>
#include <optional>
#include <string_view>
#include <vector>

#include "keysvc/hsm/call_stats.h"
#include "keysvc/key_name.h"
#include "keysvc/ticket_key_service.h"
#include "keysvc/usage.h"

namespace keysvc {

struct MetricsSnapshot {
  ServiceCounters service;                   // the service's own counters (ticket_key_service.h)
  UsageSnapshot usage;                       // per key name: tickets by outcome (usage.h)
  std::vector<hsm::CallSnapshot> hsm_calls;  // per PKCS#11 function called so far (call_stats.h)
  std::size_t generations = 0;               // generations in the ring the service uses now
  std::size_t refused_generations = 0;       // of them, refused (key_custody.h): never used
  std::optional<KeyName> encrypt_key;        // the generation new tickets are issued under
  std::size_t hsm_sessions = 0;              // sessions the service's pool has open on the token
  std::size_t epoch_keys = 0;                // epoch keys this process holds now (epoch_keys.h)

  // The statistics of `call`, or nullptr if it was never made.
  const hsm::CallSnapshot* hsm_call(hsm::Call call) const noexcept;
};

// Reads every counter of `service`. Makes no HSM call and takes only short locks, so it
// may run on every scrape while handshakes go on. Counters read a moment apart may be
// off by the tickets handled in between (no global lock), never by more.
MetricsSnapshot read_metrics(TicketKeyService& service);

}  // namespace keysvc
