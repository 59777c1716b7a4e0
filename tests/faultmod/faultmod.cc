// keysvc-faultmod: see faultmod.h for the control file and counters.
//
// Every CK_FUNCTION_LIST entry is replaced by a wrapper generated from the entry's own
// type (Wrapper<decltype(CK_FUNCTION_LIST::C_X)>), so the argument lists are never
// written out by hand and cannot drift from p11-kit's header.
#include "faultmod.h"

#include <dlfcn.h>
#include <pthread.h>
#include <p11-kit/pkcs11.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "keysvc/hsm/shared_snapshot.h"

namespace {

#define FAULTMOD_FUNCTIONS(X)                                                                                       \
  X(C_Initialize) X(C_Finalize) X(C_GetInfo) X(C_GetFunctionList) X(C_GetSlotList) X(C_GetSlotInfo)                 \
  X(C_GetTokenInfo) X(C_GetMechanismList) X(C_GetMechanismInfo) X(C_InitToken) X(C_InitPIN) X(C_SetPIN)             \
  X(C_OpenSession) X(C_CloseSession) X(C_CloseAllSessions) X(C_GetSessionInfo) X(C_GetOperationState)               \
  X(C_SetOperationState) X(C_Login) X(C_Logout) X(C_CreateObject) X(C_CopyObject) X(C_DestroyObject)                \
  X(C_GetObjectSize) X(C_GetAttributeValue) X(C_SetAttributeValue) X(C_FindObjectsInit) X(C_FindObjects)            \
  X(C_FindObjectsFinal) X(C_EncryptInit) X(C_Encrypt) X(C_EncryptUpdate) X(C_EncryptFinal) X(C_DecryptInit)         \
  X(C_Decrypt) X(C_DecryptUpdate) X(C_DecryptFinal) X(C_DigestInit) X(C_Digest) X(C_DigestUpdate) X(C_DigestKey)    \
  X(C_DigestFinal) X(C_SignInit) X(C_Sign) X(C_SignUpdate) X(C_SignFinal) X(C_SignRecoverInit) X(C_SignRecover)     \
  X(C_VerifyInit) X(C_Verify) X(C_VerifyUpdate) X(C_VerifyFinal) X(C_VerifyRecoverInit) X(C_VerifyRecover)          \
  X(C_DigestEncryptUpdate) X(C_DecryptDigestUpdate) X(C_SignEncryptUpdate) X(C_DecryptVerifyUpdate)                 \
  X(C_GenerateKey) X(C_GenerateKeyPair) X(C_WrapKey) X(C_UnwrapKey) X(C_DeriveKey) X(C_SeedRandom)                  \
  X(C_GenerateRandom) X(C_GetFunctionStatus) X(C_CancelFunction) X(C_WaitForSlotEvent)

enum FunctionIndex : int {
#define FAULTMOD_ENUM(name) k_##name,
  FAULTMOD_FUNCTIONS(FAULTMOD_ENUM)
#undef FAULTMOD_ENUM
      kFunctionCount
};

constexpr std::array<const char*, kFunctionCount> kNames = {
#define FAULTMOD_NAME(name) #name,
    FAULTMOD_FUNCTIONS(FAULTMOD_NAME)
#undef FAULTMOD_NAME
};

// Functions whose first argument is not a session handle (logout cannot apply).
bool takes_session(int f) {
  switch (f) {
    case k_C_Initialize: case k_C_Finalize: case k_C_GetInfo: case k_C_GetFunctionList: case k_C_GetSlotList:
    case k_C_GetSlotInfo: case k_C_GetTokenInfo: case k_C_GetMechanismList: case k_C_GetMechanismInfo:
    case k_C_InitToken: case k_C_OpenSession: case k_C_CloseAllSessions: case k_C_WaitForSlotEvent:
      return false;
    default:
      return true;
  }
}

struct CodeName {
  CK_RV rv;
  const char* name;
};
constexpr CodeName kCodes[] = {
    {CKR_DEVICE_ERROR, "CKR_DEVICE_ERROR"},
    {CKR_SESSION_HANDLE_INVALID, "CKR_SESSION_HANDLE_INVALID"},
    {CKR_USER_NOT_LOGGED_IN, "CKR_USER_NOT_LOGGED_IN"},
    {CKR_TOKEN_NOT_PRESENT, "CKR_TOKEN_NOT_PRESENT"},
    {CKR_DEVICE_REMOVED, "CKR_DEVICE_REMOVED"},
    {CKR_FUNCTION_FAILED, "CKR_FUNCTION_FAILED"},
    {CKR_GENERAL_ERROR, "CKR_GENERAL_ERROR"},
    {CKR_OBJECT_HANDLE_INVALID, "CKR_OBJECT_HANDLE_INVALID"},
    {CKR_KEY_HANDLE_INVALID, "CKR_KEY_HANDLE_INVALID"},
    // A token that lacks something: a mechanism, an attribute, a function.
    {CKR_MECHANISM_INVALID, "CKR_MECHANISM_INVALID"},
    {CKR_ATTRIBUTE_TYPE_INVALID, "CKR_ATTRIBUTE_TYPE_INVALID"},
    {CKR_FUNCTION_NOT_SUPPORTED, "CKR_FUNCTION_NOT_SUPPORTED"},
    // A module that kept its state over a fork (C_Initialize in the child).
    {CKR_CRYPTOKI_ALREADY_INITIALIZED, "CKR_CRYPTOKI_ALREADY_INITIALIZED"},
};

enum class Action { kReturn, kLatency, kHang, kLogout };

struct Rule {
  std::string text;  // "FUNCTION ACTION [ARG]" as counted in the stats
  Action action = Action::kReturn;
  CK_RV rv = CKR_OK;
  unsigned latency_ms = 0;
  // "times N": injections left (shared by the copies of this parse), or null: unlimited.
  std::shared_ptr<std::atomic<long>> remaining;
};

// One parse of the control file: for each function, the first rule that matches it.
struct Rules {
  std::vector<Rule> rules;
  std::array<int, kFunctionCount> by_function{};  // index into rules, or -1
};

using SteadyClock = std::chrono::steady_clock;

struct State {
  std::mutex init_mutex;
  CK_FUNCTION_LIST* real = nullptr;
  CK_FUNCTION_LIST list{};
  std::string control_path;
  std::string stats_path;

  keysvc::hsm::SharedSnapshot<const Rules> rules;  // null: no control file, or a malformed one
  std::mutex reload_mutex;                  // one reader of the control file at a time
  std::atomic<std::int64_t> next_check{0};  // steady-clock ns of the next stat()
  struct stat seen {};
  bool seen_valid = false;

  std::array<std::atomic<std::uint64_t>, kFunctionCount> calls{};
  std::atomic<std::uint64_t> injected{0};
  std::atomic<std::uint64_t> errors{0};
  std::mutex stats_mutex;
  std::map<std::string, std::uint64_t> per_rule;  // guarded by stats_mutex
  std::mutex write_mutex;                         // one writer of the stats file at a time
  std::atomic<bool> stats_dirty{false};
  std::atomic<std::int64_t> next_stats_write{0};
};

// The module's locks are held across fork(), so a child never inherits one locked by a
// thread that does not exist there (a call hanging in the parent re-reads the control
// file every 2 ms under reload_mutex: a child forked meanwhile hung in its first call).
void lock_for_fork();
void unlock_after_fork();

State& state() {
  static State* s = [] {
    auto* created = new State();  // never destroyed: calls may arrive during exit
    ::pthread_atfork(lock_for_fork, unlock_after_fork, unlock_after_fork);
    return created;
  }();
  return *s;
}

// In the order any thread nests them.
std::array<std::mutex*, 4> fork_locks() {
  State& s = state();
  return {&s.init_mutex, &s.reload_mutex, &s.write_mutex, &s.stats_mutex};
}

// The rules snapshot's own lock last: no other lock is taken while it is held. (A call
// hanging in the parent reads the rules every 2 ms: a child forked while that read held
// the lock hung in its first call, C_Initialize.)
void lock_for_fork() {
  for (std::mutex* m : fork_locks()) m->lock();
  state().rules.lock();
}

void unlock_after_fork() {
  state().rules.unlock();
  const auto locks = fork_locks();
  for (auto m = locks.rbegin(); m != locks.rend(); ++m) (*m)->unlock();
}

std::int64_t now_ns() { return SteadyClock::now().time_since_epoch().count(); }

std::shared_ptr<const Rules> parse_rules(const std::string& path, const std::string& text, std::string& error) {
  auto r = std::make_shared<Rules>();
  r->by_function.fill(-1);
  std::istringstream lines(text);
  std::string line;
  for (int number = 1; std::getline(lines, line); ++number) {
    if (auto hash = line.find('#'); hash != std::string::npos) line.erase(hash);
    std::istringstream words(line);
    std::string function, action, arg, extra;
    if (!(words >> function)) continue;
    auto fail = [&](const std::string& why) {
      error = path + ":" + std::to_string(number) + ": " + why;
      return nullptr;
    };
    if (!(words >> action)) return fail("missing action after " + function);
    Rule rule;
    if (action == "latency") {
      if (!(words >> arg)) return fail("latency needs milliseconds");
      char* end = nullptr;
      unsigned long ms = std::strtoul(arg.c_str(), &end, 10);
      if (end == arg.c_str() || *end != '\0' || ms > 600000) return fail("bad latency '" + arg + "'");
      rule.action = Action::kLatency;
      rule.latency_ms = static_cast<unsigned>(ms);
    } else if (action == "hang") {
      rule.action = Action::kHang;
    } else if (action == "logout") {
      rule.action = Action::kLogout;
    } else {
      bool known = false;
      for (const auto& c : kCodes) {
        if (action == c.name) {
          rule.rv = c.rv;
          known = true;
        }
      }
      if (!known) return fail("unknown action '" + action + "'");
    }
    rule.text = function + " " + action + (arg.empty() ? "" : " " + arg);
    if (words >> extra) {
      std::string n;
      char* end = nullptr;
      if (extra != "times" || !(words >> n)) return fail("unexpected '" + extra + "'");
      long times = std::strtol(n.c_str(), &end, 10);
      if (end == n.c_str() || *end != '\0' || times < 1) return fail("bad count '" + n + "'");
      rule.remaining = std::make_shared<std::atomic<long>>(times);
      rule.text += " times " + n;
      if (words >> extra) return fail("unexpected '" + extra + "'");
    }

    const bool prefix = function.back() == '*';
    const std::string stem = prefix ? function.substr(0, function.size() - 1) : function;
    bool matched = false;
    for (int f = 0; f < kFunctionCount; ++f) {
      const std::string name = kNames[f];
      if (prefix ? name.rfind(stem, 0) != 0 : name != stem) continue;
      if (f == k_C_GetFunctionList) continue;  // answered by this module itself
      if (rule.action == Action::kLogout && !takes_session(f)) {
        if (!prefix) return fail("logout needs a function that takes a session, not " + function);
        continue;
      }
      matched = true;
      if (r->by_function[f] < 0) r->by_function[f] = static_cast<int>(r->rules.size());
    }
    if (!matched) return fail("no PKCS#11 function matches '" + function + "'");
    r->rules.push_back(std::move(rule));
  }
  return r;
}

void write_stats(bool force);

// Re-reads the control file if it changed. `force` skips the 2 ms rate limit.
void refresh_rules(bool force) {
  State& s = state();
  if (s.control_path.empty()) return;
  const std::int64_t now = now_ns();
  if (!force && now < s.next_check.load(std::memory_order_relaxed)) return;
  std::unique_lock lock(s.reload_mutex, std::try_to_lock);
  if (!lock.owns_lock()) return;  // someone else is reading it right now
  s.next_check.store(now + 2'000'000, std::memory_order_relaxed);
  struct stat st {};
  if (::stat(s.control_path.c_str(), &st) != 0) {
    if (s.seen_valid) s.rules.store(nullptr);
    s.seen_valid = false;
    return;
  }
  if (s.seen_valid && st.st_ino == s.seen.st_ino && st.st_size == s.seen.st_size &&
      st.st_mtim.tv_sec == s.seen.st_mtim.tv_sec && st.st_mtim.tv_nsec == s.seen.st_mtim.tv_nsec)
    return;
  std::ifstream in(s.control_path);
  std::stringstream text;
  text << in.rdbuf();
  std::string error;
  auto rules = parse_rules(s.control_path, text.str(), error);
  s.rules.store(rules);
  s.seen = st;
  s.seen_valid = true;
  if (!rules) {
    s.errors.fetch_add(1);
    std::fprintf(stderr, "keysvc-faultmod: %s\n", error.c_str());
    lock.unlock();
    write_stats(/*force=*/true);
  }
}

std::string stats_text() {
  State& s = state();
  std::ostringstream out;
  out << "injected " << s.injected.load() << "\nerrors " << s.errors.load() << "\n";
  for (int f = 0; f < kFunctionCount; ++f) {
    if (auto n = s.calls[f].load(std::memory_order_relaxed)) out << "calls " << kNames[f] << " " << n << "\n";
  }
  std::lock_guard lock(s.stats_mutex);
  for (const auto& [rule, n] : s.per_rule) out << "rule " << rule << " " << n << "\n";
  return out.str();
}

// Rewrites the stats file now (`force`) or if it is stale and 20 ms have passed.
void write_stats(bool force) {
  State& s = state();
  if (s.stats_path.empty()) return;
  const std::int64_t now = now_ns();
  if (!force && (!s.stats_dirty.load(std::memory_order_relaxed) ||
                 now < s.next_stats_write.load(std::memory_order_relaxed)))
    return;
  std::unique_lock lock(s.write_mutex, std::defer_lock);
  if (force) {
    lock.lock();
  } else if (!lock.try_lock()) {
    return;  // another thread is writing it right now
  }
  s.stats_dirty.store(false);
  s.next_stats_write.store(now + 20'000'000);
  const std::string text = stats_text();
  const std::string tmp = s.stats_path + ".tmp";
  if (FILE* f = std::fopen(tmp.c_str(), "w")) {
    std::fwrite(text.data(), 1, text.size(), f);
    std::fclose(f);
    std::rename(tmp.c_str(), s.stats_path.c_str());
  }
}

void count_injection(const Rule& rule) {
  State& s = state();
  s.injected.fetch_add(1);
  {
    std::lock_guard lock(s.stats_mutex);
    ++s.per_rule[rule.text];
  }
  write_stats(/*force=*/true);
}

// The rule for function f in `rules`, or null. Valid while the caller holds `rules`.
const Rule* rule_for(const std::shared_ptr<const Rules>& rules, int f) {
  if (!rules || rules->by_function[f] < 0) return nullptr;
  return &rules->rules[static_cast<std::size_t>(rules->by_function[f])];
}

// Applies the rule for function f, if any. Returns CKR_OK to forward the call, or the
// code to return instead.
CK_RV inject(int f, CK_ULONG first_arg) {
  State& s = state();
  s.calls[f].fetch_add(1, std::memory_order_relaxed);
  s.stats_dirty.store(true, std::memory_order_relaxed);
  refresh_rules(false);
  write_stats(false);
  const auto rules = s.rules.load();
  const Rule* rule = rule_for(rules, f);
  if (rule == nullptr) return CKR_OK;
  if (rule->remaining && rule->remaining->fetch_sub(1) <= 0) return CKR_OK;  // used up
  count_injection(*rule);
  switch (rule->action) {
    case Action::kReturn:
      return rule->rv;
    case Action::kLatency:
      std::this_thread::sleep_for(std::chrono::milliseconds(rule->latency_ms));
      return CKR_OK;
    case Action::kHang:
      for (;;) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
        refresh_rules(true);
        const auto current = s.rules.load();
        const Rule* now = rule_for(current, f);
        if (now == nullptr || now->action != Action::kHang) return CKR_OK;
      }
    case Action::kLogout:
      s.real->C_Logout(first_arg);
      return CKR_USER_NOT_LOGGED_IN;
  }
  return CKR_OK;
}

template <class T>
CK_ULONG as_ulong(T value) {
  if constexpr (std::is_integral_v<T>) {
    return static_cast<CK_ULONG>(value);
  } else {
    return 0;
  }
}

template <class Fn>
struct Wrapper;

template <class First, class... Rest>
struct Wrapper<CK_RV (*)(First, Rest...)> {
  template <CK_RV (*CK_FUNCTION_LIST::*Member)(First, Rest...), int Index>
  static CK_RV call(First first, Rest... rest) {
    if (CK_RV rv = inject(Index, as_ulong(first)); rv != CKR_OK) return rv;
    return (state().real->*Member)(first, rest...);
  }
};

CK_RV get_function_list(CK_FUNCTION_LIST** out);

CK_RV load_real() {
  State& s = state();
  std::lock_guard lock(s.init_mutex);
  if (s.real != nullptr) return CKR_OK;
  const char* target = std::getenv("KEYSVC_FAULTMOD_TARGET");
  const std::string path = target && *target ? target : "/usr/lib/softhsm/libsofthsm2.so";
  void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    std::fprintf(stderr, "keysvc-faultmod: cannot load %s: %s\n", path.c_str(), ::dlerror());
    return CKR_GENERAL_ERROR;
  }
  auto get_list = reinterpret_cast<CK_C_GetFunctionList>(::dlsym(handle, "C_GetFunctionList"));
  CK_FUNCTION_LIST* real = nullptr;
  if (get_list == nullptr || get_list(&real) != CKR_OK || real == nullptr) {
    std::fprintf(stderr, "keysvc-faultmod: %s is not a PKCS#11 module\n", path.c_str());
    return CKR_GENERAL_ERROR;
  }
  if (const char* c = std::getenv("KEYSVC_FAULTMOD_CONTROL")) s.control_path = c;
  if (const char* st = std::getenv("KEYSVC_FAULTMOD_STATS")) s.stats_path = st;
  s.list.version = real->version;
#define FAULTMOD_WRAP(name) \
  s.list.name = &Wrapper<decltype(CK_FUNCTION_LIST::name)>::call<&CK_FUNCTION_LIST::name, k_##name>;
  FAULTMOD_FUNCTIONS(FAULTMOD_WRAP)
#undef FAULTMOD_WRAP
  s.list.C_GetFunctionList = &get_function_list;
  s.real = real;
  refresh_rules(true);
  return CKR_OK;
}

CK_RV get_function_list(CK_FUNCTION_LIST** out) {
  if (out == nullptr) return CKR_ARGUMENTS_BAD;
  if (CK_RV rv = load_real(); rv != CKR_OK) return rv;
  *out = &state().list;
  return CKR_OK;
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) CK_RV C_GetFunctionList(CK_FUNCTION_LIST** out) {
  return get_function_list(out);
}

__attribute__((visibility("default"))) size_t keysvc_faultmod_stats(char* buf, size_t len) {
  const std::string text = stats_text();
  if (buf != nullptr && len > 0) {
    const std::size_t n = std::min(len - 1, text.size());
    std::memcpy(buf, text.data(), n);
    buf[n] = '\0';
  }
  return text.size();
}

__attribute__((visibility("default"))) unsigned long keysvc_faultmod_injected(void) {
  return static_cast<unsigned long>(state().injected.load());
}

}  // extern "C"
