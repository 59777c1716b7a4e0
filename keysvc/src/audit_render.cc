#include "audit_render.h"

#include <openssl/sha.h>

#include <cstdio>
#include <ctime>

namespace keysvc::audit::detail {

std::string quote(std::string_view s) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c >= 0x7f) {
      out += "\\u00";
      out += digits[c >> 4];
      out += digits[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

namespace {

std::string name_field(const KeyName& name) { return ",\"name\":\"" + to_hex(name) + "\""; }

std::string custody_json(const hsm::KeyCustody& c) {
  auto b = [](bool v) { return v ? "true" : "false"; };
  std::string s = "{";
  s += "\"sensitive\":" + std::string(b(c.sensitive));
  s += ",\"always_sensitive\":" + std::string(b(c.always_sensitive));
  s += ",\"extractable\":" + std::string(b(c.extractable));
  s += ",\"never_extractable\":" + std::string(b(c.never_extractable));
  s += ",\"sign\":" + std::string(b(c.sign)) + ",\"verify\":" + b(c.verify);
  s += ",\"encrypt\":" + std::string(b(c.encrypt)) + ",\"decrypt\":" + b(c.decrypt);
  s += ",\"wrap\":" + std::string(b(c.wrap)) + ",\"unwrap\":" + b(c.unwrap);
  s += ",\"derive\":" + std::string(b(c.derive)) + ",\"copyable\":" + b(c.copyable);
  s += ",\"modifiable\":" + std::string(b(c.modifiable));
  s += ",\"held_in_token\":" + std::string(b(c.held_in_token())) + "}";
  return s;
}

std::string counters_json(const UsageCounters& c) {
  std::string s = "{";
  for (std::size_t k = 0; k < kFirstRejection; ++k)
    s += (k ? ",\"" : "\"") + std::string(outcome_name(static_cast<Outcome>(k))) + "\":" + std::to_string(c[k]);
  s += ",\"rejected\":{";
  for (std::size_t k = kFirstRejection; k < kOutcomeCount; ++k)
    s += (k > kFirstRejection ? ",\"" : "\"") + std::string(outcome_name(static_cast<Outcome>(k))) + "\":" +
         std::to_string(c[k]);
  return s + "}}";
}

}  // namespace

Render render(const Event& event) {
  return std::visit(
      [](const auto& e) -> Render {
        using T = std::decay_t<decltype(e)>;
        if constexpr (std::is_same_v<T, GenerationCreated>) {
          const Schedule& s = e.schedule;
          return {"generation_created", name_field(e.name) + ",\"created\":" + std::to_string(s.created) +
                                            ",\"encrypt_from\":" + std::to_string(s.encrypt_from) +
                                            ",\"encrypt_until\":" + std::to_string(s.encrypt_until) +
                                            ",\"decrypt_until\":" + std::to_string(s.decrypt_until) +
                                            ",\"enc_key\":" + custody_json(e.enc) +
                                            ",\"mac_key\":" + custody_json(e.mac)};
        } else if constexpr (std::is_same_v<T, Activated>) {
          return {"activated", name_field(e.name)};
        } else if constexpr (std::is_same_v<T, EpochKeyDerived>) {
          return {"epoch_key_derived", name_field(e.name) + ",\"epoch\":" + std::to_string(e.epoch)};
        } else if constexpr (std::is_same_v<T, DecryptOnly>) {
          return {"decrypt_only", name_field(e.name)};
        } else if constexpr (std::is_same_v<T, Revoked>) {
          return {"revoked", name_field(e.name)};
        } else if constexpr (std::is_same_v<T, Destroyed>) {
          return {"destroyed", name_field(e.name)};
        } else if constexpr (std::is_same_v<T, GenerationRefused>) {
          return {"generation_refused", name_field(e.name) + ",\"reason\":" + quote(e.reason)};
        } else if constexpr (std::is_same_v<T, LoginFailed>) {
          return {"login_failed", ",\"token\":" + quote(e.token) + ",\"rv\":" + quote(e.rv)};
        } else if constexpr (std::is_same_v<T, HsmError>) {
          return {"hsm_error", ",\"operation\":" + quote(e.operation) + ",\"rv\":" + quote(e.rv) +
                                   ",\"count\":" + std::to_string(e.count)};
        } else if constexpr (std::is_same_v<T, ConfigLoaded>) {
          return {"config_loaded", ",\"path\":" + quote(e.path)};
        } else if constexpr (std::is_same_v<T, UsageSummary>) {
          std::string f = ",\"period_start\":\"" + iso8601_ms(e.period_start_ms) + "\",\"period_end\":\"" +
                          iso8601_ms(e.period_end_ms) + "\",\"keys\":{";
          bool first = true;
          for (const auto& [name, counters] : e.keys) {
            f += (first ? "\"" : ",\"") + to_hex(name) + "\":" + counters_json(counters);
            first = false;
          }
          return {"usage", f + "}"};
        } else {
          static_assert(std::is_same_v<T, Handshake>);
          return {"handshake", name_field(e.name) + ",\"outcome\":\"" + std::string(outcome_name(e.outcome)) + "\""};
        }
      },
      event);
}

std::string found_field(const Found& f) {
  std::string s = ",\"found\":{\"reason\":" + quote(f.reason) + ",\"lines\":" + std::to_string(f.lines) +
                  ",\"bytes\":" + std::to_string(f.bytes) + ",\"sha256\":\"" + to_hex(f.sha256) +
                  "\",\"first_seq\":" + std::to_string(f.first_seq) + ",\"last_seq\":" + std::to_string(f.last_seq);
  if (f.expected_seq) s += ",\"expected_seq\":" + std::to_string(*f.expected_seq);
  if (f.expected_hash) s += ",\"expected_hash\":\"" + to_hex(*f.expected_hash) + "\"";
  return s + "}";
}

std::string unanchored_field(const Unanchored& u) {
  return ",\"unanchored\":{\"lines\":" + std::to_string(u.lines) + ",\"last_seq\":" + std::to_string(u.last_seq) +
         ",\"seals\":" + std::to_string(u.seals) + ",\"vouched\":" + std::to_string(u.vouched) + "}";
}

}  // namespace keysvc::audit::detail

namespace keysvc::audit {

// ---------------------------------------------------------------- helpers

Hash sha256(std::string_view bytes) {
  Hash h{};
  SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), h.data());
  return h;
}

namespace {
std::vector<std::uint8_t> labelled_message(const char (&label)[sizeof kSealLabel], std::uint64_t seq, const Hash& head) {
  std::vector<std::uint8_t> m(label, label + sizeof label);  // includes the 00
  for (int k = 7; k >= 0; --k) m.push_back(static_cast<std::uint8_t>(seq >> (8 * k)));
  m.insert(m.end(), head.begin(), head.end());
  return m;
}
}  // namespace

std::vector<std::uint8_t> seal_message(std::uint64_t seq, const Hash& head) {
  return labelled_message(kSealLabel, seq, head);
}

std::vector<std::uint8_t> seal_message_v2(std::uint64_t sealed, const Hash& head) {
  return labelled_message(kSealLabelV2, sealed, head);
}

std::vector<std::uint8_t> seal_message_v3(const ChainId& chain, std::uint64_t sealed, const Hash& head) {
  std::vector<std::uint8_t> m(kSealLabelV3, kSealLabelV3 + sizeof kSealLabelV3);  // includes the 00
  m.insert(m.end(), chain.begin(), chain.end());
  for (int k = 7; k >= 0; --k) m.push_back(static_cast<std::uint8_t>(sealed >> (8 * k)));
  m.insert(m.end(), head.begin(), head.end());
  return m;
}

std::string iso8601_ms(std::int64_t unix_ms) {
  std::int64_t secs = unix_ms / 1000, ms = unix_ms % 1000;
  if (ms < 0) {
    ms += 1000;
    --secs;
  }
  std::time_t t = static_cast<std::time_t>(secs);
  std::tm tm{};
  if (!::gmtime_r(&t, &tm)) return "1970-01-01T00:00:00.000Z";
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  return buf;
}

bool UsageSummary::empty() const {
  for (const auto& [name, c] : keys)
    for (auto n : c)
      if (n) return false;
  return true;
}

}  // namespace keysvc::audit
