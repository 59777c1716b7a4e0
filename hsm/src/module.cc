#include "keysvc/hsm/module.h"

#include <dlfcn.h>

#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>
#include <thread>

#include "keysvc/hsm/error.h"

namespace keysvc::hsm {

namespace {
std::atomic<bool> g_exiting{false};
void mark_exiting() { g_exiting = true; }
std::mutex g_modules_mutex;
// Loaded modules by path. Kept for the life of the process on purpose: see module.h.
std::map<std::string, std::shared_ptr<Module>>& loaded_modules() {
  static auto* modules = new std::map<std::string, std::shared_ptr<Module>>();
  return *modules;
}
}  // namespace

Module::Module(std::string path, void* handle, CK_FUNCTION_LIST* fn)
    : path_(std::move(path)), handle_(handle), fn_(fn) {}

std::shared_ptr<Module> Module::load(const std::string& path) {
  std::lock_guard lock(g_modules_mutex);
  auto& modules = loaded_modules();
  if (auto it = modules.find(path); it != modules.end()) return it->second;

  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* why = dlerror();
    throw ConfigError("cannot load PKCS#11 module " + path + ": " + (why ? why : "unknown error"));
  }
  auto get_list = reinterpret_cast<CK_C_GetFunctionList>(dlsym(handle, "C_GetFunctionList"));
  if (get_list == nullptr) {
    dlclose(handle);
    throw ConfigError("not a PKCS#11 module (no C_GetFunctionList): " + path);
  }
  CK_FUNCTION_LIST* fn = nullptr;
  CK_RV rv = get_list(&fn);
  if (rv != CKR_OK || fn == nullptr) {
    dlclose(handle);
    throw Pkcs11Error("C_GetFunctionList", rv == CKR_OK ? CKR_GENERAL_ERROR : rv);
  }
  std::shared_ptr<Module> module(new Module(path, handle, fn));
  module->initialize();
  // Registered after the module's own exit-time destructors (dlopen, C_Initialize), so
  // it runs before them: see process_exiting().
  std::atexit(mark_exiting);
  modules.emplace(path, module);
  return module;
}

void Module::initialize() {
  CK_C_INITIALIZE_ARGS args{};
  args.flags = CKF_OS_LOCKING_OK;
  CK_RV rv = hsm::call(*stats_, Call::kInitialize, fn_->C_Initialize, &args);
  if (rv == CKR_CRYPTOKI_ALREADY_INITIALIZED) return;
  check(rv, "C_Initialize");
  initialized_by_keysvc_ = true;
}

bool Module::process_exiting() noexcept { return g_exiting; }

void Module::reinitialize_after_fork() {
  // Threads of the parent that were inside a call do not exist here: their counts
  // would keep every restart in the child waiting for them.
  in_flight_.store(0, std::memory_order_relaxed);
  // A new module instance for the child: no handle read in the parent is used here.
  generation_.fetch_add(1, std::memory_order_acq_rel);
  CK_C_INITIALIZE_ARGS args{};
  args.flags = CKF_OS_LOCKING_OK;
  CK_RV rv = hsm::call(*stats_, Call::kInitialize, fn_->C_Initialize, &args);
  if (rv == CKR_CRYPTOKI_ALREADY_INITIALIZED) {
    // The module did not notice the fork and kept the parent's state (sessions, logins,
    // locks held by threads that do not exist here): start it afresh.
    hsm::call(*stats_, Call::kFinalize, fn_->C_Finalize, nullptr);
    rv = hsm::call(*stats_, Call::kInitialize, fn_->C_Initialize, &args);
  }
  if (rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) check(rv, "C_Initialize");
}

bool Module::enter_when_open() const noexcept {
  const auto deadline = std::chrono::steady_clock::now() + kGateWait;
  while (std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::microseconds(500));
    if (in_flight_.load(std::memory_order_acquire) & kClosed) continue;
    if ((in_flight_.fetch_add(1, std::memory_order_acquire) & kClosed) == 0) return true;
    leave();
  }
  return false;
}

bool Module::only_user() const noexcept { return initialized_by_keysvc_ && !other_users_; }

bool Module::restart(std::chrono::milliseconds max_wait) {
  std::lock_guard lock(restart_mutex_);
  if (!only_user()) return false;
  // Close the gate, then wait for the calls already past it. A call that hangs in the
  // module keeps its thread there: finalizing under it is undefined, so give up.
  in_flight_.fetch_or(kClosed, std::memory_order_acq_rel);
  const auto deadline = std::chrono::steady_clock::now() + max_wait;
  while ((in_flight_.load(std::memory_order_acquire) & ~kClosed) != 0) {
    if (std::chrono::steady_clock::now() >= deadline) {
      in_flight_.fetch_and(~kClosed, std::memory_order_acq_rel);
      return false;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  // Bumped before the gate reopens: every call made after it sees the new generation.
  generation_.fetch_add(1, std::memory_order_acq_rel);
  struct Reopen {
    std::atomic<std::uint64_t>& gate;
    ~Reopen() { gate.fetch_and(~kClosed, std::memory_order_acq_rel); }
  } reopen{in_flight_};
  hsm::call(*stats_, Call::kFinalize, fn_->C_Finalize, nullptr);
  // initialized_by_keysvc_ stays set: keysvc finalized the module, so it is still its
  // only user even if this C_Initialize fails, and a later restart may try again.
  initialize();
  return true;
}

bool Module::may_rescan_tokens() const {
  return only_user() && stats_->snapshot(Call::kOpenSession).count == 0;
}

bool Module::rescan_tokens() {
  if (!may_rescan_tokens()) return false;
  // No session exists, so no call can be in flight for long: the wait is a formality.
  return restart(std::chrono::seconds(1));
}

std::vector<CK_SLOT_ID> Module::slots_with_token() const {
  CK_ULONG count = 0;
  checked_call(*this, Call::kGetSlotList, fn_->C_GetSlotList, CK_TRUE, nullptr, &count);
  std::vector<CK_SLOT_ID> slots(count);
  if (count > 0) checked_call(*this, Call::kGetSlotList, fn_->C_GetSlotList, CK_TRUE, slots.data(), &count);
  slots.resize(count);
  return slots;
}

}  // namespace keysvc::hsm
