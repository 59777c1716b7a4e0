#include "lifecycle.h"

#include "keysvc/token_store.h"

namespace keysvcctl {

namespace {
keysvc::KeyRing load_ring(keysvc::TokenGateway& gateway, const keysvc::CustodyRule& rule) {
  return gateway.call([rule](keysvc::hsm::Session& s) { return keysvc::token_store::load(s, rule); });
}
}  // namespace

TokenChange::TokenChange(const keysvc::Config& config, keysvc::TokenGateway& gateway, std::int64_t now)
    : gateway_(gateway), custody_(keysvc::custody_rule_of(config)), trail_(keysvc::audit::AuditTrail::open(config, keysvc::audit::Writer::kTool, &gateway)) {
  if (trail_) before_ = keysvc::audit::RingState::of(load_ring(gateway_, custody_), now);
}

TokenChange::~TokenChange() = default;  // the trail's destructor seals and closes

void TokenChange::commit(std::int64_t now) {
  if (!trail_) return;
  trail_->record_changes(before_, load_ring(gateway_, custody_), now);
  trail_->close();
}

}  // namespace keysvcctl
