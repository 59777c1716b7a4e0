#include "keysvc/audit_log.h"

#include <fcntl.h>
#include <openssl/sha.h>
#include <spdlog/async.h>
#include <spdlog/async_logger.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <stdexcept>

#include "keysvc/log.h"

namespace keysvc::audit {

namespace {

// JSON string: quotes, backslash, control characters and every byte >= 0x7f escaped, so
// each record is one line of ASCII whatever a path or label holds.
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

// The event's name and its fields (",\"k\":v..."), or an empty name to drop it.
struct Render {
  std::string event;
  std::string fields;
};

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
        } else if constexpr (std::is_same_v<T, DecryptOnly>) {
          return {"decrypt_only", name_field(e.name)};
        } else if constexpr (std::is_same_v<T, Revoked>) {
          return {"revoked", name_field(e.name)};
        } else if constexpr (std::is_same_v<T, Destroyed>) {
          return {"destroyed", name_field(e.name)};
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

// Flushes the file sink and tells waiters how many flushes it has done.
class NotifyingFileSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  NotifyingFileSink(const std::string& path, bool do_fsync) : file_(path, false), path_(path), fsync_(do_fsync) {
    file_.set_pattern("%v");
  }
  std::uint64_t flushed() {
    std::lock_guard<std::mutex> lock(count_mutex_);
    return flushes_;
  }
  void wait_for(std::uint64_t n) {
    std::unique_lock<std::mutex> lock(count_mutex_);
    flushed_cv_.wait(lock, [&] { return flushes_ >= n; });
  }
  // The first write, flush or fsync failure, if any (the worker thread only reports
  // errors to spdlog's error handler; flush() turns this into an exception).
  std::string error() {
    std::lock_guard<std::mutex> lock(count_mutex_);
    return error_;
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    try {
      file_.log(msg);
    } catch (const std::exception& e) {
      fail(e.what());
      throw;
    }
  }
  void flush_() override {
    try {
      file_.flush();
    } catch (const std::exception& e) {
      fail(e.what());
    }
    if (fsync_) {
      // fsync on any descriptor of the file writes its dirty pages.
      int fd = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);  // O_APPEND: an append-only (chattr +a) file
      if (fd < 0 || ::fsync(fd) != 0) fail("fsync failed");
      if (fd >= 0) ::close(fd);
    }
    {
      std::lock_guard<std::mutex> lock(count_mutex_);
      ++flushes_;
    }
    flushed_cv_.notify_all();
  }

 private:
  spdlog::sinks::basic_file_sink_st file_;
  std::string path_;
  bool fsync_;
  std::mutex count_mutex_;
  std::condition_variable flushed_cv_;
  std::uint64_t flushes_ = 0;
  std::string error_;

  void fail(const std::string& what) {
    std::lock_guard<std::mutex> lock(count_mutex_);
    if (error_.empty()) error_ = what.empty() ? "write failed" : what;
  }
};

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

}  // namespace

// ---------------------------------------------------------------- helpers

std::string hex(std::span<const std::uint8_t> bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string s;
  s.reserve(bytes.size() * 2);
  for (auto b : bytes) {
    s.push_back(digits[b >> 4]);
    s.push_back(digits[b & 15]);
  }
  return s;
}

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

std::optional<ChainHead> read_head(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::string line, last;
  while (std::getline(in, line))
    if (!in.eof()) last = line;  // complete lines only (a final fragment has no '\n')
  static const std::string kPrefix = "{\"seq\":";
  if (last.rfind(kPrefix, 0) != 0) return std::nullopt;
  std::uint64_t seq = 0;
  std::size_t k = kPrefix.size();
  if (k >= last.size() || last[k] < '0' || last[k] > '9') return std::nullopt;
  for (; k < last.size() && last[k] >= '0' && last[k] <= '9' && seq < (1ull << 60); ++k)
    seq = seq * 10 + static_cast<std::uint64_t>(last[k] - '0');
  return ChainHead{path, seq, sha256(last)};
}

// ---------------------------------------------------------------- AuditLog

struct AuditLog::File {
  std::string path;
  std::shared_ptr<spdlog::details::thread_pool> pool;
  std::shared_ptr<NotifyingFileSink> sink;
  std::shared_ptr<spdlog::async_logger> logger;
  std::uint64_t flush_requests = 0;
};

AuditLog::AuditLog(const std::string& path, Sealer sealer, Options options)
    : sealer_(std::move(sealer)), options_(std::move(options)), pid_(static_cast<int>(::getpid())) {
  if (options_.host.empty()) options_.host = host_name();
  if (options_.previous) head_ = *options_.previous;
  else if (auto existing = read_head(path)) head_ = *existing;  // reopening a log: continue its chain
  last_seal_seq_ = head_.seq;
  std::unique_lock<std::mutex> lock(mutex_);
  open_locked(path);
  lock.unlock();
  flush();
}

AuditLog::~AuditLog() { close(); }

std::int64_t AuditLog::now_ms() const {
  auto t = options_.clock ? options_.clock() : std::chrono::system_clock::now();
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

void AuditLog::open_locked(const std::string& path) {
  auto f = std::make_unique<File>();
  f->path = path;
  try {
    f->sink = std::make_shared<NotifyingFileSink>(path, options_.fsync);
  } catch (const std::exception& e) {
    throw std::runtime_error("cannot open the audit log " + path + ": " + e.what());
  }
  f->pool = std::make_shared<spdlog::details::thread_pool>(8192, 1);
  // Not registered with spdlog: the audit log is nobody else's to find or reconfigure.
  f->logger = std::make_shared<spdlog::async_logger>("keysvc-audit", f->sink, f->pool,
                                                     spdlog::async_overflow_policy::block);
  f->logger->set_level(spdlog::level::trace);
  f->logger->flush_on(spdlog::level::off);
  ChainHead prev = head_;
  file_ = std::move(f);
  write_locked("chain_start", ",\"prev_file\":" + quote(prev.file) + ",\"prev_seq\":" + std::to_string(prev.seq));
}

std::uint64_t AuditLog::write_locked(const std::string& event, const std::string& fields) {
  const std::uint64_t seq = head_.seq + 1;
  std::string line = "{\"seq\":" + std::to_string(seq) + ",\"ts\":\"" + iso8601_ms(now_ms()) +
                     "\",\"host\":" + quote(options_.host) + ",\"pid\":" + std::to_string(pid_) + ",\"event\":\"" +
                     event + "\"" + fields + ",\"prev\":\"" + hex(head_.hash) + "\"}";
  file_->logger->log(spdlog::level::info, spdlog::string_view_t(line.data(), line.size()));
  head_ = {file_->path, seq, sha256(line)};
  return seq;
}

std::uint64_t AuditLog::append(const Event& event) {
  if (std::holds_alternative<Handshake>(event) && !options_.per_handshake) return 0;
  Render r = render(event);
  std::lock_guard<std::mutex> lock(mutex_);
  if (closed_) return 0;
  return write_locked(r.event, r.fields);
}

std::uint64_t AuditLog::append_durable(const Event& event) {
  std::uint64_t seq = append(event);
  flush();
  return seq;
}

void AuditLog::flush() {
  std::shared_ptr<NotifyingFileSink> sink;
  std::uint64_t target = 0;
  std::string path;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!file_) return;
    // Flush requests are posted in order under the mutex, so the n-th request is the
    // n-th flush the sink performs (nothing else flushes it: flush_on is off).
    target = ++file_->flush_requests;
    sink = file_->sink;
    path = file_->path;
    file_->logger->flush();
  }
  sink->wait_for(target);
  if (std::string error = sink->error(); !error.empty())
    throw std::runtime_error("audit log " + path + ": cannot write: " + error);
}

void AuditLog::seal_unlocked() {
  std::lock_guard serial(seal_mutex_);
  ChainHead head;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (closed_ || head_.seq == last_seal_seq_) return;  // closed, or nothing since the last seal
    if (!sealer_.hmac) return;                             // a writer without a token: a later writer seals
    head = head_;
  }
  const Mac mac = sealer_.hmac(seal_message_v2(head.seq, head.hash));  // in the token; appends go on
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (closed_) return;
    write_locked("seal", ",\"sealed\":" + std::to_string(head.seq) + ",\"head\":\"" + hex(head.hash) +
                             "\",\"mac\":\"" + hex(mac) + "\",\"key\":" + quote(sealer_.key_id_hex));
    last_seal_seq_ = head_.seq;
  }
}

void AuditLog::seal() {
  seal_unlocked();
  flush();
}

void AuditLog::summarize() {
  if (!options_.usage_source) return;
  UsageSummary s = options_.usage_source();
  if (!s.empty()) append(s);
}

void AuditLog::close_file_locked() {
  if (!file_) return;
  file_->logger->flush();
  // The pool first: its destructor drains the queue (every message, the flush included)
  // and joins the worker. Each queued message holds a reference to the logger, so were
  // the logger released first, the worker could drop the last one and destroy the
  // logger on its own thread, through a reference count inside libspdlog (not built with
  // ThreadSanitizer, which then reports that delete as racing with our release).
  // After the join the last reference is ours and the logger goes here.
  file_->pool.reset();
  file_->logger.reset();
  file_->sink->flush();
  file_.reset();
}

void AuditLog::rotate(const std::string& new_path) {
  seal_unlocked();
  std::lock_guard<std::mutex> lock(mutex_);
  if (closed_) throw std::logic_error("audit log closed");
  close_file_locked();
  open_locked(new_path);
  file_->logger->flush();
  ++file_->flush_requests;
}

void AuditLog::close() noexcept {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (closed_) return;
  }
  try {
    summarize();
  } catch (const std::exception& e) {
    logger()->error("audit: final usage summary failed: {}", e.what());
  }
  try {
    seal_unlocked();
  } catch (const std::exception& e) {
    logger()->error("audit: final seal failed (the tail of {} stays unsealed): {}", path(), e.what());
  }
  std::lock_guard<std::mutex> lock(mutex_);
  if (closed_) return;
  try {
    close_file_locked();
  } catch (const std::exception& e) {
    logger()->error("audit: closing the log failed: {}", e.what());
  }
  closed_ = true;
}

ChainHead AuditLog::head() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return head_;
}

std::string AuditLog::path() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return file_ ? file_->path : std::string();
}

}  // namespace keysvc::audit
