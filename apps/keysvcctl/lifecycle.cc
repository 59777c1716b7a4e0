#include "lifecycle.h"

#include "keysvc/token_store.h"

namespace keysvcctl {

namespace {
keysvc::KeyRing load_ring(keysvc::TokenGateway& gateway) {
  return gateway.call([](keysvc::hsm::Session& s) { return keysvc::token_store::load(s); });
}
}  // namespace

TokenChange::TokenChange(const keysvc::Config& config, keysvc::TokenGateway& gateway, std::int64_t now)
    : gateway_(gateway), trail_(keysvc::audit::AuditTrail::open(config, keysvc::audit::Writer::kTool, &gateway)) {
  if (trail_) before_ = keysvc::audit::RingState::of(load_ring(gateway_), now);
}

TokenChange::~TokenChange() = default;  // the trail's destructor seals and closes

void TokenChange::commit(std::int64_t now) {
  if (!trail_) return;
  trail_->record_changes(before_, load_ring(gateway_), now);
  trail_->close();
}

}  // namespace keysvcctl
