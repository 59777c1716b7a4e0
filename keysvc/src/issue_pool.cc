#include "keysvc/issue_pool.h"

#include "keysvc/ticket_key_service.h"

namespace keysvc {

IssueKeyPool::IssueKeyPool(std::size_t capacity) : capacity_(capacity) {}

IssueKeyPool::~IssueKeyPool() { clear(); }

bool IssueKeyPool::take(const KeyName& name, IssueKeys& out) noexcept {
  std::unique_ptr<IssueKeys> entry;
  {
    std::lock_guard lock(mutex_);
    if (entries_.empty() || entries_.front()->name != name) return false;
    entry = std::move(entries_.front());
    entries_.pop_front();
  }
  out.name = entry->name;
  out.iv = entry->iv;
  out.keys.aes_key = entry->keys.aes_key;
  out.keys.hmac_key = entry->keys.hmac_key;
  return true;  // `entry` is wiped by TicketKeys' destructor here
}

bool IssueKeyPool::put(std::unique_ptr<IssueKeys> entry) noexcept {
  std::lock_guard lock(mutex_);
  if (!entries_.empty() && entries_.front()->name != entry->name) entries_.clear();
  if (entries_.size() >= capacity_) return false;
  entries_.push_back(std::move(entry));
  return true;
}

std::size_t IssueKeyPool::missing(const KeyName& name) const noexcept {
  std::lock_guard lock(mutex_);
  if (!entries_.empty() && entries_.front()->name != name) return capacity_;
  return capacity_ - entries_.size();
}

void IssueKeyPool::clear() noexcept {
  std::lock_guard lock(mutex_);
  entries_.clear();
}

std::size_t IssueKeyPool::size() const noexcept {
  std::lock_guard lock(mutex_);
  return entries_.size();
}

}  // namespace keysvc
