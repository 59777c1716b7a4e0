#include "output.h"

#include <ctime>
#include <cstdio>
#include <ostream>

namespace keysvcctl {

Json& Json::set(std::string key, Json value) {
  if (std::holds_alternative<std::nullptr_t>(v_)) v_ = Object{};
  std::get<Object>(v_).emplace_back(std::move(key), std::move(value));
  return *this;
}

Json& Json::push(Json value) {
  if (std::holds_alternative<std::nullptr_t>(v_)) v_ = Array{};
  std::get<Array>(v_).push_back(std::move(value));
  return *this;
}

std::string json_escape(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

std::string Json::dump() const {
  std::string out;
  dump(out, 0, false);
  return out;
}

std::string Json::dump_line() const {
  std::string out;
  dump(out, 0, true);
  return out;
}

void Json::dump(std::string& out, int indent, bool compact) const {
  const std::string pad = compact ? "" : std::string(static_cast<std::size_t>(indent + 2), ' ');
  const std::string close_pad = compact ? "" : std::string(static_cast<std::size_t>(indent), ' ');
  const char* open_object = compact ? "{" : "{\n";
  const char* open_array = compact ? "[" : "[\n";
  const char* comma = compact ? ", " : ",\n";
  const char* last = compact ? "" : "\n";
  if (std::holds_alternative<std::nullptr_t>(v_)) {
    out += "null";
  } else if (auto b = std::get_if<bool>(&v_)) {
    out += *b ? "true" : "false";
  } else if (auto i = std::get_if<std::int64_t>(&v_)) {
    out += std::to_string(*i);
  } else if (auto s = std::get_if<std::string>(&v_)) {
    out += json_escape(*s);
  } else if (auto o = std::get_if<Object>(&v_)) {
    if (o->empty()) {
      out += "{}";
      return;
    }
    out += open_object;
    for (std::size_t k = 0; k < o->size(); ++k) {
      out += pad + json_escape((*o)[k].first) + ": ";
      (*o)[k].second.dump(out, indent + 2, compact);
      out += k + 1 < o->size() ? comma : last;
    }
    out += close_pad + "}";
  } else if (auto a = std::get_if<Array>(&v_)) {
    if (a->empty()) {
      out += "[]";
      return;
    }
    out += open_array;
    for (std::size_t k = 0; k < a->size(); ++k) {
      out += pad;
      (*a)[k].dump(out, indent + 2, compact);
      out += k + 1 < a->size() ? comma : last;
    }
    out += close_pad + "]";
  }
}

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
    object.set(key, iso8601_utc(value));
    object.set(std::string(key) + "_unix", value);
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
  j.set("sensitive", c.sensitive);
  j.set("always_sensitive", c.always_sensitive);
  j.set("extractable", c.extractable);
  j.set("never_extractable", c.never_extractable);
  j.set("sign", c.sign);
  j.set("verify", c.verify);
  j.set("encrypt", c.encrypt);
  j.set("decrypt", c.decrypt);
  j.set("wrap", c.wrap);
  j.set("unwrap", c.unwrap);
  j.set("derive", c.derive);
  j.set("copyable", c.copyable_known ? Json(c.copyable) : Json());  // null: a 2.20 token has no CKA_COPYABLE
  j.set("modifiable", c.modifiable);
  j.set("held_in_token", c.held_in_token());
  j.set("enforced_by_token", c.enforced);
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
