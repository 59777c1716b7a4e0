#include "keysvc/epoch_keys.h"

namespace keysvc {

EpochKeyCache::Key EpochKeyCache::find(const KeyName& name, std::int64_t epoch) const {
  std::lock_guard lock(mutex_);
  auto it = keys_.find({name, epoch});
  return it == keys_.end() ? nullptr : it->second;
}

void EpochKeyCache::put(const KeyName& name, std::int64_t epoch, Key key) {
  std::lock_guard lock(mutex_);
  keys_[{name, epoch}] = std::move(key);
}

void EpochKeyCache::retain(const std::function<bool(const KeyName&, std::int64_t)>& keep) {
  std::map<std::pair<KeyName, std::int64_t>, Key> dropped;  // released outside the lock
  std::lock_guard lock(mutex_);
  for (auto it = keys_.begin(); it != keys_.end();) {
    if (keep(it->first.first, it->first.second)) {
      ++it;
    } else {
      dropped.insert(keys_.extract(it++));
    }
  }
}

void EpochKeyCache::clear() noexcept {
  std::map<std::pair<KeyName, std::int64_t>, Key> dropped;
  std::lock_guard lock(mutex_);
  dropped.swap(keys_);
}

std::size_t EpochKeyCache::size() const {
  std::lock_guard lock(mutex_);
  return keys_.size();
}

}  // namespace keysvc
