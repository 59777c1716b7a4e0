#include "keysvc/audit_log.h"

#include <spdlog/async.h>
#include <spdlog/async_logger.h>
#include <unistd.h>

#include <algorithm>
#include <stdexcept>

#include "audit_open.h"
#include "audit_render.h"
#include "audit_sink.h"
#include "keysvc/audit_anchor.h"
#include "keysvc/log.h"

namespace keysvc::audit {

using detail::quote;

struct AuditLog::File {
  std::string path;
  std::shared_ptr<spdlog::details::thread_pool> pool;
  std::shared_ptr<detail::NotifyingFileSink> sink;
  std::shared_ptr<spdlog::async_logger> logger;
  std::uint64_t flush_requests = 0;
  std::uint64_t bytes = 0;  // the file's size once every line written so far is in it
};

// The chain this writer continues, and its anchor as the writer keeps it.
struct AuditLog::Anchoring {
  WriterSlot slot;
  ChainId chain{};
  bool with_chain = false;          // chain_start and seals name `chain` (with the token)
  std::optional<Anchor> anchor;     // the latest value (with the token)
  bool unstored = false;            // the token does not have `anchor` yet
  bool clear_pending = false;       // remove the slot's pending mark after the next anchor update
  // Without the token: the first record this writer appended, for the pending mark.
  std::uint64_t first_seq = 0;
  Hash first_prev{};
};

AuditLog::AuditLog(const std::string& path, Sealer sealer, Options options)
    : sealer_(std::move(sealer)),
      options_(std::move(options)),
      pid_(static_cast<int>(::getpid())),
      anchoring_(std::make_unique<Anchoring>()) {
  if (options_.host.empty()) options_.host = this_host();
  if (sealer_.hmac && !sealer_.anchors) throw std::logic_error("an audit Sealer that seals needs its anchors");
  Anchoring& an = *anchoring_;
  an.slot = WriterSlot::of(options_.host, path);
  const bool with_token = static_cast<bool>(sealer_.hmac);
  const detail::OpenPlan plan = with_token ? detail::plan_open(path, sealer_.anchors->load(an.slot), sealer_.check)
                                           : detail::plan_tokenless(path);
  head_ = {path, plan.seq, plan.prev};
  last_ts_ = plan.last_ts;
  last_seal_seq_ = plan.seq;  // what is before is sealed, or not this writer's to seal
  an.chain = plan.chain;
  an.with_chain = with_token;
  an.first_prev = plan.prev;
  std::unique_lock<std::mutex> lock(mutex_);
  open_file_locked(path, plan.file_bytes);
  if (plan.add_newline) {  // the file ended inside a line: end it, so that ours starts a line
    file_->logger->log(spdlog::level::info, spdlog::string_view_t());
    file_->bytes += 1;
  }
  if (plan.chain_start) {
    head_.seq = plan.chain_start_seq - 1;
    std::string fields = (an.with_chain ? ",\"chain\":\"" + to_hex(an.chain) + "\"" : std::string()) +
                         ",\"writer\":" + quote(options_.writer) + ",\"file\":" + quote(an.slot.file) +
                         ",\"prev_file\":" + quote(plan.seq ? an.slot.file : std::string()) +
                         ",\"prev_seq\":" + std::to_string(plan.seq);
    if (plan.unanchored) fields += detail::unanchored_field(*plan.unanchored);
    if (plan.found) fields += detail::found_field(*plan.found);
    an.first_seq = write_locked("chain_start", fields);
  } else if (with_token) {  // without it, there is nothing it checked to say
    an.first_seq = write_locked("reopened", ",\"anchored\":" + std::to_string(plan.anchored) + ",\"verified\":" +
                                                std::to_string(plan.verified) +
                                                ",\"vouched\":" + std::to_string(plan.vouched));
  }
  if (an.first_seq == 0) an.first_seq = head_.seq + 1;  // the first record appended
  const std::uint64_t first_seq = an.first_seq;
  lock.unlock();
  flush();
  if (!with_token) return;
  an.clear_pending = plan.clear_pending;
  an.anchor = plan.anchor;
  if (plan.starts_file) {
    Anchor a;
    a.chain = an.chain;
    a.writer = options_.writer;
    a.host = an.slot.host;
    a.file = an.slot.file;
    a.created_ms = now_ms();
    a.first = first_seq;
    an.anchor = a;
  }
  if (plan.store_anchor) sealer_.anchors->store(an.slot, *an.anchor);
  if (plan.new_chain && options_.anchor_retention.count() > 0) {
    try {
      if (std::size_t n = sealer_.anchors->sweep(options_.anchor_retention, now_ms(), an.slot))
        logger()->info("audit: removed {} anchor(s) and pending mark(s) older than the retention from the token", n);
    } catch (const std::exception& e) {
      logger()->warn("audit: removing old anchors failed: {}", e.what());
    }
  }
}

AuditLog::~AuditLog() { close(); }

std::int64_t AuditLog::now_ms() const {
  auto t = options_.clock ? options_.clock() : std::chrono::system_clock::now();
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

void AuditLog::open_file_locked(const std::string& path, std::uint64_t bytes) {
  auto f = std::make_unique<File>();
  f->path = path;
  f->bytes = bytes;
  try {
    f->sink = std::make_shared<detail::NotifyingFileSink>(path, options_.fsync);
  } catch (const std::exception& e) {
    throw std::runtime_error("cannot open the audit log " + path + ": " + e.what());
  }
  f->pool = std::make_shared<spdlog::details::thread_pool>(8192, 1);
  // Not registered with spdlog: the audit log is nobody else's to find or reconfigure.
  f->logger = std::make_shared<spdlog::async_logger>("keysvc-audit", f->sink, f->pool,
                                                     spdlog::async_overflow_policy::block);
  f->logger->set_level(spdlog::level::trace);
  f->logger->flush_on(spdlog::level::off);
  file_ = std::move(f);
}

std::uint64_t AuditLog::write_locked(const std::string& event, const std::string& fields) {
  const std::uint64_t seq = head_.seq + 1;
  last_ts_ = std::max(last_ts_, now_ms());  // a clock stepping back never makes ts go back
  std::string line = "{\"seq\":" + std::to_string(seq) + ",\"ts\":\"" + iso8601_ms(last_ts_) +
                     "\",\"host\":" + quote(options_.host) + ",\"pid\":" + std::to_string(pid_) + ",\"event\":\"" +
                     event + "\"" + fields + ",\"prev\":\"" + to_hex(head_.hash) + "\"}";
  file_->logger->log(spdlog::level::info, spdlog::string_view_t(line.data(), line.size()));
  file_->bytes += line.size() + 1;
  head_ = {file_->path, seq, sha256(line)};
  return seq;
}

std::uint64_t AuditLog::append(const Event& event) {
  if (std::holds_alternative<Handshake>(event) && !options_.per_handshake) return 0;
  detail::Render r = detail::render(event);
  std::lock_guard<std::mutex> lock(mutex_);
  if (closed_ || !taking_) return 0;
  return write_locked(r.event, r.fields);
}

std::uint64_t AuditLog::append_durable(const Event& event) {
  std::uint64_t seq = append(event);
  flush();
  return seq;
}

void AuditLog::flush() {
  std::shared_ptr<detail::NotifyingFileSink> sink;
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
  ChainId chain{};
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (closed_ || !sealer_.hmac) return;  // closed, or a writer without a token (audit_log.h)
    if (head_.seq == last_seal_seq_ && !anchoring_->unstored) return;  // nothing since the last seal
    head = head_;
    chain = anchoring_->chain;
  }
  if (head.seq != last_seal_seq_) {
    const Mac mac = sealer_.hmac(seal_message_v3(chain, head.seq, head.hash));  // in the token; appends go on
    std::lock_guard<std::mutex> lock(mutex_);
    if (closed_) return;
    const std::uint64_t seq = write_locked("seal", ",\"chain\":\"" + to_hex(chain) + "\",\"sealed\":" +
                                                       std::to_string(head.seq) + ",\"head\":\"" + to_hex(head.hash) +
                                                       "\",\"mac\":\"" + to_hex(mac) + "\",\"key\":" +
                                                       quote(sealer_.key_id_hex));
    // The seal covers itself when nothing came between; records appended while the token
    // computed the MAC are not covered: the next seal covers them (and this one).
    last_seal_seq_ = seq == head.seq + 1 ? seq : head.seq;
    Anchor& a = *anchoring_->anchor;
    a.sealed = head.seq;
    a.head = head.hash;
    a.seal = seq;
    a.seal_hash = head_.hash;
    a.offset = file_->bytes;
    a.sealed_at_ms = last_ts_;
    anchoring_->unstored = true;
  }
  flush();  // the seal line is in the file before the token names it
  store_anchor();
}

void AuditLog::store_anchor() {
  Anchor a;
  WriterSlot slot;
  bool clear = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!anchoring_->unstored) return;
    a = *anchoring_->anchor;
    slot = anchoring_->slot;
    clear = anchoring_->clear_pending;
  }
  sealer_.anchors->store(slot, a);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (anchoring_->anchor->seal == a.seal) anchoring_->unstored = false;
    anchoring_->clear_pending = false;
  }
  if (clear) sealer_.anchors->clear_pending(slot);  // its records are sealed now
}

void AuditLog::seal() {
  seal_unlocked();
  flush();
}

bool AuditLog::seal_due() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return sealer_.hmac && !closed_ && (head_.seq != last_seal_seq_ || anchoring_->unstored);
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
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (closed_) throw std::logic_error("audit log closed");
    const ChainHead prev = head_;
    close_file_locked();
    open_file_locked(new_path, 0);
    Anchoring& an = *anchoring_;
    an.slot = WriterSlot::of(options_.host, new_path);
    const std::uint64_t seq =
        write_locked("chain_start", (an.with_chain ? ",\"chain\":\"" + to_hex(an.chain) + "\"" : std::string()) +
                                        ",\"writer\":" + quote(options_.writer) + ",\"file\":" + quote(an.slot.file) +
                                        ",\"prev_file\":" + quote(prev.file) +
                                        ",\"prev_seq\":" + std::to_string(prev.seq));
    if (an.anchor) {  // the new file has its own anchor, from its first seal (below) on
      an.anchor->file = an.slot.file;
      an.anchor->first = seq;
      an.anchor->created_ms = last_ts_;
    }
    file_->logger->flush();
    ++file_->flush_requests;
  }
  seal_unlocked();
}

void AuditLog::mark_pending() {
  PendingRange range;
  WriterSlot slot;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!sealer_.anchors || sealer_.hmac || anchoring_->first_seq == 0 || head_.seq < anchoring_->first_seq) return;
    range = {anchoring_->first_seq, head_.seq, anchoring_->first_prev, head_.hash};
    slot = anchoring_->slot;
  }
  PendingMark mark = sealer_.anchors->load(slot).pending.value_or(PendingMark{});
  mark.ranges.push_back(range);
  if (mark.ranges.size() > kMaxPendingRanges)
    mark.ranges.erase(mark.ranges.begin(), mark.ranges.end() - static_cast<long>(kMaxPendingRanges));
  mark.written_ms = now_ms();
  sealer_.anchors->set_pending(slot, mark);
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
  {
    std::lock_guard<std::mutex> lock(mutex_);
    taking_ = false;  // the final seal covers the last record
  }
  try {
    seal_unlocked();
  } catch (const std::exception& e) {
    logger()->error("audit: final seal failed (the tail of {} stays unsealed): {}", path(), e.what());
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (closed_) return;
    try {
      close_file_locked();
    } catch (const std::exception& e) {
      logger()->error("audit: closing the log failed: {}", e.what());
    }
    closed_ = true;
  }
  try {
    mark_pending();
  } catch (const std::exception& e) {
    logger()->warn("audit: naming the unsealed records in the token's pending mark failed: {}", e.what());
  }
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
