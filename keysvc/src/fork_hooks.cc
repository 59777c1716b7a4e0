#include "fork_hooks.h"

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <vector>

#include "keysvc/audit_trail.h"
#include "keysvc/issue_pool.h"
#include "keysvc/ring_store.h"
#include "keysvc/key_deriver.h"
#include "keysvc/maintenance.h"
#include "keysvc/session_key_cache.h"
#include "keysvc/token_gateway.h"
#include "keysvc/log.h"
#include "keysvc/ticket_key_service.h"

namespace keysvc {

namespace {
// Held from prepare() to parent()/child(), so no service comes or goes during a fork.
// (Unlocked in the child by the forking thread, as glibc does with its own locks.)
std::mutex& registry_mutex() {
  static auto* m = new std::mutex();  // never destroyed: handlers may run during exit
  return *m;
}
std::vector<TicketKeyService*>& registry() {
  static auto* services = new std::vector<TicketKeyService*>();
  return *services;
}
}  // namespace

void ForkHooks::add(TicketKeyService* service) {
  static std::once_flag installed;
  std::call_once(installed, [] { pthread_atfork(&ForkHooks::prepare, &ForkHooks::parent, &ForkHooks::child); });
  std::lock_guard lock(registry_mutex());
  registry().push_back(service);
}

void ForkHooks::remove(TicketKeyService* service) noexcept {
  std::lock_guard lock(registry_mutex());
  auto& r = registry();
  r.erase(std::remove(r.begin(), r.end(), service), r.end());
}

void ForkHooks::prepare() noexcept {
  registry_mutex().lock();
  for (auto* s : registry()) s->pause_for_fork();
}

void ForkHooks::parent() noexcept {
  for (auto* s : registry()) s->resume_after_fork(false);
  registry_mutex().unlock();
}

void ForkHooks::child() noexcept {
  for (auto* s : registry()) s->resume_after_fork(true);
  registry_mutex().unlock();
}

// ------------------------------------------------------------ the service's side

void TicketKeyService::pause_for_fork() noexcept {
  // The maintenance thread is keysvc's one background thread: stopped, it holds no lock
  // (ours, spdlog's, the module's) and is inside no PKCS#11 call when the address space
  // is copied. (A gateway worker may still be inside a call that overran its deadline;
  // the child never uses it: reset_after_fork.)
  maintenance_->stop();
}

void TicketKeyService::resume_after_fork(bool in_child) noexcept {
  if (in_child) {
    gateway_->reset_after_fork();
    if (session_copies_) session_copies_->forget_after_fork();
    if (issue_pool_) issue_pool_->clear();
    // The parent's epoch keys read as zeros here (MADV_WIPEONFORK): the child derives its own.
    deriver_->epoch_keys().clear();
    // The audit trail is the parent's: its writer thread is not here (closing it at exit
    // would wait for it for ever), and a child appending to the same file would fork its
    // hash chain. Not carried into children, and said once per child.
    if (audit_) {
      (void)audit_.release();
      try {
        logger()->warn("[audit] is not recorded in forked process {}: to audit each worker, open keysvc after "
                       "fork with {{pid}} in audit.path, as the nginx module does",
                       static_cast<long>(::getpid()));
      } catch (...) {
      }
    }
    // The module started afresh in a new generation (hsm::Module::reinitialize_after_fork):
    // the parent's key handles are void here. Read them again (this process's own handles
    // and copies) before the child serves, so its first handshakes do not wait for that
    // scan. After the audit trail is gone: ring listeners would record into it.
    rings_->scan();
  }
  try {
    maintenance_->start();
  } catch (const std::exception& e) {  // out of memory or threads: nothing sensible left to do
    logger()->critical("cannot restart keysvc after fork: {}", e.what());
    std::terminate();
  }
}

}  // namespace keysvc
