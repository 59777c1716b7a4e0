#include "keysvc/token_store.h"

#include <openssl/rand.h>

#include <algorithm>
#include <charconv>
#include <map>
#include <optional>
#include <string>

#include "key_value_text.h"
#include "keysvc/hsm/error.h"
#include "keysvc/hsm/object.h"
#include "keysvc/key_custody.h"

namespace keysvc::token_store {

namespace {

constexpr std::string_view kRecordMagic = "keysvc-generation v1";
constexpr std::string_view kRecordMagicV2 = "keysvc-generation v2";  // derivation 2
constexpr std::string_view kRecordMagicV3 = "keysvc-generation v3";  // derivation 3: the epoch tier
constexpr std::string_view kRevocationMagic = "keysvc-revocation v1";

hsm::Bytes id_of(const KeyName& name) { return hsm::Bytes(name.begin(), name.end()); }

std::string record_label(const KeyName& name) { return kRecordLabelPrefix + to_hex(name); }
std::string revocation_label(const KeyName& name) { return kRevocationLabelPrefix + to_hex(name); }

std::string_view as_text(const hsm::Bytes& b) { return {reinterpret_cast<const char*>(b.data()), b.size()}; }

// Parses "MAGIC\nkey=integer\n..." into its fields; nullopt if the magic line differs
// (a format this version does not know: ignored) or a line is malformed.
std::optional<std::map<std::string, std::int64_t, std::less<>>> parse_fields(std::string_view text,
                                                                            std::string_view magic) {
  auto lines = key_value_lines(text, magic);
  if (!lines) return std::nullopt;
  std::map<std::string, std::int64_t, std::less<>> fields;
  for (const auto& [key, digits] : *lines) {
    std::int64_t value = 0;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
    if (ec != std::errc() || end != digits.data() + digits.size()) return std::nullopt;
    fields.emplace(std::string(key), value);
  }
  return fields;
}

std::optional<Schedule> parse_schedule(std::string_view text, std::string_view magic) {
  auto f = parse_fields(text, magic);
  if (!f) return std::nullopt;
  for (const char* key : {"created", "encrypt_from", "encrypt_until", "decrypt_until"})
    if (!f->count(key)) return std::nullopt;
  Schedule s{f->at("created"), f->at("encrypt_from"), f->at("encrypt_until"), f->at("decrypt_until")};
  if (!(s.encrypt_from < s.encrypt_until && s.encrypt_until <= s.decrypt_until)) return std::nullopt;
  return s;
}

// An epoch length a generation may have: 1 s to a day (config.h checks that it divides
// the configured encrypt period).
bool epoch_fits(std::int64_t epoch) { return epoch > 0 && epoch <= 86400; }

std::string format_schedule(const Schedule& s, std::string_view magic) {
  return std::string(magic) + "\ncreated=" + std::to_string(s.created) +
         "\nencrypt_from=" + std::to_string(s.encrypt_from) + "\nencrypt_until=" + std::to_string(s.encrypt_until) +
         "\ndecrypt_until=" + std::to_string(s.decrypt_until) + "\n";
}

CK_OBJECT_HANDLE find_one_key(hsm::Session& session, const KeyName& name, const char* label) {
  auto found = hsm::find_objects(session, {.object_class = CKO_SECRET_KEY, .id = id_of(name), .label = label});
  return found.size() == 1 ? found.front() : CK_INVALID_HANDLE;
}

// The key name after `prefix` in a label, if the label has that form.
std::optional<KeyName> name_in_label(std::string_view label, std::string_view prefix) {
  if (!label.starts_with(prefix)) return std::nullopt;
  return key_name_from_hex(label.substr(prefix.size()));
}

void create_record(hsm::Session& session, const std::string& label, const std::string& text) {
  hsm::create_data_object(session, kApplication, label,
                          {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()});
}

void destroy_records(hsm::Session& session, const std::string& label) {
  for (auto h : hsm::find_objects(session, {.object_class = CKO_DATA, .label = label, .application = kApplication}))
    hsm::destroy_object(session, h);
}

// Why `g` (a generation record with its keys) is not to be trusted, or empty: its
// schedule first (no token call), then each key's custody attributes.
std::string refusal_of(hsm::Session& session, const Generation& g, const CustodyRule& rule) {
  if (std::string why = schedule_refusal(g.schedule); !why.empty()) return "record: " + why;
  const bool one_key = g.enc_key == g.mac_key;  // derivations 2 and 3
  const std::pair<CK_OBJECT_HANDLE, const char*> keys[] = {{g.enc_key, one_key ? "key" : "enc key"},
                                                           {g.mac_key, "mac key"}};
  for (std::size_t k = 0; k < (one_key ? 1u : 2u); ++k) {
    hsm::KeyCustody custody;
    try {
      custody = hsm::read_custody(session, keys[k].first);
    } catch (const hsm::Pkcs11Error& e) {
      // A key that will not say what it is is not trusted; any other failure fails the
      // scan as every failed read does.
      if (e.rv() != CKR_ATTRIBUTE_TYPE_INVALID && e.rv() != CKR_ATTRIBUTE_SENSITIVE) throw;
      return std::string(keys[k].second) + ": its custody attributes cannot be read (" + e.what() + ")";
    }
    if (std::string why = custody_refusal(custody, rule); !why.empty()) return std::string(keys[k].second) + ": " + why;
  }
  return {};
}

}  // namespace

KeyRing load(hsm::Session& session, const CustodyRule& rule) {
  if (!session.user_logged_in()) throw hsm::Pkcs11Error("C_GetSessionInfo", CKR_USER_NOT_LOGGED_IN);
  std::map<KeyName, Generation> by_name;
  struct Revocation {
    std::int64_t revoked, keep_until;
    std::optional<Schedule> was;  // the generation's schedule, in records that keep it
  };
  std::map<KeyName, Revocation> revocations;
  const hsm::ObjectQuery records{.object_class = CKO_DATA, .application = kApplication};
  std::vector<CK_OBJECT_HANDLE> vanished;
  for (CK_OBJECT_HANDLE record : hsm::find_objects(session, records)) {
    try {
      hsm::Bytes label = hsm::get_attribute(session, record, CKA_LABEL);
      if (auto name = name_in_label(as_text(label), kRecordLabelPrefix)) {
        hsm::Bytes text = hsm::get_attribute(session, record, CKA_VALUE);
        Generation g;
        g.name = *name;
        if (auto v1 = parse_schedule(as_text(text), kRecordMagic)) {
          g.schedule = *v1;
          g.enc_key = find_one_key(session, g.name, kEncKeyLabel);
          g.mac_key = find_one_key(session, g.name, kMacKeyLabel);
        } else if (auto v2 = parse_schedule(as_text(text), kRecordMagicV2)) {
          g.schedule = *v2;
          g.derivation = 2;
          g.enc_key = g.mac_key = find_one_key(session, g.name, kTicketKeyLabel);
        } else if (auto v3 = parse_schedule(as_text(text), kRecordMagicV3)) {
          auto f = parse_fields(as_text(text), kRecordMagicV3);
          const auto epoch = f->find("epoch");
          if (epoch == f->end() || !epoch_fits(epoch->second)) continue;  // malformed: never used
          g.schedule = *v3;
          g.derivation = 3;
          g.epoch_seconds = epoch->second;
          g.enc_key = g.mac_key = find_one_key(session, g.name, kEpochRootLabel);
        } else {
          continue;  // a format this version does not know
        }
        if (!g.has_keys()) continue;
        g.refused = refusal_of(session, g, rule);
        by_name[g.name] = g;
      } else if (auto revoked = name_in_label(as_text(label), kRevocationLabelPrefix)) {
        auto f = parse_fields(as_text(hsm::get_attribute(session, record, CKA_VALUE)), kRevocationMagic);
        if (!f || !f->count("revoked") || !f->count("decrypt_until")) continue;
        Revocation r{f->at("revoked"), f->at("decrypt_until"), std::nullopt};
        if (f->count("created") && f->count("encrypt_from") && f->count("encrypt_until") &&
            f->at("encrypt_from") <= f->at("encrypt_until"))
          r.was = Schedule{f->at("created"), f->at("encrypt_from"), f->at("encrypt_until"), r.keep_until};
        revocations[*revoked] = r;
      }
    } catch (const hsm::Pkcs11Error& e) {
      // Another process (the rotator) destroyed it between the search and the read.
      if (e.rv() != CKR_OBJECT_HANDLE_INVALID) throw;
      vanished.push_back(record);
    }
  }
  // ... unless a second search still finds it: then the token failed the read (a reset,
  // a fault), and skipping it would load a ring missing live generations (even an
  // empty one) as if nothing had happened.
  if (!vanished.empty()) {
    for (CK_OBJECT_HANDLE again : hsm::find_objects(session, records))
      if (std::find(vanished.begin(), vanished.end(), again) != vanished.end())
        throw hsm::Pkcs11Error("C_GetAttributeValue", CKR_OBJECT_HANDLE_INVALID);
  }
  for (const auto& [name, r] : revocations) {
    Generation& g = by_name[name];  // a record alone if the keys are gone already
    g.name = name;
    g.revoked = true;
    g.revoked_at = r.revoked;
    // Keys gone: the schedule the record kept, its encrypt window ending at the
    // revocation (older records: every time is the revocation's).
    if (!g.has_keys())
      g.schedule = r.was ? Schedule{r.was->created, r.was->encrypt_from,
                                    std::clamp(r.revoked, r.was->encrypt_from, r.was->encrypt_until), r.keep_until}
                         : Schedule{r.revoked, r.revoked, r.revoked, r.keep_until};
  }
  std::vector<Generation> generations;
  for (auto& [name, g] : by_name) {
    g.module_generation = session.generation();
    generations.push_back(g);
  }
  return KeyRing(std::move(generations));
}

Generation create_generation(hsm::Session& session, const Schedule& schedule, const KeyOptions& options) {
  if (options.derivation < 1 || options.derivation > 3)
    throw hsm::Error("unknown derivation " + std::to_string(options.derivation));
  if (options.derivation == 3 && !epoch_fits(options.epoch_seconds))
    throw hsm::Error("epoch of " + std::to_string(options.epoch_seconds) + " s is not 1 s to 1 day");
  Generation g;
  g.schedule = schedule;
  g.module_generation = session.generation();
  if (RAND_bytes(g.name.data(), static_cast<int>(g.name.size())) != 1)
    throw hsm::Error("RAND_bytes failed while naming a new generation");
  hsm::Bytes id = id_of(g.name);
  try {
    if (options.derivation == 3) {
      g.derivation = 3;
      g.epoch_seconds = options.epoch_seconds;
      g.enc_key = g.mac_key = hsm::generate_hmac_key(session, id, kEpochRootLabel, options.copyable);
      create_record(session, record_label(g.name),
                    format_schedule(schedule, kRecordMagicV3) + "epoch=" + std::to_string(options.epoch_seconds) + "\n");
    } else if (options.derivation == 2) {
      g.derivation = 2;
      g.enc_key = g.mac_key =
          hsm::generate_hmac_key(session, id, kTicketKeyLabel, options.copyable, hsm::kHmacSha512KeyBytes);
      create_record(session, record_label(g.name), format_schedule(schedule, kRecordMagicV2));
    } else {
      g.enc_key = hsm::generate_hmac_key(session, id, kEncKeyLabel, options.copyable);
      g.mac_key = hsm::generate_hmac_key(session, id, kMacKeyLabel, options.copyable);
      create_record(session, record_label(g.name), format_schedule(schedule, kRecordMagic));
    }
  } catch (...) {
    try {
      destroy_generation(session, g.name);
    } catch (...) {
      // Keys without a record are never used; the original error is what matters.
    }
    throw;
  }
  return g;
}

void destroy_generation(hsm::Session& session, const KeyName& name) {
  // Record first: once it is gone no server picks the generation up again.
  destroy_records(session, record_label(name));
  hsm::Bytes id = id_of(name);
  for (const char* label : {kEncKeyLabel, kMacKeyLabel, kTicketKeyLabel, kEpochRootLabel})
    for (auto h : hsm::find_objects(session, {.object_class = CKO_SECRET_KEY, .id = id, .label = label}))
      hsm::destroy_object(session, h);
}

void write_revocation(hsm::Session& session, const KeyName& name, std::int64_t revoked, std::int64_t keep_until,
                      const std::optional<Schedule>& was) {
  std::string text = std::string(kRevocationMagic) + "\nrevoked=" + std::to_string(revoked) +
                     "\ndecrypt_until=" + std::to_string(keep_until) + "\n";
  if (was)
    text += "created=" + std::to_string(was->created) + "\nencrypt_from=" + std::to_string(was->encrypt_from) +
            "\nencrypt_until=" + std::to_string(was->encrypt_until) + "\n";
  create_record(session, revocation_label(name), text);
}

void drop_revocation(hsm::Session& session, const KeyName& name) { destroy_records(session, revocation_label(name)); }

GenerationCustody read_custody(hsm::Session& session, const Generation& generation) {
  return {hsm::read_custody(session, generation.enc_key), hsm::read_custody(session, generation.mac_key)};
}

}  // namespace keysvc::token_store
