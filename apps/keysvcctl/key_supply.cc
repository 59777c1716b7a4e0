#include "key_supply.h"

namespace keysvcctl {

namespace hsm = keysvc::hsm;

std::unique_ptr<hsm::KeyReservation> reserve_keys(const keysvc::Config& config, const hsm::Token& token,
                                                  std::size_t generations) {
  if (generations == 0 || token.profile().key_source != hsm::KeySource::kReserved) return nullptr;
  const std::size_t keys_per_generation = config.rotation.derivation == 2 ? 1 : 2;
  const std::size_t audit_key = config.audit.enabled() ? 1 : 0;
  return std::make_unique<hsm::KeyReservation>(token, keysvc::pin_source_of(config),
                                               generations * keys_per_generation + audit_key);
}

}  // namespace keysvcctl
