#include "output.h"

#include <algorithm>
#include <ctime>
#include <ostream>

namespace keysvcctl {

std::string dump_pretty(const Json& j) { return j.dump(2, ' ', false, Json::error_handler_t::replace); }

std::string dump_line(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

std::string iso8601_utc(std::int64_t unix_seconds) {
  std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  if (::gmtime_r(&t, &tm) == nullptr) return std::to_string(unix_seconds);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

void add_schedule(Json& object, const keysvc::Schedule& s) {
  for (auto [key, value] : {std::pair{"created", s.created}, {"encrypt_from", s.encrypt_from},
                            {"encrypt_until", s.encrypt_until}, {"decrypt_until", s.decrypt_until}}) {
    object[key] = iso8601_utc(value);
    object[std::string(key) + "_unix"] = value;
  }
}

void Table::print(std::ostream& out) const {
  std::vector<std::size_t> width;
  for (const auto& row : rows_) {
    if (width.size() < row.size()) width.resize(row.size(), 0);
    for (std::size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
  }
  for (const auto& row : rows_) {
    std::string line;
    for (std::size_t c = 0; c < row.size(); ++c) {
      line += row[c];
      if (c + 1 < row.size()) line += std::string(width[c] - row[c].size() + 2, ' ');
    }
    out << line << '\n';
  }
}

Json custody_json(const keysvc::hsm::KeyCustody& c) {
  Json j;
  j["sensitive"] = c.sensitive;
  j["always_sensitive"] = c.always_sensitive;
  j["extractable"] = c.extractable;
  j["never_extractable"] = c.never_extractable;
  j["sign"] = c.sign;
  j["verify"] = c.verify;
  j["encrypt"] = c.encrypt;
  j["decrypt"] = c.decrypt;
  j["wrap"] = c.wrap;
  j["unwrap"] = c.unwrap;
  j["derive"] = c.derive;
  j["copyable"] = c.copyable_known ? Json(c.copyable) : Json();  // null: a 2.20 token has no CKA_COPYABLE
  j["modifiable"] = c.modifiable;
  j["held_in_token"] = c.held_in_token();
  j["enforced_by_token"] = c.enforced;
  return j;
}

std::string custody_summary(const keysvc::hsm::KeyCustody& c) {
  std::vector<std::string> parts;
  if (c.held_in_token()) {
    parts = {"sensitive", "never-extractable"};
  } else {
    if (!c.sensitive) parts.push_back("NOT sensitive");
    else if (!c.always_sensitive) parts.push_back("sensitive (not always)");
    else parts.push_back("sensitive");
    if (c.extractable) parts.push_back("EXTRACTABLE");
    else if (!c.never_extractable) parts.push_back("not extractable (was once)");
    else parts.push_back("never-extractable");
  }
  std::vector<std::string> usage;
  for (auto [on, name] : {std::pair{c.sign, "sign"}, {c.verify, "verify"}, {c.encrypt, "encrypt"},
                          {c.decrypt, "decrypt"}, {c.wrap, "WRAP"}, {c.unwrap, "unwrap"}, {c.derive, "derive"}}) {
    if (on) usage.push_back(name);
  }
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : ", ") + p;
  if (usage.size() == 1) {
    out += ", " + usage.front() + " only";
  } else if (usage.empty()) {
    out += ", no usage";
  } else {
    out += ", usage:";
    for (std::size_t k = 0; k < usage.size(); ++k) out += (k ? "/" : " ") + usage[k];
  }
  if (!c.enforced) out += " (metadata, not enforced by this token)";
  return out;
}

}  // namespace keysvcctl
