// Fuzz target: the audit log verifier and report (keysvc/audit_verify.h,
// keysvc/audit_report.h) on arbitrary file bytes, with seals checked in a real SoftHSM
// token (the token's audit key).
//
// Input: up to four files separated by form feeds ('\f'), verified as one chain
// (audit.log, audit.log.1, ...). Invariants: a result, never a crash or an exception
// other than the token's; an "ok" result is only possible for seals the token made, and
// the fuzz token never sealed anything the fuzzer can see, so a log with a seal never
// verifies.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "audit_test_log.h"
#include "fuzz_support.h"
#include "keysvc/audit_key.h"
#include "keysvc/audit_report.h"
#include "keysvc/audit_verify.h"
#include "keysvc/token_gateway.h"
#include "test_token.h"

using namespace keysvc;

namespace {

TokenGateway& gateway() {
  static TokenGateway* g = [] {
    auto* made = TokenGateway::open(test::TestToken::get().config()).release();
    made->call([](hsm::Session& s) { return audit::find_or_create_audit_key(s); });
    return made;
  }();
  return *g;
}

void write_seeds(const std::string& dir) {
  const std::string work = test::TestToken::get().dir() + "/seed-logs";
  for (bool rotate : {false, true}) {
    test::WrittenLog w = test::write_realistic_log(gateway(), work + (rotate ? "/rotated" : "/single"), rotate);
    std::string joined;
    for (std::size_t i = 0; i < w.files.size(); ++i) joined += (i ? "\f" : "") + test::slurp(w.files[i]);
    fuzz::write_seed(dir, rotate ? "rotated-pair" : "single-file", joined);
    // The same log verifies against the token that sealed it.
    if (!audit::verify(w.files, audit::token_keyed_hmac(gateway())).ok) fuzz::fail("a real log does not verify");
  }
  fuzz::write_seed(dir, "empty", std::string());
  fuzz::write_seed(dir, "not-a-log", std::string("[hsm]\nmodule = \"x\"\n"));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (std::string dir = fuzz::seed_dir(); !dir.empty()) {
    write_seeds(dir);
    std::exit(0);
  }
  gateway();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string input(reinterpret_cast<const char*>(data), size);
  std::vector<audit::LogText> files;
  std::size_t start = 0;
  while (files.size() < 4) {
    std::size_t end = files.size() == 3 ? std::string::npos : input.find('\f', start);
    std::string name = files.empty() ? "audit.log" : "audit.log." + std::to_string(files.size());
    files.emplace_back(name, input.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  static const audit::KeyedHmac hmac = audit::token_keyed_hmac(gateway());
  audit::VerifyResult r = audit::verify_texts(files, hmac);
  if (r.ok && r.seals > 0) fuzz::fail("a log sealed elsewhere verified against the fuzz token");
  if (!r.ok && r.detail.find('\n') != std::string::npos) fuzz::fail("a verify message spans lines");
  (void)audit::report_texts(files, {});
  return 0;
}
