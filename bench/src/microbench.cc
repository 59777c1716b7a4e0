// keysvc-microbench: the pieces of the ticket path, one at a time (Google Benchmark).
//
//   BM_HsmHmacSign/{local,remote}  one C_SignInit+C_Sign HMAC-SHA256 in the token on a
//                                  generation key (hsm::hmac_sha256), the derivation message
//   BM_HsmHmacSign_session_key     the same with a key generated as a session object
//   BM_HsmHmacSha512/{token,session}  one HMAC-SHA512 (64 bytes out: both per-ticket keys in
//                                  one call, rotation.derivation = 2) with a 64-byte key
//   BM_DeriveTicketKeys_strict     derive_ticket_keys: both per-ticket keys (2 HMACs), strict tier
//   BM_ServiceIssue / BM_ServiceOpen  TicketKeyService::derive_for_issue / derive_for_open
//                                  with keysvc's defaults (epoch tier: HKDF in process)
//   BM_ServiceOpen_strict[_inline]  derive_for_open in the strict tier (two C_Signs on token
//                                  objects), through the HSM guard / with hsm.call_timeout = 0
//                                  (on the caller's thread): the difference is the guard's
//                                  hand-off (hsm_guard.h)
//   BM_ServiceOpen_copies_v2[_inline]  the same with hsm.session_copies and
//                                  rotation.derivation = 2 (one HMAC-SHA512 on a session copy)
//   BM_KdfFetchDerive              EVP_KDF_fetch + EVP_KDF_CTX_new + derive ("issue")
//   BM_KdfDerive                   EVP_KDF_CTX_new + derive with the KDF fetched once (what
//                                  the adapter does per ticket)
//   BM_StaticCallback/{issue,open} the static (nginx-style) evp callback's key setup
//   BM_TicketSeal / BM_TicketOpen  AES-256-CBC + HMAC-SHA256 over a 100-byte session
//   BM_CallStatsRecord / BM_CallStatsTimedCall  recording one PKCS#11 call in the hsm
//                                  layer's statistics (hsm/call_stats.h), 1 and 2 threads
//   BM_ModuleGatedCall             the same call through hsm::Module's call gate and
//                                  generation check (module.h), 1 and 2 threads
#include <benchmark/benchmark.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/provider.h>
#include <openssl/rand.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>

#include "bench_env.h"
#include "keysvc/hsm/call_stats.h"
#include "bio_handshake.h"
#include "keysvc/config.h"
#include "keysvc/derivation.h"
#include "keysvc/hsm/module.h"
#include "keysvc/hsm/secret_key.h"
#include "keysvc/log.h"
#include "keysvc/openssl/ticket_adapter.h"
#include "keysvc/openssl/ticket_kdf.h"
#include "keysvc/ticket_key_service.h"
#include "keysvc/token_gateway.h"
#include "static_tickets.h"

namespace keysvc::bench {
namespace {

// A session pool on `service`'s token beside keysvc (one per service, made on first use):
// the bare PKCS#11 calls the benchmarks compare keysvc's own path with.
hsm::SessionPool& bare_pool(const TicketKeyService& service) {
  static std::map<const TicketKeyService*, std::unique_ptr<hsm::SessionPool>> pools;
  auto& p = pools[&service];
  if (!p) p = TokenGateway::open_bare_pool(service.config());
  return *p;
}

BenchEnv* g_env = nullptr;
std::shared_ptr<TicketKeyService> g_local, g_remote, g_strict, g_strict_inline, g_copies_v2, g_copies_v2_inline;
std::string g_remote_skip;

const Generation& encrypt_generation(TicketKeyService& svc) {
  static thread_local std::shared_ptr<const KeyRing> keep;
  keep = svc.ring();
  const Generation* g = keep->encrypt_generation(svc.unix_now());
  if (g == nullptr) throw std::runtime_error("no encrypt generation");
  return *g;
}

void hmac_sign(benchmark::State& state, TicketKeyService* svc, const std::string& skip) {
  if (svc == nullptr) {
    state.SkipWithError(skip.c_str());
    return;
  }
  const Generation g = encrypt_generation(*svc);
  const CK_OBJECT_HANDLE key = g.enc_key;
  Iv iv{};
  RAND_bytes(iv.data(), iv.size());
  auto msg = derivation_message(kAesKeyLabel, g.name, iv);
  std::array<std::uint8_t, hsm::kHmacSha256Bytes> mac{};
  auto lease = bare_pool(*svc).lease();
  for (auto _ : state) {
    hsm::hmac_sha256(lease.session(), key, msg, mac);
    benchmark::DoNotOptimize(mac);
  }
}
void BM_HsmHmacSign_local(benchmark::State& state) { hmac_sign(state, g_local.get(), ""); }
void BM_HsmHmacSign_remote(benchmark::State& state) { hmac_sign(state, g_remote.get(), g_remote_skip); }

// A throwaway HMAC key generated in `session` for one benchmark (sensitive, never
// extractable, sign only), destroyed with it. ok() is false if the token refused it.
class GeneratedHmacKey {
 public:
  GeneratedHmacKey(hsm::Session& session, CK_ULONG bytes, bool token_object) : session_(session) {
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE type = CKK_GENERIC_SECRET;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE, token = token_object ? CK_TRUE : CK_FALSE;
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof cls},     {CKA_KEY_TYPE, &type, sizeof type}, {CKA_VALUE_LEN, &bytes, sizeof bytes},
        {CKA_TOKEN, &token, sizeof token}, {CKA_SENSITIVE, &yes, sizeof yes},  {CKA_EXTRACTABLE, &no, sizeof no},
        {CKA_SIGN, &yes, sizeof yes},      {CKA_PRIVATE, &yes, sizeof yes},
    };
    CK_MECHANISM gen{CKM_GENERIC_SECRET_KEY_GEN, nullptr, 0};
    if (session.fn()->C_GenerateKey(session.handle(), &gen, tmpl, sizeof tmpl / sizeof tmpl[0], &key_) != CKR_OK)
      key_ = CK_INVALID_HANDLE;
  }
  ~GeneratedHmacKey() {
    if (ok()) session_.fn()->C_DestroyObject(session_.handle(), key_);
  }
  GeneratedHmacKey(const GeneratedHmacKey&) = delete;
  GeneratedHmacKey& operator=(const GeneratedHmacKey&) = delete;

  bool ok() const { return key_ != CK_INVALID_HANDLE; }
  CK_OBJECT_HANDLE get() const { return key_; }

 private:
  hsm::Session& session_;
  CK_OBJECT_HANDLE key_ = CK_INVALID_HANDLE;
};

// Not what keysvc does: the same HMAC with a *session* object key (CKA_TOKEN=FALSE,
// still sensitive and non-extractable), generated in the bench's session. Measures the
// cost of a token object compared with a session object on SoftHSM, which reads token
// objects again on their use.
void BM_HsmHmacSign_session_key(benchmark::State& state) {
  auto lease = bare_pool(*g_local).lease();
  hsm::Session& session = lease.session();
  const GeneratedHmacKey key(session, hsm::kHmacKeyBytes, false);
  if (!key.ok()) {
    state.SkipWithError("C_GenerateKey (session object) failed");
    return;
  }
  std::array<std::uint8_t, 61> msg{};
  std::array<std::uint8_t, hsm::kHmacSha256Bytes> mac{};
  for (auto _ : state) {
    hsm::hmac_sha256(session, key.get(), msg, mac);
    benchmark::DoNotOptimize(mac);
  }
}

// Lever 2 of issue #5, as keysvc's rotation.derivation = 2 does it: one HMAC-SHA512 gives
// both 32-byte per-ticket keys in one C_Sign. SHA-512 HMAC keys must be 64 bytes in
// SoftHSM. range(0): 0 = token object, 1 = session object.
void BM_HsmHmacSha512(benchmark::State& state) {
  auto lease = bare_pool(*g_local).lease();
  hsm::Session& session = lease.session();
  const GeneratedHmacKey key(session, hsm::kHmacSha512KeyBytes, state.range(0) == 0);
  if (!key.ok()) {
    state.SkipWithError("C_GenerateKey (64-byte key) failed");
    return;
  }
  std::array<std::uint8_t, 61> msg{};
  std::array<std::uint8_t, hsm::kHmacSha512Bytes> mac{};
  for (auto _ : state) {
    hsm::hmac_sha512(session, key.get(), msg, mac);
    benchmark::DoNotOptimize(mac);
  }
}

void derive(benchmark::State& state, TicketKeyService* svc, const std::string& skip) {
  if (svc == nullptr) {
    state.SkipWithError(skip.c_str());
    return;
  }
  const Generation g = encrypt_generation(*svc);
  Iv iv{};
  RAND_bytes(iv.data(), iv.size());
  TicketKeys keys;
  auto lease = bare_pool(*svc).lease();
  for (auto _ : state) {
    derive_ticket_keys(lease.session(), g, iv, keys);
    benchmark::DoNotOptimize(keys.aes_key);
  }
}
void BM_DeriveTicketKeys_strict(benchmark::State& state) { derive(state, g_strict.get(), ""); }

void BM_ServiceIssue(benchmark::State& state) {
  IssueKeys out;
  for (auto _ : state) {
    if (!g_local->derive_for_issue(out)) state.SkipWithError("derive_for_issue failed");
    benchmark::DoNotOptimize(out.keys.aes_key);
  }
}

void service_open(benchmark::State& state, TicketKeyService& svc) {
  IssueKeys issued;
  if (!svc.derive_for_issue(issued)) {
    state.SkipWithError("derive_for_issue failed");
    return;
  }
  TicketKeys keys;
  for (auto _ : state) {
    if (svc.derive_for_open(issued.name, issued.iv, keys) != OpenStatus::kOk)
      state.SkipWithError("derive_for_open failed");
    benchmark::DoNotOptimize(keys.aes_key);
  }
}
void BM_ServiceOpen(benchmark::State& state) { service_open(state, *g_local); }
void BM_ServiceOpen_strict(benchmark::State& state) { service_open(state, *g_strict); }
void BM_ServiceOpen_strict_inline(benchmark::State& state) { service_open(state, *g_strict_inline); }
void BM_ServiceOpen_copies_v2(benchmark::State& state) { service_open(state, *g_copies_v2); }
void BM_ServiceOpen_copies_v2_inline(benchmark::State& state) { service_open(state, *g_copies_v2_inline); }

// An SSL_CTX in its own library context with keysvc installed: the provider lives there.
struct KdfSetup {
  OSSL_LIB_CTX* libctx = OSSL_LIB_CTX_new();
  SslCtxPtr ctx;
  std::string propq;
  KdfSetup() {
    ctx.reset(SSL_CTX_new_ex(libctx, nullptr, TLS_server_method()));
    keysvc::openssl::InstallOptions opts;
    opts.libctx = libctx;
    keysvc::openssl::install(ctx.get(), g_local, opts);
    OSSL_PROVIDER_do_all(
        libctx,
        [](OSSL_PROVIDER* p, void* arg) {
          std::string name = OSSL_PROVIDER_get0_name(p);
          if (name.rfind("keysvc-", 0) == 0) *static_cast<std::string*>(arg) = "provider=" + name;
          return 1;
        },
        &propq);
  }
  ~KdfSetup() {
    ctx.reset();
    OSSL_LIB_CTX_free(libctx);
  }
};

bool kdf_issue(EVP_KDF* kdf) {
  EVP_KDF_CTX* k = EVP_KDF_CTX_new(kdf);
  unsigned char out[KEYSVC_KDF_ISSUE_OUTPUT_BYTES];
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(KEYSVC_KDF_PARAM_OPERATION, const_cast<char*>("issue"), 0),
      OSSL_PARAM_construct_end(),
  };
  bool ok = k != nullptr && EVP_KDF_derive(k, out, sizeof out, params) == 1;
  EVP_KDF_CTX_free(k);
  OPENSSL_cleanse(out, sizeof out);
  return ok;
}

void BM_KdfFetchDerive(benchmark::State& state) {
  KdfSetup s;
  for (auto _ : state) {
    EVP_KDF* kdf = EVP_KDF_fetch(s.libctx, KEYSVC_TICKET_KDF_NAME, s.propq.c_str());
    if (kdf == nullptr || !kdf_issue(kdf)) state.SkipWithError("KDF fetch/derive failed");
    EVP_KDF_free(kdf);
  }
}

void BM_KdfDerive(benchmark::State& state) {
  KdfSetup s;
  EVP_KDF* kdf = EVP_KDF_fetch(s.libctx, KEYSVC_TICKET_KDF_NAME, s.propq.c_str());
  if (kdf == nullptr) {
    state.SkipWithError("KDF fetch failed");
    return;
  }
  for (auto _ : state)
    if (!kdf_issue(kdf)) state.SkipWithError("KDF derive failed");
  EVP_KDF_free(kdf);
}

struct EvpContexts {
  EVP_CIPHER_CTX* cctx = EVP_CIPHER_CTX_new();
  EVP_MAC* mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  EVP_MAC_CTX* hctx = EVP_MAC_CTX_new(mac);
  ~EvpContexts() {
    EVP_MAC_CTX_free(hctx);
    EVP_MAC_free(mac);
    EVP_CIPHER_CTX_free(cctx);
  }
};

void BM_StaticCallback(benchmark::State& state) {
  const int enc = static_cast<int>(state.range(0));
  std::unique_ptr<StaticTicketKey, decltype(&free_static_key)> key(new_static_key(), free_static_key);
  EvpContexts c;
  unsigned char name[16], iv[16];
  std::memcpy(name, key->name.data(), 16);
  RAND_bytes(iv, sizeof iv);
  for (auto _ : state) {
    if (static_ticket_setup(*key, name, iv, c.cctx, c.hctx, enc) != 1) state.SkipWithError("callback failed");
  }
}

// A 100-byte serialised session, sealed the way OpenSSL seals a ticket body.
void BM_TicketSeal(benchmark::State& state) {
  std::unique_ptr<StaticTicketKey, decltype(&free_static_key)> key(new_static_key(), free_static_key);
  EvpContexts c;
  unsigned char name[16], iv[16], session[100], out[160], mac[32];
  RAND_bytes(session, sizeof session);
  for (auto _ : state) {
    int len = 0, fin = 0;
    std::size_t maclen = 0;
    static_ticket_setup(*key, name, iv, c.cctx, c.hctx, 1);
    EVP_MAC_init(c.hctx, nullptr, 0, nullptr);
    EVP_EncryptUpdate(c.cctx, out, &len, session, sizeof session);
    EVP_EncryptFinal_ex(c.cctx, out + len, &fin);
    EVP_MAC_update(c.hctx, name, sizeof name);
    EVP_MAC_update(c.hctx, iv, sizeof iv);
    EVP_MAC_update(c.hctx, out, static_cast<std::size_t>(len + fin));
    EVP_MAC_final(c.hctx, mac, &maclen, sizeof mac);
    benchmark::DoNotOptimize(mac);
  }
}

void BM_TicketOpen(benchmark::State& state) {
  std::unique_ptr<StaticTicketKey, decltype(&free_static_key)> key(new_static_key(), free_static_key);
  EvpContexts c;
  unsigned char name[16], iv[16], session[100], sealed[160], mac[32], plain[160];
  RAND_bytes(session, sizeof session);
  int len = 0, fin = 0;
  static_ticket_setup(*key, name, iv, c.cctx, c.hctx, 1);
  EVP_EncryptUpdate(c.cctx, sealed, &len, session, sizeof session);
  EVP_EncryptFinal_ex(c.cctx, sealed + len, &fin);
  const int sealed_len = len + fin;
  for (auto _ : state) {
    std::size_t maclen = 0;
    int plen = 0, pfin = 0;
    static_ticket_setup(*key, name, iv, c.cctx, c.hctx, 0);
    EVP_MAC_init(c.hctx, nullptr, 0, nullptr);
    EVP_MAC_update(c.hctx, name, sizeof name);
    EVP_MAC_update(c.hctx, iv, sizeof iv);
    EVP_MAC_update(c.hctx, sealed, static_cast<std::size_t>(sealed_len));
    EVP_MAC_final(c.hctx, mac, &maclen, sizeof mac);
    EVP_DecryptUpdate(c.cctx, plain, &plen, sealed, sealed_len);
    EVP_DecryptFinal_ex(c.cctx, plain + plen, &pfin);
    benchmark::DoNotOptimize(plain);
  }
}

// What recording one PKCS#11 call costs (hsm/call_stats.h): record() alone, and call()
// around a function that does nothing (two steady_clock reads + record()). Threads(2):
// two threads recording the same function (shared cache lines).
[[gnu::noinline]] CK_RV no_op_call(CK_SESSION_HANDLE session) {
  benchmark::DoNotOptimize(session);
  return CKR_OK;
}
hsm::CallStats g_call_stats;
void BM_CallStatsRecord(benchmark::State& state) {
  std::uint64_t ns = 12'345;
  for (auto _ : state) g_call_stats.record(hsm::Call::kSign, ns++ & 0xffff, CKR_OK);
}
void BM_CallStatsTimedCall(benchmark::State& state) {
  for (auto _ : state)
    benchmark::DoNotOptimize(hsm::call(g_call_stats, hsm::Call::kSign, &no_op_call, CK_SESSION_HANDLE{1}));
}
// The difference to BM_CallStatsTimedCall is what the gate costs per PKCS#11 call.
// Recorded as C_GetSessionInfo in the local service's module (no real call is made).
void BM_ModuleGatedCall(benchmark::State& state) {
  const hsm::Module& module = *g_local->gateway().token().module();
  const std::uint64_t generation = module.generation();
  for (auto _ : state)
    benchmark::DoNotOptimize(module.call(generation, hsm::Call::kGetSessionInfo, &no_op_call, CK_SESSION_HANDLE{1}));
}

}  // namespace
}  // namespace keysvc::bench

using namespace keysvc::bench;

BENCHMARK(BM_HsmHmacSign_local);
BENCHMARK(BM_HsmHmacSign_remote);
BENCHMARK(BM_HsmHmacSign_session_key);
BENCHMARK(BM_HsmHmacSha512)->Arg(0)->Arg(1)->ArgName("session");
BENCHMARK(BM_DeriveTicketKeys_strict);
BENCHMARK(BM_ServiceIssue);
BENCHMARK(BM_ServiceOpen);
BENCHMARK(BM_ServiceOpen_strict);
BENCHMARK(BM_ServiceOpen_strict_inline);
BENCHMARK(BM_ServiceOpen_copies_v2);
BENCHMARK(BM_ServiceOpen_copies_v2_inline);
BENCHMARK(BM_KdfFetchDerive);
BENCHMARK(BM_KdfDerive);
BENCHMARK(BM_StaticCallback)->Arg(1)->Arg(0)->ArgName("enc");
BENCHMARK(BM_TicketSeal);
BENCHMARK(BM_TicketOpen);
BENCHMARK(BM_CallStatsRecord)->Threads(1)->Threads(2);
BENCHMARK(BM_CallStatsTimedCall)->Threads(1)->Threads(2);
BENCHMARK(BM_ModuleGatedCall)->Threads(1)->Threads(2);

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  try {
    keysvc::set_log_level("warn");
    BenchEnv env;
    g_env = &env;
    g_local = keysvc::TicketKeyService::open(keysvc::Config::load_file(env.local_config()));
    g_strict = keysvc::TicketKeyService::open(keysvc::Config::load_file(env.strict_config()));
    keysvc::Config strict_inline = keysvc::Config::load_file(env.strict_config());
    strict_inline.hsm.call_timeout = std::chrono::milliseconds(0);
    g_strict_inline = keysvc::TicketKeyService::open(strict_inline);
    g_copies_v2 = keysvc::TicketKeyService::open(keysvc::Config::load_file(env.strict_copies_v2_config()));
    g_copies_v2_inline =
        keysvc::TicketKeyService::open(keysvc::Config::load_file(env.strict_copies_v2_inline_config()));
    g_remote_skip = env.start_remote();
    if (g_remote_skip.empty()) {
      try {
        g_remote = keysvc::TicketKeyService::open(keysvc::Config::load_file(env.remote_config()));
      } catch (const std::exception& e) {
        g_remote_skip = std::string("p11-kit remote token: ") + e.what();
      }
    }
    if (!g_remote_skip.empty()) std::fprintf(stderr, "remote benchmarks skipped: %s\n", g_remote_skip.c_str());
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    g_remote.reset();
    g_copies_v2_inline.reset();
    g_copies_v2.reset();
    g_strict_inline.reset();
    g_strict.reset();
    g_local.reset();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "keysvc-microbench: %s\n", e.what());
    return 1;
  }
  return 0;
}
