#include "handshake_load.h"

namespace keysvc::test {

std::string errors_text(std::initializer_list<const PhaseCounts*> phases) {
  std::string text;
  for (const PhaseCounts* c : phases)
    for (const auto& e : c->errors) text += "  " + e + "\n";
  return text;
}

HandshakeLoad::HandshakeLoad(SSL_CTX* server, int version, int threads)
    : server_(server), client_(make_client_ctx(version)), threads_(threads) {}

HandshakeLoad::~HandshakeLoad() { stop(); }

void HandshakeLoad::start() {
  phase_start_[0] = std::chrono::steady_clock::now();
  for (int i = 0; i < threads_; ++i) workers_.emplace_back([this] { run(); });
}

void HandshakeLoad::stop() {
  stopping_ = true;
  for (auto& t : workers_) t.join();
  workers_.clear();
}

int HandshakeLoad::next_phase() {
  std::lock_guard lock(mutex_);
  const int next = std::min(phase_.load() + 1, kMaxPhases - 1);
  phase_start_[next] = std::chrono::steady_clock::now();
  phase_.store(next);
  return next;
}

PhaseCounts HandshakeLoad::counts(int phase) const {
  std::lock_guard lock(mutex_);
  return counts_.at(phase);
}

void HandshakeLoad::record(int phase, const Handshake& h, bool offered, std::chrono::milliseconds took) {
  std::lock_guard lock(mutex_);
  PhaseCounts& c = counts_[phase];
  c.slowest = std::max(c.slowest, took);
  if (offered) ++c.resume_attempts;
  if (!h.ok) {
    ++c.aborted;
    if (c.errors.size() < 5) c.errors.push_back(h.error);
    return;
  }
  ++c.handshakes;
  if (h.reused) {
    ++c.resumed;
    if (!first_resumption_[phase]) first_resumption_[phase] = std::chrono::steady_clock::now();
  } else {
    ++c.full;
  }
}

void HandshakeLoad::run() {
  while (!stopping_) {
    // A phase is charged with a handshake that started in it.
    using clock = std::chrono::steady_clock;
    auto since = [](clock::time_point t) {
      return std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - t);
    };
    int phase = phase_.load();
    auto started = clock::now();
    Handshake full = handshake(server_, client_.get());
    record(phase, full, false, since(started));
    if (stopping_ || !full.ok || full.tickets.empty()) continue;
    phase = phase_.load();
    SessionPtr copy(SSL_SESSION_dup(full.tickets.front().get()));
    started = clock::now();
    Handshake again = handshake(server_, client_.get(), copy.get());
    record(phase, again, true, since(started));
  }
}

std::optional<std::chrono::milliseconds> HandshakeLoad::wait_for_resumption(int phase,
                                                                           std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    {
      std::lock_guard lock(mutex_);
      if (first_resumption_.at(phase))
        return std::chrono::duration_cast<std::chrono::milliseconds>(*first_resumption_[phase] - phase_start_[phase]);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return std::nullopt;
}

}  // namespace keysvc::test
