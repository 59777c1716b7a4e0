#include "audit_open.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "keysvc/audit_verify.h"

namespace keysvc::audit::detail {

namespace {

// Seqs beyond this are not continued (the file is not trusted here).
constexpr std::uint64_t kMaxSeq = std::uint64_t{1} << 60;

// Where a walk stands: the last accepted line.
struct Cursor {
  std::uint64_t seq = 0;
  Hash hash{};
  std::int64_t ts = 0;
};

Cursor cursor_of(const Line& l) { return {l.rec ? l.rec->seq : 0, l.hash, l.rec ? l.rec->ts : 0}; }

// The bytes of `path` from `from` on, and its size; an absent file is empty.
std::string read_from(const std::string& path, std::uint64_t from, std::uint64_t& size) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) {
      size = 0;
      return {};
    }
    throw std::runtime_error("cannot read the audit log " + path + ": " + std::strerror(errno));
  }
  struct stat st{};
  std::string text;
  bool ok = ::fstat(fd, &st) == 0;
  size = ok ? static_cast<std::uint64_t>(st.st_size) : 0;
  if (ok && from < size) {
    text.resize(size - from);
    std::size_t got = 0;
    while (ok && got < text.size()) {
      ssize_t n = ::pread(fd, text.data() + got, text.size() - got, static_cast<off_t>(from + got));
      if (n < 0 && errno == EINTR) continue;
      ok = n > 0;
      if (ok) got += static_cast<std::size_t>(n);
    }
  }
  const int saved = errno;
  ::close(fd);
  if (!ok) throw std::runtime_error("cannot read the audit log " + path + ": " + std::strerror(saved));
  return text;
}

// What a writer accepts after lines[from - 1] (or from `start`): records that chain on,
// up to the last seal of `chain` that verifies, then stretches the pending mark names.
struct Accepted {
  std::size_t end = 0;  // lines[from, end) accepted
  Cursor at;            // the last accepted line
  std::optional<std::size_t> seal;  // the last verified seal, if it ends the accepted part
  std::uint64_t vouched = 0;
  std::vector<PendingRange> missing;  // named by the mark, not in the file
};

Accepted walk_tail(const std::vector<Line>& lines, std::size_t from, Cursor start, const std::optional<ChainId>& chain,
                   const KeyedHmac& check, std::vector<PendingRange> ranges) {
  Accepted a{from, start, std::nullopt, 0, {}};
  Cursor c = start;
  std::size_t chained = from;
  for (std::size_t i = from; i < lines.size(); ++i) {
    const Line& l = lines[i];
    if (!l.terminated || !l.rec || l.rec->prev != c.hash || l.rec->seq != c.seq + 1 || l.rec->ts < c.ts) break;
    c = cursor_of(l);
    chained = i + 1;
    if (l.rec->event != "seal" || !chain) continue;
    SealCheck sc = check_seal(lines, i, from > 0 ? from - 1 : 0, chain, check);
    if (!sc.ok) continue;
    const std::size_t end = sc.covered + 1 == i ? i + 1 : sc.covered + 1;
    if (end <= a.end) continue;
    a.end = end;
    a.at = cursor_of(lines[end - 1]);
    a.seal = end == i + 1 ? std::optional<std::size_t>(i) : std::nullopt;
  }
  std::sort(ranges.begin(), ranges.end(),
            [](const PendingRange& x, const PendingRange& y) { return x.first_seq < y.first_seq; });
  bool in_order = true;
  for (const PendingRange& r : ranges) {
    if (r.last_seq <= a.at.seq) continue;  // sealed since: a writer died before clearing the mark
    std::optional<std::size_t> last;
    if (in_order && a.end < chained && lines[a.end].rec->seq == r.first_seq && r.prev == a.at.hash)
      for (std::size_t k = a.end; k < chained && !last; ++k)
        if (lines[k].hash == r.last && lines[k].rec->seq == r.last_seq) last = k;
    if (last) {
      a.vouched += *last + 1 - a.end;
      a.end = *last + 1;
      a.at = cursor_of(lines[*last]);
      a.seal.reset();
      continue;
    }
    in_order = false;
    bool present = false;
    for (std::size_t k = a.end; k < lines.size() && !present; ++k) present = lines[k].hash == r.last;
    if (!present) a.missing.push_back(r);
  }
  return a;
}

Found region(const std::vector<Line>& lines, std::size_t from, std::string reason) {
  Found f;
  f.reason = std::move(reason);
  f.lines = lines.size() - from;
  f.sha256 = region_hash(lines, from, lines.size());
  for (std::size_t k = from; k < lines.size(); ++k) {
    f.bytes += lines[k].raw.size() + 1;
    if (!lines[k].rec) continue;
    if (!f.first_seq) f.first_seq = lines[k].rec->seq;
    f.last_seq = std::max(f.last_seq, lines[k].rec->seq);
  }
  return f;
}

// The plan after accepting lines[0, a.end) (or the anchored part before them): continue
// if nothing else is there, else a new segment stating what was found.
void finish(OpenPlan& plan, const std::vector<Line>& lines, const Accepted& a, std::string reason,
            std::optional<std::uint64_t> expected_seq = std::nullopt, std::optional<Hash> expected_hash = std::nullopt) {
  plan.seq = a.at.seq;
  plan.prev = a.at.hash;
  plan.last_ts = a.at.ts;
  plan.vouched = a.vouched;
  if (!a.missing.empty()) {
    reason = "deleted";
    expected_seq = a.missing.back().last_seq;
    expected_hash = a.missing.back().last;
  }
  if (a.end < lines.size() || expected_seq) {
    plan.chain_start = true;
    plan.found = region(lines, a.end, std::move(reason));
    plan.found->expected_seq = expected_seq;
    plan.found->expected_hash = expected_hash;
    // Past what the token named; not past the found lines' seqs, which anyone could have
    // written (a seq near 2^64 would leave no room for this writer's).
    plan.chain_start_seq = std::max(plan.seq, expected_seq.value_or(0)) + 1;
  } else {
    plan.chain_start_seq = plan.seq + 1;
  }
}

// The file's content, verified as verify does (seals, not anchors), accepted up to its
// last verified seal, then what the pending mark names.
Accepted accept_checked(const std::vector<LogText>& text, const std::vector<Line>& lines, const KeyedHmac& check,
                        const std::vector<PendingRange>& ranges, VerifyResult& vr) {
  vr = verify_texts(text, TokenView(check));
  Cursor at = vr.covered ? cursor_of(lines[vr.covered - 1]) : Cursor{};
  return walk_tail(lines, vr.covered, at, std::nullopt, check, ranges);
}

// The seal the anchor names, in `lines` (read from the anchor's offset, or the whole file).
std::optional<std::size_t> anchored_seal(const std::vector<Line>& lines, const Anchor& a) {
  for (std::size_t k = lines.size(); k-- > 0;)
    if (lines[k].terminated && lines[k].hash == a.seal_hash && lines[k].rec && lines[k].rec->seq == a.seal) return k;
  return std::nullopt;
}

}  // namespace

OpenPlan plan_open(const std::string& path, const SlotState& state, const KeyedHmac& check) {
  OpenPlan plan;
  const std::vector<PendingRange> ranges = state.pending ? state.pending->ranges : std::vector<PendingRange>{};
  plan.clear_pending = state.pending.has_value();
  const std::optional<Anchor>& anchor = state.anchor;
  // The anchored seal's line ends at the anchor's offset: read from a little before it.
  std::uint64_t size = 0;
  std::uint64_t base = 0;
  if (anchor && anchor->seal > 0 && anchor->offset > 0)
    base = anchor->offset - std::min<std::uint64_t>(anchor->offset, 1 << 20);
  std::string text = read_from(path, base, size);
  if (base > 0) {
    const std::size_t end = static_cast<std::size_t>(anchor->offset - base);
    const std::size_t start = end >= 1 ? text.rfind('\n', end >= 2 ? end - 2 : 0) : std::string::npos;
    const bool ends_line = end >= 1 && end <= text.size() && text[end - 1] == '\n';
    if (ends_line && start != std::string::npos && end >= 2 &&
        sha256(std::string_view(text).substr(start + 1, end - 2 - start)) == anchor->seal_hash) {
      text.erase(0, start + 1);
      base += start + 1;
    } else {
      text = read_from(path, base = 0, size);
    }
  }
  plan.file_bytes = size;
  plan.add_newline = !text.empty() && text.back() != '\n';
  const std::vector<LogText> texts{{path, text}};
  const std::vector<Line> lines = split(texts, true);

  if (anchor && anchor->seal > 0) {
    plan.chain = anchor->chain;
    plan.anchor = anchor;
    if (auto s = anchored_seal(lines, *anchor)) {
      Accepted a = walk_tail(lines, *s + 1, cursor_of(lines[*s]), anchor->chain, check, ranges);
      finish(plan, lines, a, "unsealed");
      plan.chain_start = plan.found.has_value();
      plan.anchored = anchor->seal;
      plan.verified = a.seal ? lines[*a.seal].rec->seq : anchor->seal;
      if (a.seal) {  // a seal of ours the token was not told of (the writer died first)
        const Line& l = lines[*a.seal];
        plan.anchor->sealed = *l.rec->uint_field("sealed");
        plan.anchor->head = *hash_from_hex(*l.rec->string_field("head"));
        plan.anchor->seal = l.rec->seq;
        plan.anchor->seal_hash = l.hash;
        plan.anchor->offset = base + static_cast<std::uint64_t>(l.raw.data() - text.data()) + l.raw.size() + 1;
        plan.anchor->sealed_at_ms = l.rec->ts;
        plan.store_anchor = true;
      }
      return plan;
    }
    // The file does not hold the anchored seal: keep what verifies of this chain.
    VerifyResult vr;
    Accepted a = accept_checked(texts, lines, check, ranges, vr);
    const bool ours = vr.chain == to_hex(anchor->chain) || a.end == 0;
    if (!ours) a = Accepted{0, Cursor{}, std::nullopt, 0, {}};
    finish(plan, lines, a, ours ? "truncated" : "foreign", anchor->seal, anchor->seal_hash);
    return plan;
  }
  // No anchor (a new file, a log from before anchors, a swept anchor), or a chain that
  // was started and never sealed: a new chain that starts here.
  plan.chain = anchor ? anchor->chain : new_chain_id();
  plan.new_chain = !anchor;
  plan.store_anchor = true;
  plan.starts_file = true;
  if (!lines.empty()) {
    VerifyResult vr;
    Accepted a = accept_checked(texts, lines, check, ranges, vr);
    finish(plan, lines, a, "unsealed");
    if (a.end > 0) plan.unanchored = Unanchored{a.end, a.at.seq, vr.seals, a.vouched};
  } else {
    plan.chain_start_seq = 1;
  }
  plan.chain_start = true;
  return plan;
}

OpenPlan plan_tokenless(const std::string& path) {
  OpenPlan plan;
  std::uint64_t size = 0;
  std::string text = read_from(path, 0, size);
  plan.file_bytes = size;
  plan.add_newline = !text.empty() && text.back() != '\n';
  const std::vector<Line> lines = split({{path, text}}, true);
  plan.chain_start = lines.empty();
  plan.chain_start_seq = 1;
  if (lines.empty()) return plan;
  // After the last line, whatever it is: the next writer with the token judges it.
  Cursor c = cursor_of(lines.back());
  for (std::size_t k = lines.size(); k-- > 0 && c.seq == 0;)
    if (lines[k].rec) c.seq = lines[k].rec->seq + (lines.size() - 1 - k);
  if (c.seq > kMaxSeq) c.seq = 0;  // not a seq this writer can go on from: the next writer judges
  plan.seq = c.seq;
  plan.prev = c.hash;
  for (std::size_t k = lines.size(); k-- > 0;)
    if (lines[k].rec) {
      plan.last_ts = lines[k].rec->ts;
      break;
    }
  return plan;
}

}  // namespace keysvc::audit::detail
