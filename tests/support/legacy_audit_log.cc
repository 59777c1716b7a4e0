#include "legacy_audit_log.h"

#include <fstream>
#include <stdexcept>

#include "keysvc/audit_key.h"
#include "keysvc/audit_log.h"

namespace keysvc::test {

std::size_t write_legacy_log(TokenGateway& gateway, const std::string& path, int runs, std::int64_t start_ms) {
  const std::string key = gateway.call([](hsm::Session& s) { return audit::find_or_create_audit_key(s); }).id_hex();
  const audit::KeyedHmac hmac = audit::token_keyed_hmac(gateway);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  std::uint64_t seq = 0;
  audit::Hash prev{};
  std::int64_t ts = start_ms;
  std::size_t lines = 0;
  auto write = [&](const std::string& event, const std::string& fields) {
    const std::string line = "{\"seq\":" + std::to_string(++seq) + ",\"ts\":\"" + audit::iso8601_ms(ts) +
                             "\",\"host\":\"legacy-host\",\"pid\":4242,\"event\":\"" + event + "\"" + fields +
                             ",\"prev\":\"" + to_hex(prev) + "\"}";
    out << line << '\n';
    prev = audit::sha256(line);
    ts += 1000;
    ++lines;
  };
  for (int run = 0; run < runs; ++run) {
    write("chain_start", ",\"prev_file\":\"" + std::string(seq ? path : "") + "\",\"prev_seq\":" + std::to_string(seq));
    write("config_loaded", ",\"path\":\"/etc/keysvc/keysvc.toml\"");
    write("hsm_error", ",\"operation\":\"C_Sign\",\"rv\":\"CKR_DEVICE_ERROR\",\"count\":1");
    const std::uint64_t sealed = seq;
    const auto mac = hmac(key, audit::seal_message_v2(sealed, prev));
    if (!mac) throw std::runtime_error("no audit key");
    write("seal", ",\"sealed\":" + std::to_string(sealed) + ",\"head\":\"" + to_hex(prev) + "\",\"mac\":\"" +
                      to_hex(*mac) + "\",\"key\":\"" + key + "\"");
  }
  out.flush();
  if (!out) throw std::runtime_error("cannot write " + path);
  return lines;
}

}  // namespace keysvc::test
