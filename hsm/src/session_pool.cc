#include "keysvc/hsm/session_pool.h"

namespace keysvc::hsm {

SessionPool::SessionPool(Token token, PinSource pin, std::size_t max_sessions)
    : token_(std::move(token)), login_(std::move(pin)), max_sessions_(max_sessions == 0 ? 1 : max_sessions) {}

SessionPool::~SessionPool() = default;

SessionPool::Lease::~Lease() {
  if (pool_ != nullptr) pool_->give_back(std::move(session_));
}

void SessionPool::give_back(std::unique_ptr<Session> session) noexcept {
  std::lock_guard lock(mutex_);
  if (session) {
    idle_.push_back(std::move(session));
  } else {
    --open_;  // discarded (or moved-from) lease: its slot is free again
  }
  returned_.notify_one();
}

std::unique_ptr<Session> SessionPool::open_logged_in() {
  auto session = std::make_unique<Session>(token_, /*read_write=*/true);
  if (!session->user_logged_in()) login_.log_in(*session);
  return session;
}

SessionPool::Lease SessionPool::lease(Deadline deadline) {
  {
    std::unique_lock lock(mutex_);
    if (!returned_.wait_until(lock, deadline, [&] { return !idle_.empty() || open_ < max_sessions_; }))
      throw Error("no PKCS#11 session came back in time: all " + std::to_string(max_sessions_) +
                  " are in calls that have not returned");
    // Sessions of an earlier module generation (a Module::restart) are dead: dropped
    // without a call (~Session closes no stale handle), and their slots reused.
    const std::size_t before = idle_.size();
    std::erase_if(idle_, [](const std::unique_ptr<Session>& s) { return s->stale(); });
    open_ -= before - idle_.size();
    if (!idle_.empty()) {
      auto s = std::move(idle_.back());
      idle_.pop_back();
      return Lease(this, std::move(s));
    }
    ++open_;  // reserve the slot, then open outside the lock
  }
  try {
    return Lease(this, open_logged_in());
  } catch (...) {
    give_back(nullptr);
    throw;
  }
}

void SessionPool::warm_up() { Lease l = lease(); }

void SessionPool::forget_after_fork() noexcept {
  std::lock_guard lock(mutex_);
  for (auto& session : idle_) (void)session.release();  // intentionally leaked: see header
  idle_.clear();
  open_ = 0;
}

std::size_t SessionPool::open_sessions() const {
  std::lock_guard lock(mutex_);
  return open_;
}

}  // namespace keysvc::hsm
