// What a core dump of a running keysvc-tls-server gives away (docs/SECURITY.md): made
// with gdb's gcore while the server is inside C_Login (held there by keysvc-faultmod's
// "C_Login hang", so the PIN is in use) and again after real handshakes, it must hold
// neither the token's PIN (read from a file, or from an env: variable) nor any per-ticket
// key of the tickets the clients got (whole or either half: a register of a sleeping
// thread, which the core saves, holds 16, 32 or 64 bytes), nor, in the epoch tier, the
// epoch key they came from, and none of the process's secure memory (MADV_DONTDUMP) may
// be in it. The scan is shown to work on public bytes that are in memory (the
// generation's key name).
//
// Every test name contains "interop" so `ctest -R interop` selects them.
#include <elf.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <span>
#include <thread>
#include <sstream>
#include <string>
#include <vector>

#include "fault_control.h"
#include "keysvc/derivation.h"
#include "keysvc/hsm/object.h"
#include "keysvc/hsm/secret_key.h"
#include "keysvc/ticket_rules.h"
#include "keysvc/token_store.h"
#include "known_secrets.h"
#include "process.h"
#include "test_helpers.h"
#include "tls_server_process.h"

namespace keysvc {
namespace {

using namespace std::chrono_literals;
using test::ByteVec;
using test::TestToken;
using test::TlsServerProcess;
using test::TlsVersion;

struct Range {
  std::uint64_t begin = 0, end = 0;
};

// The generation the server will use, made by keysvc's own token layout. The test cannot
// know its keys (keysvc refuses keys imported with a known value: key_custody.h), but it
// can have the token compute the same per-ticket keys the server derives (it holds the
// PIN and the keys may sign).
struct KnownGeneration {
  KeyName name{};
  bool epoch_tier = false;
};
constexpr std::int64_t kEpochSeconds = 300;
// The strict tier (derivation 1: two token keys) or the epoch tier (5-minute epochs).
KnownGeneration make_known_generation(bool epoch_tier = false) {
  TestToken::get().clear();
  auto s = test::user_session();
  const std::int64_t now = std::time(nullptr);
  const token_store::KeyOptions options =
      epoch_tier ? token_store::KeyOptions{.derivation = 3, .epoch_seconds = kEpochSeconds} : token_store::KeyOptions{};
  return {token_store::create_generation(*s, Schedule{now - 60, now - 60, now + 3600, now + 7200}, options).name,
          epoch_tier};
}

// The strict tier's keys of one ticket (derivation 1): HMACs of the generation's two
// token keys over the ticket's name and IV.
void strict_tier_keys(hsm::Session& s, const KeyName& name, const Iv& iv, std::vector<ByteVec>& keys) {
  auto key_of = [&](const char* label) {
    auto found = hsm::find_objects(
        s, {.object_class = CKO_SECRET_KEY, .id = hsm::Bytes(name.begin(), name.end()), .label = label});
    if (found.size() != 1) throw std::runtime_error(std::string("no single ") + label + " key in the token");
    return found.front();
  };
  for (auto [label, key] : {std::pair{kAesKeyLabel, key_of(token_store::kEncKeyLabel)},
                            std::pair{kHmacKeyLabel, key_of(token_store::kMacKeyLabel)}}) {
    DerivationMessage m = derivation_message(label, name, iv);
    std::array<std::uint8_t, hsm::kHmacSha256Bytes> out{};
    hsm::hmac_sha256(s, key, m, out);
    keys.emplace_back(out.begin(), out.end());
  }
}

// The epoch tier's keys of one ticket: the epoch key (from the token, as the server
// derives it) and the ticket's AES and HMAC keys from it.
void epoch_tier_keys(hsm::Session& s, const KeyName& name, const Iv& iv, std::vector<ByteVec>& keys) {
  const KeyRing ring = token_store::load(s);
  const Generation* g = ring.find(name);
  if (g == nullptr || !g->epoch_tier()) throw std::runtime_error("no epoch-tier generation under the known name");
  EpochKey epoch_key;
  derive_epoch_key(s, *g, epoch_of_iv(iv, epoch_of(std::time(nullptr), kEpochSeconds)), epoch_key);
  TicketKeys ticket;
  derive_ticket_keys_from_epoch(epoch_key, name, iv, ticket);
  keys.emplace_back(epoch_key.span().begin(), epoch_key.span().end());
  keys.emplace_back(ticket.aes_key.begin(), ticket.aes_key.end());
  keys.emplace_back(ticket.hmac_key.begin(), ticket.hmac_key.end());
}

// The keys of the ticket in an s_client session file (key_name(16) | iv(16) | ...),
// computed outside the server: its AES and HMAC keys, after its epoch key in the epoch
// tier.
std::vector<ByteVec> ticket_keys(const std::string& session_file, const KnownGeneration& g) {
  FILE* f = std::fopen(session_file.c_str(), "r");
  if (f == nullptr) throw std::runtime_error("cannot read " + session_file);
  SSL_SESSION* session = PEM_read_SSL_SESSION(f, nullptr, nullptr, nullptr);
  std::fclose(f);
  if (session == nullptr) throw std::runtime_error("no session in " + session_file);
  const unsigned char* tick = nullptr;
  size_t len = 0;
  SSL_SESSION_get0_ticket(session, &tick, &len);
  std::vector<ByteVec> keys;
  if (len >= 32 && std::equal(g.name.begin(), g.name.end(), tick)) {
    Iv iv{};
    std::copy(tick + 16, tick + 32, iv.begin());
    // Found again in this session: SoftHSM forgets object handles once a process has no
    // session left on the token.
    auto s = test::user_session();
    if (g.epoch_tier) epoch_tier_keys(*s, g.name, iv, keys);
    else strict_tier_keys(*s, g.name, iv, keys);
    for (const auto& k : keys) test::remember_secret_bytes(k);
  }
  SSL_SESSION_free(session);
  return keys;
}

// The process's mappings that are left out of core dumps (VmFlags "dd").
std::vector<Range> dontdump_ranges(pid_t pid) {
  std::ifstream smaps("/proc/" + std::to_string(pid) + "/smaps");
  std::vector<Range> out;
  Range current;
  std::string line;
  while (std::getline(smaps, line)) {
    unsigned long lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2) {
      current = {lo, hi};
    } else if (line.rfind("VmFlags:", 0) == 0 && (line + " ").find(" dd ") != std::string::npos) {
      out.push_back(current);
    }
  }
  return out;
}

// The memory ranges whose bytes the core file holds (PT_LOAD segments with file data).
std::vector<Range> dumped_ranges(const std::string& core) {
  std::vector<Range> out;
  Elf64_Ehdr eh{};
  if (core.size() < sizeof eh) return out;
  std::memcpy(&eh, core.data(), sizeof eh);
  for (int i = 0; i < eh.e_phnum; ++i) {
    Elf64_Phdr ph{};
    const std::size_t at = eh.e_phoff + static_cast<std::size_t>(i) * eh.e_phentsize;
    if (at + sizeof ph > core.size()) break;
    std::memcpy(&ph, core.data() + at, sizeof ph);
    if (ph.p_type == PT_LOAD && ph.p_filesz > 0) out.push_back({ph.p_vaddr, ph.p_vaddr + ph.p_filesz});
  }
  return out;
}

bool contains(const std::string& haystack, std::span<const std::uint8_t> needle) {
  return haystack.find(std::string_view(reinterpret_cast<const char*>(needle.data()), needle.size())) !=
         std::string::npos;
}

// A core of the normal build's server is some tens of MiB; anything far larger is not
// read into memory.
constexpr std::uintmax_t kMaxCoreBytes = std::uintmax_t{2} << 30;

// gcore of the running server; returns the core file's bytes (and removes the file).
std::string core_of(pid_t pid, const std::string& dir) {
  const std::string prefix = dir + "/core";
  auto r = test::run({"gcore", "-o", prefix, std::to_string(pid)}, "", 120s);
  EXPECT_EQ(r.exit_code, std::optional<int>(0)) << test::describe(r);
  const std::string path = prefix + "." + std::to_string(pid);
  std::error_code ec;
  const std::uintmax_t size = std::filesystem::file_size(path, ec);
  std::string core;
  if (!ec && size <= kMaxCoreBytes) core = test::read_file(path);
  EXPECT_LE(size, kMaxCoreBytes) << "a core of " << size << " bytes: not read";
  std::remove(path.c_str());
  EXPECT_GT(core.size(), 1u << 20) << "no core dump from gcore";
  return core;
}

// What a core dump of keysvc-tls-server holds is a property of the normal build. Under
// AddressSanitizer freed heap blocks wait unwiped in its quarantine, and gcore of the
// ASan-built server wrote a 45 GB core (it filled the disk); under ThreadSanitizer its
// core was a 549 GB sparse file. The sanitizer suites skip these.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define KEYSVC_SKIP_UNDER_SANITIZERS() GTEST_SKIP() << "core dumps are checked in the normal build (sanitizer build)"
#else
#define KEYSVC_SKIP_UNDER_SANITIZERS() (void)0
#endif

// Full handshakes over TLS 1.3 and 1.2 and one resumption; returns the session files.
std::vector<std::string> handshakes(int port, const std::string& tag) {
  std::vector<std::string> files;
  for (TlsVersion v : {TlsVersion::kTls13, TlsVersion::kTls12}) {
    const std::string sess = test::tls_test_dir() + "/core-" + tag + test::tls_version_name(v) + ".pem";
    auto r = test::s_client(port, v, "-sess_out", sess);
    EXPECT_EQ(r.exit_code, std::optional<int>(0)) << test::describe(r);
    files.push_back(sess);
    r = test::s_client(port, v, "-sess_in", sess);
    EXPECT_NE(r.out.find("Reused"), std::string::npos) << test::describe(r);
  }
  return files;
}

// The scan works: the key name is public and in the server's key ring (after start-up).
void expect_scan_works(const std::string& core, const KnownGeneration& g) {
  EXPECT_TRUE(contains(core, g.name)) << "the core holds no key name: the scan would prove nothing";
}

void expect_clean_core(const std::string& core, const std::vector<Range>& secure, const std::string& pin,
                       const std::vector<ByteVec>& keys, const std::string& when) {
  SCOPED_TRACE(when);
  EXPECT_FALSE(secure.empty()) << "the server has no MADV_DONTDUMP memory (secure memory)";
  EXPECT_FALSE(contains(core, test::as_bytes(pin))) << "the PIN is in the core dump";
  for (std::size_t i = 0; i < keys.size(); ++i) {
    const std::span<const std::uint8_t> key(keys[i]);
    EXPECT_FALSE(contains(core, key)) << "key #" << i << " is in the core dump";
    EXPECT_FALSE(contains(core, key.first(16))) << "the first half of key #" << i << " is in the core dump";
    EXPECT_FALSE(contains(core, key.last(16))) << "the second half of key #" << i << " is in the core dump";
  }
  for (const Range& d : dumped_ranges(core))
    for (const Range& s : secure)
      EXPECT_TRUE(d.end <= s.begin || s.end <= d.begin) << std::hex << "secure memory " << s.begin << "-" << s.end
                                                         << " is in the core (" << d.begin << "-" << d.end << ")";
}

// The test token's config with the fault module in front of SoftHSM and `pin` as the
// PIN source.
std::string write_config(const std::string& name, const std::string& pin) {
  std::ifstream in(TestToken::get().config_path());
  std::stringstream text;
  text << in.rdbuf();
  std::string s = text.str();
  for (auto [from, to] : {std::pair<std::string, std::string>{"pin = \"file:pin\"", "pin = \"" + pin + "\""},
                          {std::string("module = \"") + test::kSoftHsmModule + "\"",
                           "module = \"" + test::FaultControl::module_path() + "\""}}) {
    if (s.find(from) == std::string::npos) throw std::runtime_error("the test token's config lacks " + from);
    s.replace(s.find(from), from.size(), to);
  }
  const std::string path = TestToken::get().dir() + "/" + name;
  std::ofstream(path) << s;
  return path;
}

// Starts the server, takes a core while it is inside C_Login (with the PIN in hand),
// lets it go on, drives handshakes, takes another core; checks both.
void check_server_cores(const std::string& pin_source, const KnownGeneration& g) {
  test::FaultControl faults(TestToken::get().dir() + "/core-faults");
  faults.export_env();
  faults.set("C_Login hang\n");
  TlsServerProcess server(KEYSVC_TLS_SERVER_BIN, {.config = write_config("core.toml", pin_source), .wait = false});
  const pid_t pid = server.process().pid();
  for (int i = 0; i < 1000 && faults.stats().injected == 0; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(faults.stats().injected, 1u) << "the server never reached C_Login\n" << server.process().err();
  expect_clean_core(core_of(pid, TestToken::get().dir()), dontdump_ranges(pid), TestToken::get().pin(), {},
                    "inside C_Login");
  faults.clear();
  server.wait_until_listening();

  std::vector<ByteVec> keys;
  for (const auto& file : handshakes(server.port(), "core-"))
    for (auto& k : ticket_keys(file, g)) keys.push_back(std::move(k));
  EXPECT_EQ(keys.size(), g.epoch_tier ? 6u : 4u) << "two tickets under the known generation";
  const std::string core = core_of(pid, TestToken::get().dir());
  expect_scan_works(core, g);
  expect_clean_core(core, dontdump_ranges(pid), TestToken::get().pin(), keys, "after handshakes");
  server.stop();
}

TEST(CoreDumpInterop, HoldsNoPinNoTicketKeyAndNoSecureMemory) {
  KEYSVC_SKIP_UNDER_SANITIZERS();
  KnownGeneration g = make_known_generation();
  check_server_cores("file:pin", g);
}

// The default tier: the epoch key (derived in the token, held in secure memory) and the
// per-ticket keys the server computes from it are not in the core either.
TEST(CoreDumpInterop, EpochTierHoldsNoEpochKeyAndNoTicketKey) {
  KEYSVC_SKIP_UNDER_SANITIZERS();
  KnownGeneration g = make_known_generation(true);
  check_server_cores("file:pin", g);
}

// An env: PIN leaves the server's environment once read: not in /proc/PID/environ, not
// in the core (the initial environment block is in the dumped stack mapping).
TEST(CoreDumpInterop, EnvPinLeavesTheEnvironment) {
  KEYSVC_SKIP_UNDER_SANITIZERS();
  KnownGeneration g = make_known_generation();
  ::setenv("KEYSVC_CORE_TEST_PIN", TestToken::get().pin().c_str(), 1);
  test::FaultControl faults(TestToken::get().dir() + "/env-faults");
  faults.export_env();
  TlsServerProcess server(KEYSVC_TLS_SERVER_BIN, {.config = write_config("env.toml", "env:KEYSVC_CORE_TEST_PIN")});
  ::unsetenv("KEYSVC_CORE_TEST_PIN");
  handshakes(server.port(), "env-");
  const pid_t pid = server.process().pid();
  const std::string environ_text = test::read_file("/proc/" + std::to_string(pid) + "/environ");
  EXPECT_NE(environ_text.find("SOFTHSM2_CONF="), std::string::npos) << "environ was read";
  EXPECT_NE(environ_text.find("KEYSVC_CORE_TEST_PIN="), std::string::npos) << "the variable's name stays";
  EXPECT_EQ(environ_text.find(TestToken::get().pin()), std::string::npos) << "the PIN is still in environ";
  const std::string core = core_of(pid, TestToken::get().dir());
  expect_scan_works(core, g);
  expect_clean_core(core, dontdump_ranges(pid), TestToken::get().pin(), {}, "env: PIN");
  server.stop();
}

}  // namespace
}  // namespace keysvc
