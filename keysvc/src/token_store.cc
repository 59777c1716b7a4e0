#include "keysvc/token_store.h"

#include <openssl/rand.h>

#include <charconv>
#include <string>

#include "keysvc/hsm/error.h"
#include "keysvc/hsm/object.h"

namespace keysvc::token_store {

namespace {

constexpr std::string_view kRecordMagic = "keysvc-generation v1\n";

hsm::Bytes id_of(const KeyName& name) { return hsm::Bytes(name.begin(), name.end()); }

std::string record_label(const KeyName& name) { return kRecordLabelPrefix + to_hex(name); }

std::string format_record(std::int64_t created) {
  return std::string(kRecordMagic) + "created=" + std::to_string(created) + "\n";
}

// Returns false for a record this version does not understand (it is then ignored).
bool parse_record(std::string_view text, std::int64_t& created) {
  if (!text.starts_with(kRecordMagic)) return false;
  text.remove_prefix(kRecordMagic.size());
  constexpr std::string_view key = "created=";
  if (!text.starts_with(key)) return false;
  text.remove_prefix(key.size());
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), created);
  return ec == std::errc() && end != text.data();
}

CK_OBJECT_HANDLE find_one_key(hsm::Session& session, const KeyName& name, const char* label) {
  auto found = hsm::find_objects(session, {.object_class = CKO_SECRET_KEY, .id = id_of(name), .label = label});
  return found.size() == 1 ? found.front() : CK_INVALID_HANDLE;
}

}  // namespace

KeyRing load(hsm::Session& session) {
  std::vector<Generation> generations;
  for (CK_OBJECT_HANDLE record : hsm::find_objects(session, {.object_class = CKO_DATA, .application = kApplication})) {
    hsm::Bytes label = hsm::get_attribute(session, record, CKA_LABEL);
    std::string_view text(reinterpret_cast<const char*>(label.data()), label.size());
    if (!text.starts_with(kRecordLabelPrefix)) continue;
    auto name = key_name_from_hex(text.substr(std::string_view(kRecordLabelPrefix).size()));
    if (!name) continue;
    hsm::Bytes value = hsm::get_attribute(session, record, CKA_VALUE);
    Generation g;
    g.name = *name;
    if (!parse_record(std::string_view(reinterpret_cast<const char*>(value.data()), value.size()), g.created))
      continue;
    g.enc_key = find_one_key(session, g.name, kEncKeyLabel);
    g.mac_key = find_one_key(session, g.name, kMacKeyLabel);
    if (g.enc_key == CK_INVALID_HANDLE || g.mac_key == CK_INVALID_HANDLE) continue;
    generations.push_back(g);
  }
  return KeyRing(std::move(generations));
}

Generation create_generation(hsm::Session& session, std::int64_t created) {
  Generation g;
  g.created = created;
  if (RAND_bytes(g.name.data(), static_cast<int>(g.name.size())) != 1)
    throw hsm::Error("RAND_bytes failed while naming a new generation");
  hsm::Bytes id = id_of(g.name);
  try {
    g.enc_key = hsm::generate_hmac_key(session, id, kEncKeyLabel);
    g.mac_key = hsm::generate_hmac_key(session, id, kMacKeyLabel);
    std::string record = format_record(created);
    hsm::create_data_object(session, kApplication, record_label(g.name),
                            {reinterpret_cast<const std::uint8_t*>(record.data()), record.size()});
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
  hsm::Bytes id = id_of(name);
  // Record first: once it is gone no server picks the generation up again.
  for (auto h : hsm::find_objects(
           session, {.object_class = CKO_DATA, .label = record_label(name), .application = kApplication}))
    hsm::destroy_object(session, h);
  for (const char* label : {kEncKeyLabel, kMacKeyLabel})
    for (auto h : hsm::find_objects(session, {.object_class = CKO_SECRET_KEY, .id = id, .label = label}))
      hsm::destroy_object(session, h);
}

GenerationCustody read_custody(hsm::Session& session, const Generation& generation) {
  return {hsm::read_custody(session, generation.enc_key), hsm::read_custody(session, generation.mac_key)};
}

}  // namespace keysvc::token_store
