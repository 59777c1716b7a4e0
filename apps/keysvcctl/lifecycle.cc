#include "lifecycle.h"

#include "keysvc/token_store.h"

namespace keysvcctl {

namespace {
keysvc::KeyRing load_ring(keysvc::hsm::SessionPool& pool) {
  return pool.run([](keysvc::hsm::Session& s) { return keysvc::token_store::load(s); });
}
}  // namespace

TokenChange::TokenChange(const keysvc::Config& config, keysvc::hsm::SessionPool& pool, std::int64_t now)
    : pool_(pool), trail_(keysvc::audit::AuditTrail::open(config, keysvc::audit::Writer::kTool, &pool)) {
  if (trail_) before_ = keysvc::audit::RingState::of(load_ring(pool_), now);
}

TokenChange::~TokenChange() = default;  // the trail's destructor seals and closes

void TokenChange::commit(std::int64_t now) {
  if (!trail_) return;
  trail_->record_changes(before_, load_ring(pool_), now, pool_);
  trail_->close();
}

}  // namespace keysvcctl
