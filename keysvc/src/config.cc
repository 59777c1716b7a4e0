#include "keysvc/config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <optional>
#include <filesystem>
#include <set>
#include <toml++/toml.h>

#include "keysvc/hsm/token_uri.h"
#include "keysvc/hsm/secret.h"
#include "keysvc/key_custody.h"
#include "keysvc/listen_address.h"

namespace keysvc {

namespace {

std::string where(const std::string& source, const toml::source_region& r) {
  return source + ":" + std::to_string(r.begin.line) + ": ";
}

std::string resolve(const std::string& base_dir, const std::string& path) {
  if (path.empty() || path.front() == '/' || base_dir.empty()) return path;
  return (std::filesystem::path(base_dir) / path).lexically_normal().string();
}

// Every number keysvc reads from TOML goes through here: the node's value if it is a
// TOML integer, else nothing. Never toml++'s converting value<std::int64_t>(), which
// turns a float into an integer and, for a float beyond int64's range
// (430145145266909266909865.0), does an out-of-range float-to-integer conversion:
// undefined behaviour (found by fuzz/config_fuzzer). Floats are refused, not rounded.
std::optional<std::int64_t> integer_of(const toml::node& n) {
  if (const auto* i = n.as_integer()) return i->get();
  return std::nullopt;
}

// Reads tables strictly: every key must be known, every value of the right type.
class Reader {
 public:
  Reader(const toml::table& root, std::string source) : root_(root), source_(std::move(source)) {
    for (auto&& [k, v] : root_) {
      static const std::set<std::string> sections{"hsm", "tickets", "rotation", "log", "audit", "metrics", "process"};
      if (!v.is_table() || !sections.count(std::string(k.str())))
        throw ConfigError(where(source_, k.source()) + "unknown section '" + std::string(k.str()) + "'");
    }
  }

  const toml::node* get(std::string_view section, std::string_view key) {
    known_[std::string(section)].insert(std::string(key));
    const toml::table* t = root_[section].as_table();
    return t ? t->get(key) : nullptr;
  }

  std::string string(std::string_view section, std::string_view key, std::string fallback) {
    const toml::node* n = get(section, key);
    if (!n) return fallback;
    if (auto s = n->value<std::string>()) return *s;
    throw bad(n, section, key, "a string");
  }

  std::int64_t integer(std::string_view section, std::string_view key, std::int64_t fallback,
                       std::int64_t lo, std::int64_t hi) {
    const toml::node* n = get(section, key);
    if (!n) return fallback;
    auto v = integer_of(*n);
    if (!v) throw bad(n, section, key, "an integer");
    if (*v < lo || *v > hi)
      throw ConfigError(where(source_, n->source()) + std::string(section) + "." + std::string(key) +
                        " must be between " + std::to_string(lo) + " and " + std::to_string(hi));
    return *v;
  }

  bool boolean(std::string_view section, std::string_view key, bool fallback) {
    const toml::node* n = get(section, key);
    if (!n) return fallback;
    if (auto b = n->value<bool>(); b && n->is_boolean()) return *b;
    throw bad(n, section, key, "true or false");
  }

  std::chrono::seconds duration(std::string_view section, std::string_view key, std::chrono::seconds fallback) {
    const toml::node* n = get(section, key);
    if (!n) return fallback;
    try {
      if (auto i = integer_of(*n)) return parse_duration(std::to_string(*i));
      if (auto s = n->value<std::string>()) return parse_duration(*s);
    } catch (const ConfigError& e) {
      throw ConfigError(where(source_, n->source()) + std::string(section) + "." + std::string(key) + ": " +
                        e.what());
    }
    throw bad(n, section, key, "a duration such as \"2h\"");
  }

  // A duration that may be given in milliseconds ("250ms"), within [lo, hi].
  std::chrono::milliseconds millis(std::string_view section, std::string_view key, std::chrono::milliseconds fallback,
                                   std::chrono::milliseconds lo, std::chrono::milliseconds hi) {
    const toml::node* n = get(section, key);
    if (!n) return fallback;
    const std::string name = std::string(section) + "." + std::string(key);
    std::chrono::milliseconds v{};
    try {
      if (auto i = integer_of(*n)) v = parse_duration_ms(std::to_string(*i));
      else if (auto s = n->value<std::string>()) v = parse_duration_ms(*s);
      else throw bad(n, section, key, "a duration such as \"250ms\"");
    } catch (const ConfigError& e) {
      if (!n->is_integer() && !n->is_string()) throw;
      throw ConfigError(where(source_, n->source()) + name + ": " + e.what());
    }
    if (v < lo || v > hi)
      throw ConfigError(where(source_, n->source()) + name + " must be between " + std::to_string(lo.count()) +
                        "ms and " + std::to_string(hi.count()) + "ms");
    return v;
  }

  // "FILE:LINE: " for a problem found after reading: the line of the first of `keys`
  // that is set, else of the first key's section header, else line 1.
  std::string at(std::initializer_list<std::pair<std::string_view, std::string_view>> keys) const {
    for (auto [section, key] : keys) {
      if (const toml::table* t = root_[section].as_table())
        if (const toml::node* n = t->get(key)) return where(source_, n->source());
    }
    if (keys.size() > 0)
      if (const toml::table* t = root_[keys.begin()->first].as_table(); t && t->source().begin.line > 0)
        return where(source_, t->source());
    return source_ + ":1: ";
  }

  // After reading: any key nobody asked for is a typo.
  void reject_unknown() {
    for (auto&& [section, node] : root_) {
      for (auto&& [k, v] : *node.as_table()) {
        if (!known_[std::string(section.str())].count(std::string(k.str())))
          throw ConfigError(where(source_, k.source()) + "unknown key '" + std::string(section.str()) + "." +
                            std::string(k.str()) + "'");
      }
    }
  }

 private:
  ConfigError bad(const toml::node* n, std::string_view section, std::string_view key, const char* want) {
    return ConfigError(where(source_, n->source()) + std::string(section) + "." + std::string(key) + " must be " +
                       want);
  }
  const toml::table& root_;
  std::string source_;
  std::map<std::string, std::set<std::string>> known_;
};

}  // namespace

std::chrono::milliseconds parse_duration_ms(std::string_view text) {
  if (text.size() > 2 && text.ends_with("ms")) {
    std::int64_t value = 0;
    std::string_view digits = text.substr(0, text.size() - 2);
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
    if (ec != std::errc() || end != digits.data() + digits.size() || value < 0)
      throw ConfigError("invalid duration '" + std::string(text) + "'");
    if (value > (std::int64_t{1} << 40)) throw ConfigError("duration '" + std::string(text) + "' is too long");
    return std::chrono::milliseconds(value);
  }
  return parse_duration(text);
}

std::chrono::seconds parse_duration(std::string_view text) {
  std::int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  std::string_view unit(end, text.data() + text.size() - end);
  if (ec != std::errc() || value < 0) throw ConfigError("invalid duration '" + std::string(text) + "'");
  std::int64_t scale = 0;
  if (unit.empty() || unit == "s") scale = 1;
  else if (unit == "m") scale = 60;
  else if (unit == "h") scale = 3600;
  else if (unit == "d") scale = 86400;
  else throw ConfigError("invalid duration '" + std::string(text) + "' (use s, m, h or d)");
  if (value > (std::int64_t{1} << 40) / scale) throw ConfigError("duration '" + std::string(text) + "' is too long");
  return std::chrono::seconds(value * scale);
}

// tickets.epoch when unset: 5 minutes, or the largest whole divisor of the encrypt period
// below that (a 3 s period in a test gets 3 s epochs, a 7-minute one 210 s).
std::chrono::seconds default_epoch(std::chrono::seconds encrypt_period) {
  const std::int64_t period = encrypt_period.count();
  if (period <= 0) return std::chrono::minutes(5);
  for (std::int64_t e = std::min<std::int64_t>(period, 300); e > 1; --e)
    if (period % e == 0) return std::chrono::seconds(e);
  return std::chrono::seconds(1);
}

Config Config::parse(std::string_view text, const std::string& source, const std::string& base_dir) {
  toml::table root;
  try {
    root = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    throw ConfigError(source + ":" + std::to_string(e.source().begin.line) + ": " + std::string(e.description()));
  }
  Reader r(root, source);
  Config c;
  c.hsm.module = resolve(base_dir, r.string("hsm", "module", ""));
  c.hsm.token_uri = r.string("hsm", "token", "");
  // The parsed tree must not keep a pin-value either (TokenUriText took it out).
  if (auto* hsm_table = root["hsm"].as_table())
    if (auto* token = hsm_table->get("token"); token && token->is_string()) hsm::wipe(token->as_string()->get());
  c.hsm.pin_source = r.string("hsm", "pin", "");
  if (c.hsm.pin_source.starts_with("file:"))
    c.hsm.pin_source = "file:" + resolve(base_dir, c.hsm.pin_source.substr(5));
  c.hsm.sessions = static_cast<std::size_t>(r.integer("hsm", "sessions", 4, 1, 256));
  c.hsm.session_copies = r.boolean("hsm", "session_copies", c.hsm.session_copies);
  {
    using std::chrono::milliseconds;
    c.hsm.call_timeout = r.millis("hsm", "call_timeout", c.hsm.call_timeout, milliseconds(0), milliseconds(60000));
    c.hsm.maintenance_timeout = r.millis("hsm", "maintenance_timeout", c.hsm.maintenance_timeout, milliseconds(100),
                                         milliseconds(600000));
    c.hsm.breaker_threshold =
        static_cast<unsigned>(r.integer("hsm", "breaker_threshold", c.hsm.breaker_threshold, 1, 1000));
    c.hsm.breaker_backoff =
        r.millis("hsm", "breaker_backoff", c.hsm.breaker_backoff, milliseconds(1), milliseconds(60000));
  }
  c.tickets.per_handshake = static_cast<int>(r.integer("tickets", "per_handshake", 2, 0, 16));
  c.tickets.lifetime = r.duration("tickets", "lifetime", c.tickets.lifetime);
  c.tickets.max_session_age = r.duration("tickets", "max_session_age", c.tickets.max_session_age);
  c.tickets.create_if_empty = r.boolean("tickets", "create_if_empty", true);
  c.tickets.issue_pool = static_cast<std::size_t>(r.integer("tickets", "issue_pool", 64, 0, 4096));
  RotationPolicy& rot = c.rotation;
  rot.encrypt_period = r.duration("rotation", "encrypt_period", rot.encrypt_period);
  rot.publish_lead = r.duration("rotation", "publish_lead", rot.publish_lead);
  rot.decrypt_window = r.duration("rotation", "decrypt_window", c.tickets.lifetime);
  rot.clock_skew = r.duration("rotation", "clock_skew", rot.clock_skew);
  rot.refresh_interval = r.duration("rotation", "refresh_interval", rot.refresh_interval);
  rot.self_rotate = r.boolean("rotation", "self_rotate", rot.self_rotate);
  rot.copyable_keys = r.boolean("rotation", "copyable_keys", rot.copyable_keys);
  rot.derivation = static_cast<int>(r.integer("rotation", "derivation", rot.derivation, 1, 2));
  {
    const std::string tier = r.string("rotation", "tier", "epoch");
    if (tier != "epoch" && tier != "strict")
      throw ConfigError(r.at({{"rotation", "tier"}}) + "rotation.tier must be \"epoch\" or \"strict\"");
    rot.tier = tier == "epoch" ? RotationPolicy::Tier::kEpoch : RotationPolicy::Tier::kStrict;
  }
  rot.epoch = r.duration("tickets", "epoch", default_epoch(rot.encrypt_period));
  c.log_level = r.string("log", "level", "info");
  c.metrics.listen = r.string("metrics", "listen", "");
  c.process.core_dumps = r.boolean("process", "core_dumps", c.process.core_dumps);
  c.audit.path = resolve(base_dir, r.string("audit", "path", ""));
  c.audit.seal_interval = r.duration("audit", "seal_interval", c.audit.seal_interval);
  c.audit.summary_interval = r.duration("audit", "summary_interval", c.audit.summary_interval);
  c.audit.per_handshake = r.boolean("audit", "per_handshake", c.audit.per_handshake);
  c.audit.fsync = r.boolean("audit", "fsync", c.audit.fsync);
  c.audit.anchor_retention = r.duration("audit", "anchor_retention", c.audit.anchor_retention);
  r.reject_unknown();

  // Cross-field checks still name a line (the key's, or its section's if it is missing).
  if (c.hsm.module.empty()) throw ConfigError(r.at({{"hsm", "module"}}) + "hsm.module is required");
  if (c.hsm.token_uri.empty()) throw ConfigError(r.at({{"hsm", "token"}}) + "hsm.token is required");
  if (c.tickets.lifetime.count() == 0)
    throw ConfigError(r.at({{"tickets", "lifetime"}}) + "tickets.lifetime must be positive");
  if (c.tickets.max_session_age < c.tickets.lifetime)
    throw ConfigError(r.at({{"tickets", "max_session_age"}, {"tickets", "lifetime"}}) +
                      "tickets.max_session_age must be at least tickets.lifetime");
  if (rot.encrypt_period.count() == 0)
    throw ConfigError(r.at({{"rotation", "encrypt_period"}}) + "rotation.encrypt_period must be positive");
  if (rot.epoch.count() == 0 || rot.epoch > std::chrono::hours(24) ||
      (rot.encrypt_period.count() > 0 && rot.encrypt_period.count() % rot.epoch.count() != 0))
    throw ConfigError(r.at({{"tickets", "epoch"}, {"rotation", "encrypt_period"}}) +
                      "tickets.epoch must be 1s to 1d and a whole divisor of rotation.encrypt_period");
  if (rot.refresh_interval.count() == 0)
    throw ConfigError(r.at({{"rotation", "refresh_interval"}}) + "rotation.refresh_interval must be positive");
  if (rot.decrypt_window < c.tickets.lifetime)
    throw ConfigError(r.at({{"rotation", "decrypt_window"}, {"tickets", "lifetime"}}) +
                      "rotation.decrypt_window must be at least tickets.lifetime");
  if (rot.publish_lead <= rot.refresh_interval + rot.clock_skew)
    throw ConfigError(r.at({{"rotation", "publish_lead"}, {"rotation", "refresh_interval"}, {"rotation", "clock_skew"}}) +
                      "rotation.publish_lead must exceed rotation.refresh_interval + rotation.clock_skew");
  // A token schedule reaching further is refused as planted (key_custody.h).
  const std::pair<const char*, std::chrono::seconds> reaches[] = {
      {"encrypt_period", rot.encrypt_period}, {"decrypt_window", rot.decrypt_window}, {"publish_lead", rot.publish_lead}};
  for (const auto& [key, value] : reaches) {
    if (value.count() > kMaxScheduleStep)
      throw ConfigError(r.at({{"rotation", key}}) + "rotation." + key + " must be at most 31d");
  }
  if (c.metrics.enabled())
    if (std::string problem = check_listen_address(c.metrics.listen); !problem.empty())
      throw ConfigError(r.at({{"metrics", "listen"}}) + "metrics.listen: " + problem);
  static const std::set<std::string> levels{"trace", "debug", "info", "warn", "error", "off"};
  if (!levels.count(c.log_level))
    throw ConfigError(r.at({{"log", "level"}}) + "log.level must be one of trace, debug, info, warn, error, off");
  return c;
}

namespace {

// The file's text in one buffer of its own, wiped after parsing: a token URI in it may
// carry a pin-value (no stream buffers that would be freed with the text in them).
std::string read_config_text(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) throw ConfigError("cannot read config file " + path);
  struct Close {
    int fd;
    ~Close() { ::close(fd); }
  } close_fd{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) throw ConfigError("cannot read config file " + path);
  constexpr off_t kMaxBytes = 1 << 20;
  if (st.st_size > kMaxBytes) throw ConfigError("config file " + path + " is larger than 1 MiB");
  std::string text(static_cast<std::size_t>(st.st_size) + 1, '\0');  // one more: a file that grew
  std::size_t got = 0;
  while (got < text.size()) {
    ssize_t n = ::read(fd, text.data() + got, text.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      hsm::wipe(text);
      throw ConfigError("cannot read config file " + path);
    }
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  if (got == text.size()) {
    hsm::wipe(text);
    throw ConfigError("config file " + path + " changed while it was read");
  }
  text.resize(got);
  return text;
}

}  // namespace

Config Config::load_file(const std::string& path) {
  std::string text = read_config_text(path);
  hsm::WipeOnExit wipe_text(text);
  std::string dir = std::filesystem::absolute(path).parent_path().string();
  Config c = parse(text, path, dir);
  c.source = std::filesystem::absolute(path).lexically_normal().string();
  return c;
}

hsm::PinSource pin_source_of(const Config& config) {
  if (!config.hsm.pin_source.empty()) return hsm::PinSource::parse(config.hsm.pin_source);
  hsm::TokenUri uri = hsm::TokenUri::parse(config.hsm.token_uri);
  if (auto source = uri.pin_source()) return hsm::PinSource::parse(*source);
  if (auto value = uri.pin_value()) return hsm::PinSource::literal(std::move(*value));
  throw ConfigError("no PIN source: set hsm.pin (file:PATH or env:NAME) or pin-source in the token URI");
}

}  // namespace keysvc
