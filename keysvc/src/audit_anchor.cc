#include "keysvc/audit_anchor.h"

#include <openssl/rand.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <filesystem>
#include <map>
#include <stdexcept>

#include "audit_record.h"
#include "key_value_text.h"
#include "keysvc/hsm/error.h"
#include "keysvc/hsm/object.h"
#include "keysvc/token_gateway.h"
#include "keysvc/token_store.h"

namespace keysvc::audit {

namespace {

constexpr std::string_view kAnchorMagic = "keysvc-audit-anchor v1";
constexpr std::string_view kPendingMagic = "keysvc-audit-pending v1";

std::string_view as_text(const hsm::Bytes& b) { return {reinterpret_cast<const char*>(b.data()), b.size()}; }
std::span<const std::uint8_t> as_bytes(const std::string& s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

// Host names and paths in a value: '%', control bytes and bytes >= 0x7f as %XX, so each
// field stays on its line whatever the path holds.
std::string escape(std::string_view s) {
  static constexpr char digits[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (c == '%' || c < 0x20 || c >= 0x7f) {
      out += '%';
      out += digits[c >> 4];
      out += digits[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

std::optional<std::string> unescape(std::string_view s) {
  std::string out;
  for (std::size_t k = 0; k < s.size(); ++k) {
    if (s[k] != '%') {
      out += s[k];
      continue;
    }
    unsigned v = 0;
    if (k + 2 >= s.size()) return std::nullopt;
    auto [end, ec] = std::from_chars(s.data() + k + 1, s.data() + k + 3, v, 16);
    if (ec != std::errc() || end != s.data() + k + 3) return std::nullopt;
    out += static_cast<char>(v);
    k += 2;
  }
  return out;
}

template <class T>
std::optional<T> number(std::string_view s) {
  T v{};
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

std::optional<Hash> hash_hex(std::string_view s) { return detail::hash_from_hex(s); }

// "MAGIC\nkey=value\n..." -> the values by key; std::nullopt for another magic line. A key
// given twice keeps every value (pending marks list their ranges so).
std::optional<std::multimap<std::string, std::string, std::less<>>> fields_of(std::string_view text,
                                                                             std::string_view magic) {
  auto lines = key_value_lines(text, magic);
  if (!lines) return std::nullopt;
  std::multimap<std::string, std::string, std::less<>> out;
  for (const auto& [key, value] : *lines) out.emplace(std::string(key), std::string(value));
  return out;
}

}  // namespace

std::string this_host() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

ChainId new_chain_id() {
  ChainId id{};
  if (RAND_bytes(id.data(), static_cast<int>(id.size())) != 1) throw std::runtime_error("RAND_bytes failed");
  return id;
}

std::optional<ChainId> chain_id_from_hex(std::string_view text) {
  if (text.size() != 32) return std::nullopt;
  ChainId id{};
  for (std::size_t k = 0; k < id.size(); ++k) {
    unsigned v = 0;
    auto [end, ec] = std::from_chars(text.data() + 2 * k, text.data() + 2 * k + 2, v, 16);
    if (ec != std::errc() || end != text.data() + 2 * k + 2) return std::nullopt;
    id[k] = static_cast<std::uint8_t>(v);
  }
  if (to_hex(id) != text) return std::nullopt;  // lowercase only, as written
  return id;
}

std::string WriterSlot::id() const {
  Hash h = sha256(host + "\n" + file);
  return to_hex(std::span<const std::uint8_t>(h).subspan(0, 16));
}

WriterSlot WriterSlot::of(std::string host, const std::string& path) {
  return {std::move(host), std::filesystem::absolute(path).lexically_normal().string()};
}

std::string Anchor::format() const {
  return std::string(kAnchorMagic) + "\nchain=" + to_hex(chain) + "\nwriter=" + escape(writer) +
         "\nhost=" + escape(host) + "\nfile=" + escape(file) + "\ncreated=" + std::to_string(created_ms) +
         "\nfirst=" + std::to_string(first) + "\nsealed=" + std::to_string(sealed) + "\nhead=" + to_hex(head) +
         "\nseal=" + std::to_string(seal) + "\nseal_hash=" + to_hex(seal_hash) + "\noffset=" + std::to_string(offset) +
         "\nsealed_at=" + std::to_string(sealed_at_ms) + "\n";
}

std::optional<Anchor> Anchor::parse(std::string_view text) {
  auto f = fields_of(text, kAnchorMagic);
  if (!f) return std::nullopt;
  auto get = [&](std::string_view key) -> std::optional<std::string_view> {
    auto it = f->find(key);
    if (it == f->end()) return std::nullopt;
    return std::string_view(it->second);
  };
  Anchor a;
  auto chain = get("chain");
  auto writer = get("writer");
  auto host = get("host");
  auto file = get("file");
  if (!chain || !writer || !host || !file) return std::nullopt;
  auto id = chain_id_from_hex(*chain);
  auto w = unescape(*writer), h = unescape(*host), p = unescape(*file);
  if (!id || !w || !h || !p) return std::nullopt;
  a.chain = *id;
  a.writer = *w;
  a.host = *h;
  a.file = *p;
  for (auto [key, out] : {std::pair{"created", &a.created_ms}, std::pair{"sealed_at", &a.sealed_at_ms}}) {
    auto v = get(key);
    auto n = v ? number<std::int64_t>(*v) : std::nullopt;
    if (!n) return std::nullopt;
    *out = *n;
  }
  for (auto [key, out] : {std::pair{"first", &a.first}, std::pair{"sealed", &a.sealed}, std::pair{"seal", &a.seal},
                          std::pair{"offset", &a.offset}}) {
    auto v = get(key);
    auto n = v ? number<std::uint64_t>(*v) : std::nullopt;
    if (!n) return std::nullopt;
    *out = *n;
  }
  for (auto [key, out] : {std::pair{"head", &a.head}, std::pair{"seal_hash", &a.seal_hash}}) {
    auto v = get(key);
    auto h2 = v ? hash_hex(*v) : std::nullopt;
    if (!h2) return std::nullopt;
    *out = *h2;
  }
  return a;
}

std::string PendingMark::format() const {
  std::string s = std::string(kPendingMagic) + "\nwritten=" + std::to_string(written_ms) + "\n";
  for (const auto& r : ranges)
    s += "range=" + std::to_string(r.first_seq) + " " + std::to_string(r.last_seq) + " " + to_hex(r.prev) + " " +
         to_hex(r.last) + "\n";
  return s;
}

std::optional<PendingMark> PendingMark::parse(std::string_view text) {
  auto f = fields_of(text, kPendingMagic);
  if (!f) return std::nullopt;
  PendingMark m;
  auto written = f->find("written");
  auto w = written == f->end() ? std::nullopt : number<std::int64_t>(written->second);
  if (!w) return std::nullopt;
  m.written_ms = *w;
  auto [from, to] = f->equal_range("range");
  for (auto it = from; it != to; ++it) {
    std::string_view v = it->second;  // "FIRST LAST PREV LAST_HASH"
    std::array<std::string_view, 4> parts;
    for (auto& p : parts) {
      auto sp = v.find(' ');
      p = v.substr(0, sp);
      v.remove_prefix(sp == std::string_view::npos ? v.size() : sp + 1);
    }
    auto first = number<std::uint64_t>(parts[0]), last = number<std::uint64_t>(parts[1]);
    auto prev = hash_hex(parts[2]), last_hash = hash_hex(parts[3]);
    if (!first || !last || !prev || !last_hash || !v.empty() || *first > *last) return std::nullopt;
    m.ranges.push_back({*first, *last, *prev, *last_hash});
  }
  return m;
}

// ---------------------------------------------------------------- AnchorStore

struct AnchorStore::Handles {
  // The token refused to change a data object's value (SoftHSM never lets one change):
  // from then on values are replaced by new objects without asking first.
  std::atomic<bool> replace_only{false};
  std::mutex mutex;
  std::uint64_t generation = 0;
  std::map<std::string, CK_OBJECT_HANDLE> by_label;

  std::optional<CK_OBJECT_HANDLE> get(const hsm::Session& s, const std::string& label) {
    std::lock_guard lock(mutex);
    if (generation != s.generation()) return std::nullopt;
    auto it = by_label.find(label);
    if (it == by_label.end()) return std::nullopt;
    return it->second;
  }
  void put(const hsm::Session& s, const std::string& label, std::optional<CK_OBJECT_HANDLE> h) {
    std::lock_guard lock(mutex);
    if (generation != s.generation()) {
      by_label.clear();
      generation = s.generation();
    }
    if (h) by_label[label] = *h;
    else by_label.erase(label);
  }
};

namespace {

std::vector<CK_OBJECT_HANDLE> find_by_label(hsm::Session& s, const std::string& label) {
  return hsm::find_objects(s, {.object_class = CKO_DATA, .label = label, .application = token_store::kApplication});
}

// The value of the object, or std::nullopt if it vanished meanwhile.
std::optional<hsm::Bytes> value_of(hsm::Session& s, CK_OBJECT_HANDLE h) {
  try {
    return hsm::get_attribute(s, h, CKA_VALUE);
  } catch (const hsm::Pkcs11Error& e) {
    if (e.rv() != CKR_OBJECT_HANDLE_INVALID) throw;
    return std::nullopt;
  }
}

// Codes of a token that does not let a data object's value change in place.
bool refuses_update(CK_RV rv) {
  return rv == CKR_ATTRIBUTE_READ_ONLY || rv == CKR_ACTION_PROHIBITED || rv == CKR_FUNCTION_NOT_SUPPORTED ||
         rv == CKR_ATTRIBUTE_TYPE_INVALID || rv == CKR_TEMPLATE_INCONSISTENT;
}

// Writes `value` into the one object labelled `label`: its value changed in place, or a
// new object made first and the old one destroyed after (a crash between leaves both;
// load() takes the later seal and the next write removes the other). Extra objects of
// that label go.
void put_value(hsm::Session& s, const std::string& label, const std::string& value, bool is_private,
               std::optional<CK_OBJECT_HANDLE> cached, std::atomic<bool>& replace_only,
               std::optional<CK_OBJECT_HANDLE>& stored) {
  const hsm::DataObjectOptions options{.is_private = is_private, .modifiable = true};
  std::vector<CK_OBJECT_HANDLE> found = cached ? std::vector<CK_OBJECT_HANDLE>{*cached} : find_by_label(s, label);
  if (!found.empty() && !replace_only.load(std::memory_order_relaxed)) {
    try {
      hsm::set_attribute(s, found[0], CKA_VALUE, as_bytes(value));
      stored = found[0];
      for (std::size_t k = 1; k < found.size(); ++k) hsm::destroy_object(s, found[k]);
      return;
    } catch (const hsm::Pkcs11Error& e) {
      if (!refuses_update(e.rv()) && e.rv() != CKR_OBJECT_HANDLE_INVALID) throw;
      if (refuses_update(e.rv())) replace_only.store(true, std::memory_order_relaxed);
      if (e.rv() == CKR_OBJECT_HANDLE_INVALID && cached) found = find_by_label(s, label);  // gone since cached
    }
  }
  stored = hsm::create_data_object(s, options, token_store::kApplication, label, as_bytes(value));
  for (CK_OBJECT_HANDLE old : found) {
    try {
      hsm::destroy_object(s, old);
    } catch (const hsm::Pkcs11Error& e) {
      if (e.rv() != CKR_OBJECT_HANDLE_INVALID) throw;  // gone meanwhile
    }
  }
}

}  // namespace

std::shared_ptr<AnchorStore> AnchorStore::on_gateway(TokenGateway& gateway) {
  return std::make_shared<AnchorStore>([&gateway](std::function<void(hsm::Session&)> work) { gateway.call(std::move(work)); },
                                       true);
}

std::shared_ptr<AnchorStore> AnchorStore::public_only(const Config& config) {
  return std::make_shared<AnchorStore>(
      [config](std::function<void(hsm::Session&)> work) { TokenGateway::with_public_session(config, work); }, false);
}

AnchorStore::AnchorStore(Runner run, bool logged_in)
    : run_(std::move(run)), logged_in_(logged_in), handles_(std::make_shared<Handles>()) {}

SlotState AnchorStore::load(const WriterSlot& slot) {
  auto out = std::make_shared<SlotState>();
  run_([out, handles = handles_, anchor_label = slot.anchor_label(), pending_label = slot.pending_label()](
           hsm::Session& s) {
    *out = SlotState{};
    for (CK_OBJECT_HANDLE h : find_by_label(s, anchor_label)) {
      auto v = value_of(s, h);
      auto a = v ? Anchor::parse(as_text(*v)) : std::nullopt;
      // Two objects (a crash while replacing one): the later seal wins.
      if (a && (!out->anchor || a->seal > out->anchor->seal)) {
        out->anchor = a;
        handles->put(s, anchor_label, h);
      }
    }
    for (CK_OBJECT_HANDLE h : find_by_label(s, pending_label))
      if (auto v = value_of(s, h)) out->pending = PendingMark::parse(as_text(*v));
  });
  return *out;
}

void AnchorStore::store(const WriterSlot& slot, const Anchor& anchor) {
  if (!logged_in_) throw std::logic_error("audit anchors need a logged-in session");
  run_([handles = handles_, label = slot.anchor_label(), value = anchor.format()](hsm::Session& s) {
    std::optional<CK_OBJECT_HANDLE> stored;
    put_value(s, label, value, true, handles->get(s, label), handles->replace_only, stored);
    handles->put(s, label, stored);
  });
}

void AnchorStore::set_pending(const WriterSlot& slot, const PendingMark& mark) {
  run_([handles = handles_, label = slot.pending_label(), value = mark.format()](hsm::Session& s) {
    std::optional<CK_OBJECT_HANDLE> stored;
    put_value(s, label, value, false, std::nullopt, handles->replace_only, stored);
  });
}

void AnchorStore::clear_pending(const WriterSlot& slot) {
  run_([label = slot.pending_label()](hsm::Session& s) {
    for (CK_OBJECT_HANDLE h : find_by_label(s, label)) hsm::destroy_object(s, h);
  });
}

std::size_t AnchorStore::sweep(std::chrono::milliseconds retention, std::int64_t now_ms, const WriterSlot& keep) {
  if (!logged_in_) throw std::logic_error("audit anchors need a logged-in session");
  auto removed = std::make_shared<std::size_t>(0);
  const std::int64_t before = now_ms - retention.count();
  run_([removed, before, keep_anchor = keep.anchor_label(), keep_pending = keep.pending_label()](hsm::Session& s) {
    const std::string_view anchor_prefix = kAnchorLabelPrefix, pending_prefix = kPendingLabelPrefix;
    for (CK_OBJECT_HANDLE h :
         hsm::find_objects(s, {.object_class = CKO_DATA, .application = token_store::kApplication})) {
      std::optional<hsm::Bytes> label;
      try {
        label = hsm::get_attribute(s, h, CKA_LABEL);
      } catch (const hsm::Pkcs11Error& e) {
        if (e.rv() != CKR_OBJECT_HANDLE_INVALID) throw;
        continue;
      }
      std::string_view l = as_text(*label);
      const bool is_anchor = l.starts_with(anchor_prefix) && l != keep_anchor;
      const bool is_pending = l.starts_with(pending_prefix) && l != keep_pending;
      if (!is_anchor && !is_pending) continue;
      auto v = value_of(s, h);
      if (!v) continue;
      std::optional<std::int64_t> touched;
      if (is_anchor) {
        if (auto a = Anchor::parse(as_text(*v))) touched = a->touched_ms();
      } else if (auto m = PendingMark::parse(as_text(*v))) {
        touched = m->written_ms;
      }
      if (touched && *touched < before) {  // a value this version cannot read is left alone
        hsm::destroy_object(s, h);
        ++*removed;
      }
    }
  });
  return *removed;
}

}  // namespace keysvc::audit
