#include "doctor.h"

#include <openssl/rand.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>

#include "doctor_tiers.h"
#include "keysvc/hsm/error.h"
#include "keysvc/hsm/key_reservation.h"
#include "keysvc/hsm/object.h"
#include "keysvc/hsm/secret_key.h"
#include "keysvc/hsm/session_copy.h"
#include "keysvc/hsm/session_pool.h"
#include "keysvc/hsm/token.h"

namespace keysvcctl {

namespace hsm = keysvc::hsm;

bool DoctorReport::usable() const {
  return std::none_of(findings.begin(), findings.end(), [](const Finding& f) { return f.verdict == Verdict::kFail; });
}

const char* verdict_name(Verdict v) {
  switch (v) {
    case Verdict::kOk: return "ok";
    case Verdict::kInfo: return "info";
    case Verdict::kWarn: return "WARN";
    case Verdict::kFail: return "FAIL";
  }
  return "?";
}

namespace {

constexpr char kDoctorLabel[] = "keysvc-doctor";

// Runs f() `n` times; the median duration of one call in microseconds.
double median_us(int n, const std::function<void()>& f) {
  std::vector<double> us;
  for (int i = 0; i < n; ++i) {
    const auto start = std::chrono::steady_clock::now();
    f();
    us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(us.begin(), us.end());
  return us.empty() ? 0 : us[us.size() / 2];
}

hsm::Bytes random_id() {
  hsm::Bytes id(16);
  RAND_bytes(id.data(), static_cast<int>(id.size()));
  return id;
}

// Every check after login, on one logged-in session pool. Adds findings to `r`.
class Checks {
 public:
  Checks(const keysvc::Config& config, hsm::SessionPool& pool, DoctorReport& r)
      : config_(config), pool_(pool), token_(pool.token()), r_(r) {}

  void run() {
    mechanisms();
    std::optional<CK_OBJECT_HANDLE> key = keygen();
    if (key) {
      hmac(*key);
      find(*key);
      copies(*key);
    }
    data_objects();
    sessions();
    rescans();
    leftovers();
    add_tier_findings(config_, token_.profile(), hmac_us_, keygen_us_, find_us_, data_us_, r_.findings);
  }

 private:
  void add(std::string check, std::string what, Verdict v, std::string detail, double us = 0, int calls = 0) {
    r_.findings.push_back({std::move(check), std::move(what), v, std::move(detail), us, calls});
  }

  // Runs f on a session; a PKCS#11 or capability error becomes a finding.
  template <class F>
  bool guarded(const std::string& check, const std::string& what, F f) {
    try {
      pool_.run([&](hsm::Session& s) { f(s); });
      return true;
    } catch (const hsm::Error& e) {
      add(check, what, Verdict::kFail, e.what());
      return false;
    }
  }

  void mechanism(CK_MECHANISM_TYPE m, const char* name, CK_FLAGS flag, const char* use, Verdict missing,
                 const std::string& why) {
    CK_MECHANISM_INFO info{};
    CK_RV rv = token_.module()->call(hsm::Module::kAnyGeneration, hsm::Call::kGetMechanismInfo,
                                     token_.module()->fn()->C_GetMechanismInfo, token_.slot(), m, &info);
    const std::string what = std::string(name) + " " + use;
    if (rv != CKR_OK) return add("mechanism", what, missing, "not offered (" + hsm::rv_name(rv) + "): " + why);
    if (!(info.flags & flag)) return add("mechanism", what, missing, std::string("offered without ") + use + ": " + why);
    std::string sizes = "key sizes " + std::to_string(info.ulMinKeySize) + "-" + std::to_string(info.ulMaxKeySize);
    if (m == CKM_GENERIC_SECRET_KEY_GEN) {
      const bool bits = token_.profile().generic_key_sizes_in_bits;
      const CK_ULONG want = bits ? 256 : 32;
      sizes += bits ? " bits" : " bytes";
      if (want < info.ulMinKeySize || (info.ulMaxKeySize != 0 && want > info.ulMaxKeySize))
        return add("mechanism", what, missing, sizes + ": no 32-byte keys");
    }
    add("mechanism", what, Verdict::kOk, sizes);
  }

  void mechanisms() {
    const bool reserved = token_.profile().key_source == hsm::KeySource::kReserved;
    mechanism(CKM_SHA256_HMAC, "CKM_SHA256_HMAC", CKF_SIGN, "sign", Verdict::kFail, "every ticket key derivation");
    if (reserved) {
      add("mechanism", "CKM_GENERIC_SECRET_KEY_GEN generate", Verdict::kInfo,
          "not used: keys come from " + token_.profile().key_tool + " (C_GenerateKey is not supported)");
    } else {
      mechanism(CKM_GENERIC_SECRET_KEY_GEN, "CKM_GENERIC_SECRET_KEY_GEN", CKF_GENERATE, "generate", Verdict::kFail,
                "keysvc generates its keys in the token");
    }
    mechanism(CKM_SHA512_HMAC, "CKM_SHA512_HMAC", CKF_SIGN, "sign",
              config_.rotation.derivation == 2 ? Verdict::kFail : Verdict::kInfo,
              "needed only for rotation.derivation = 2");
  }

  std::optional<CK_OBJECT_HANDLE> keygen() {
    const bool reserved = token_.profile().key_source == hsm::KeySource::kReserved;
    const int n = reserved ? 1 : 3;
    std::unique_ptr<hsm::KeyReservation> reservation;
    try {
      if (reserved) {
        const auto start = std::chrono::steady_clock::now();
        reservation = std::make_unique<hsm::KeyReservation>(token_, keysvc::pin_source_of(config_), n);
        keygen_us_ = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count() / n;
      }
    } catch (const hsm::Error& e) {
      add("keygen", "reserve keys", Verdict::kFail, e.what());
      return std::nullopt;
    }
    const hsm::Copyable copyable = config_.rotation.copyable_keys ? hsm::Copyable::kYes : hsm::Copyable::kNo;
    std::vector<CK_OBJECT_HANDLE> made;
    hsm::KeyCustody custody;
    const bool ok = guarded("keygen", "HMAC key, keysvc's template", [&](hsm::Session& s) {
      const double us = median_us(n, [&] { made.push_back(hsm::generate_hmac_key(s, id_, kDoctorLabel, copyable)); });
      if (!reserved) keygen_us_ = us;
      custody = hsm::read_custody(s, made.front());
      for (std::size_t k = 1; k < made.size(); ++k) hsm::destroy_object(s, made[k]);
    });
    if (!ok) return std::nullopt;
    add("keygen", reserved ? "HMAC key, reserved with the token's tool" : "HMAC key, keysvc's template", Verdict::kOk,
        reserved ? "CKK_SHA256_HMAC from " + token_.profile().key_tool + ", named by C_SetAttributeValue"
                 : "CKM_GENERIC_SECRET_KEY_GEN, 32 bytes",
        keygen_us_, n);
    const bool sign_only = custody.sign && !custody.encrypt && !custody.decrypt && !custody.wrap && !custody.unwrap &&
                           !custody.derive && (!custody.verify || !custody.enforced);
    std::string detail = std::string(custody.held_in_token() ? "sensitive, always sensitive, never extractable" :
                                                               "NOT held in the token") +
                         (sign_only ? ", sign only" : ", has other usages") +
                         (custody.copyable_known ? "" : "; no CKA_COPYABLE (PKCS#11 2.20)") +
                         (custody.verify ? "; VERIFY set by the token" : "");
    Verdict v = custody.held_in_token() && sign_only ? Verdict::kOk : Verdict::kFail;
    if (v == Verdict::kOk && !custody.enforced) {
      v = Verdict::kWarn;
      detail += "; attributes are metadata the token does not enforce (C_SetAttributeValue can change them)";
    }
    add("keygen", "custody as reported", v, detail);
    return made.front();
  }

  void hmac(CK_OBJECT_HANDLE key) {
    guarded("hmac", "CKM_SHA256_HMAC", [&](hsm::Session& s) {
      std::array<std::uint8_t, 48> msg{};
      std::array<std::uint8_t, hsm::kHmacSha256Bytes> a{}, b{}, c{};
      hmac_us_ = median_us(20, [&] { hsm::hmac_sha256(s, key, msg, a); });
      hsm::hmac_sha256(s, key, msg, b);
      msg[0] = 1;
      hsm::hmac_sha256(s, key, msg, c);
      const bool ok = a == b && a != c;
      add("hmac", "CKM_SHA256_HMAC, 48-byte input", ok ? Verdict::kOk : Verdict::kFail,
          ok ? "32-byte MAC, deterministic" : "the MAC of one input changed between calls", hmac_us_, 20);
    });
  }

  void find(CK_OBJECT_HANDLE key) {
    guarded("find", "C_FindObjects by CKA_ID + label", [&](hsm::Session& s) {
      std::vector<CK_OBJECT_HANDLE> found;
      find_us_ = median_us(10, [&] {
        found = hsm::find_objects(s, {.object_class = CKO_SECRET_KEY, .id = id_, .label = kDoctorLabel});
      });
      const bool ok = found.size() == 1 && found.front() == key;
      add("find", "C_FindObjects by CKA_ID + label", ok ? Verdict::kOk : Verdict::kFail,
          ok ? "finds exactly the key" : "found " + std::to_string(found.size()) + " object(s)", find_us_, 10);
    });
  }

  void copies(CK_OBJECT_HANDLE key) {
    try {
      pool_.run([&](hsm::Session& s) {
        CK_OBJECT_HANDLE copy = hsm::copy_to_session(s, key, "keysvc-doctor-copy");
        hsm::destroy_object(s, copy);
      });
      add("copies", "session copy (C_CopyObject)", Verdict::kOk, "allowed for this key");
    } catch (const hsm::Pkcs11Error& e) {
      const bool wanted = config_.hsm.session_copies;
      add("copies", "session copy (C_CopyObject)", wanted ? Verdict::kWarn : Verdict::kInfo,
          std::string(e.what()) + (wanted ? ": hsm.session_copies falls back to the token key"
                                          : ": keysvc signs with the token key (hsm.session_copies is off)"));
    }
  }

  void data_objects() {
    guarded("data", "private data object", [&](hsm::Session& s) {
      const std::string value = "keysvc-doctor v1\n";
      const std::span<const std::uint8_t> bytes(reinterpret_cast<const std::uint8_t*>(value.data()), value.size());
      std::vector<CK_OBJECT_HANDLE> made;
      data_us_ = median_us(3, [&] { made.push_back(hsm::create_data_object(s, kDoctorLabel, kDoctorLabel, bytes)); });
      const hsm::Bytes back = hsm::get_attribute(s, made.front(), CKA_VALUE);
      for (auto h : made) hsm::destroy_object(s, h);
      const bool ok = std::string(back.begin(), back.end()) == value;
      add("data", "private data object", ok ? Verdict::kOk : Verdict::kFail,
          ok ? "create, read back, destroy" : "the value read back differs", data_us_, 3);
    });
  }

  void sessions() {
    const std::size_t want = config_.hsm.sessions;
    const std::size_t probe = std::min<std::size_t>(std::max<std::size_t>(want * 2, 8), 64);
    std::vector<std::unique_ptr<hsm::Session>> open;
    std::string stopped;
    try {
      while (open.size() < probe) open.push_back(std::make_unique<hsm::Session>(token_, true));
    } catch (const hsm::Error& e) {
      stopped = std::string(", then ") + e.what();
    }
    const Verdict v = open.size() + 1 >= want ? Verdict::kOk : Verdict::kFail;  // + the pool's own
    add("sessions", "read-write sessions at once", v,
        std::to_string(open.size()) + " opened of " + std::to_string(probe) + " tried" + stopped + " (hsm.sessions = " +
            std::to_string(want) + ")");
  }

  void rescans() {
    if (token_.profile().rescan_needs_reinitialize) {
      // What a re-initialise costs: every call in the process waits or fails meanwhile.
      int restarts = 0;
      double us = 0;
      try {
        us = median_us(3, [&] { restarts += token_.module()->restart(std::chrono::seconds(1)) ? 1 : 0; });
      } catch (const hsm::Error&) {
        restarts = 0;
      }
      add("rescans", "other processes' changes", Verdict::kWarn,
          "seen only after C_Finalize + C_Initialize (timed here): keysvcctl re-initialises; a server must restart "
          "the module before a rescan when the token changed, and share the module with no one in its process",
          restarts == 3 ? us : 0, restarts == 3 ? 3 : 0);
    } else {
      add("rescans", "other processes' changes", Verdict::kOk, "seen by the next search");
    }
  }

  void leftovers() {
    guarded("leftovers", "objects doctor made", [&](hsm::Session& s) {
      for (auto h : hsm::find_objects(s, {.object_class = CKO_SECRET_KEY, .id = id_, .label = kDoctorLabel}))
        hsm::destroy_object(s, h);
      const auto left = hsm::find_objects(s, {.label = kDoctorLabel}).size();
      add("leftovers", "objects doctor made", left == 0 ? Verdict::kOk : Verdict::kFail,
          left == 0 ? "none left in the token" : std::to_string(left) + " left in the token");
      std::size_t orphans = 0;
      for (auto h : hsm::find_objects(s, {.object_class = CKO_SECRET_KEY})) {
        const hsm::Bytes label = hsm::get_attribute(s, h, CKA_LABEL);
        if (std::string(label.begin(), label.end()).starts_with(hsm::kReservedKeyLabelPrefix)) ++orphans;
      }
      if (orphans > 0)
        add("leftovers", "reserved keys nobody claimed", Verdict::kWarn,
            std::to_string(orphans) + " (a keysvcctl that died mid-command left them; unused)");
    });
  }

  const keysvc::Config& config_;
  hsm::SessionPool& pool_;
  hsm::Token token_;
  DoctorReport& r_;
  const hsm::Bytes id_ = random_id();
  double hmac_us_ = 0, keygen_us_ = 0, find_us_ = 0, data_us_ = 0;
};

}  // namespace

DoctorReport run_doctor(const keysvc::Config& config) {
  DoctorReport r;
  auto fail = [&](const char* check, const std::string& what, const std::string& why) {
    r.findings.push_back({check, what, Verdict::kFail, why, 0, 0});
    return r;
  };
  hsm::TokenUri uri = hsm::TokenUri::parse(config.hsm.token_uri);
  const std::string path = config.hsm.module.empty() ? uri.module_path().value_or("") : config.hsm.module;
  if (path.empty()) throw keysvc::ConfigError("no PKCS#11 module: set hsm.module");
  hsm::PinSource pin = keysvc::pin_source_of(config);
  std::shared_ptr<hsm::Module> module;
  try {
    module = hsm::Module::load(path);
  } catch (const hsm::Error& e) {
    return fail("module", path, e.what());
  }
  std::optional<hsm::Token> token;
  try {
    token = hsm::Token::find(module, uri);
  } catch (const hsm::Error& e) {
    return fail("token", uri.describe(), e.what());
  }
  CK_INFO info{};
  hsm::checked_call(*module, hsm::Call::kGetInfo, module->fn()->C_GetInfo, &info);
  r.findings.push_back({"module", path, Verdict::kOk,
                        hsm::trim_padded(info.manufacturerID, sizeof info.manufacturerID) + ", " +
                            hsm::trim_padded(info.libraryDescription, sizeof info.libraryDescription) + ", Cryptoki " +
                            std::to_string(info.cryptokiVersion.major) + "." +
                            std::to_string(info.cryptokiVersion.minor) + "; keysvc's profile: " + token->profile().name,
                        0, 0});
  const hsm::TokenInfo t = token->info();
  r.findings.push_back({"token", uri.describe(), Verdict::kOk,
                        t.label + " (" + t.manufacturer + ", model " + t.model + ", serial " + t.serial + ")", 0, 0});
  hsm::SessionPool pool(*token, std::move(pin), config.hsm.sessions);
  try {
    const double us = median_us(1, [&] { pool.warm_up(); });
    r.findings.push_back({"login", "user PIN from " + keysvc::pin_source_of(config).describe(), Verdict::kOk,
                          "logged in", us, 1});
  } catch (const hsm::Error& e) {
    return fail("login", "user PIN", e.what());
  }
  Checks(config, pool, r).run();
  return r;
}

}  // namespace keysvcctl
