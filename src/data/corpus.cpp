#include "dipaco/data/corpus.hpp"

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>

#include <unistd.h>

#include <cerrno>

namespace dipaco {

uint64_t hash64(std::string_view s, uint64_t seed) {
  uint64_t h = 1469598103934665603ULL ^ (seed * 0x9E3779B97F4A7C15ULL);
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  // Final avalanche (splitmix64) so nearby ids spread over [0, 2^64).
  h ^= h >> 30, h *= 0xBF58476D1CE4E5B9ULL, h ^= h >> 27, h *= 0x94D049BB133111EBULL, h ^= h >> 31;
  return h;
}

uint64_t bulk_hash64(std::string_view s, uint64_t seed) {
  // Four independent lanes of 8 bytes: no multiply waits on the one before,
  // about 8x hash64's byte-at-a-time rate.
  auto mix = [](uint64_t h, uint64_t v) {
    h ^= v * 0xBF58476D1CE4E5B9ULL;
    return (h << 31 | h >> 33) * 0x94D049BB133111EBULL;
  };
  uint64_t lane[4] = {seed ^ 0x9E3779B97F4A7C15ULL, seed + 0xC2B2AE3D27D4EB4FULL, ~seed, seed * 0x9E3779B97F4A7C15ULL + 1};
  const char* p = s.data();
  size_t n = s.size();
  for (; n >= 32; p += 32, n -= 32)
    for (int i = 0; i < 4; ++i) {
      uint64_t v;
      std::memcpy(&v, p + 8 * i, 8);
      lane[i] = mix(lane[i], v);
    }
  uint64_t h = mix(mix(mix(lane[0], lane[1]), lane[2]), lane[3]) ^ s.size();
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    h = mix(h, v);
  }
  if (n) {
    uint64_t v = 0;
    std::memcpy(&v, p, n);
    h = mix(h, v ^ uint64_t(n) << 56);
  }
  h ^= h >> 30, h *= 0xBF58476D1CE4E5B9ULL, h ^= h >> 27, h *= 0x94D049BB133111EBULL, h ^= h >> 31;
  return h;
}

double unit_hash(std::string_view s) { return double(hash64(s) >> 11) / double(1ULL << 53); }

Split split_corpus(const std::vector<Document>& docs, double val_fraction, int min_val_docs) {
  Split out;
  std::map<std::string_view, std::vector<size_t>> train_by_domain;
  std::map<std::string_view, int> val_count;
  std::vector<bool> is_val(docs.size());
  for (size_t i = 0; i < docs.size(); ++i) {
    is_val[i] = unit_hash(docs[i].id) < val_fraction;
    if (is_val[i]) ++val_count[docs[i].domain];
    else train_by_domain[docs[i].domain].push_back(i);
  }
  for (auto& [domain, train] : train_by_domain) {
    std::stable_sort(train.begin(), train.end(),
                     [&](size_t a, size_t b) { return unit_hash(docs[a].id) < unit_hash(docs[b].id); });
    // Keep at least one training document per domain.
    for (size_t j = 0; val_count[domain] < min_val_docs && j + 1 < train.size(); ++j, ++val_count[domain])
      is_val[train[j]] = true;
    if (val_count[domain] == 0) out.unvalidated.emplace_back(domain);
  }
  std::vector<int> train, val;
  for (size_t i = 0; i < docs.size(); ++i) (is_val[i] ? val : train).push_back(int(i));
  const DocList all(docs);
  out.train = all.subset(train), out.val = all.subset(val);
  return out;
}

namespace {
struct MemoryDocuments : DocumentSource {
  explicit MemoryDocuments(std::vector<Document> d) : docs(std::move(d)) {}
  Document document(size_t i) const override { return docs[i]; }
  std::vector<Document> docs;
};
}  // namespace

DocList::DocList(std::vector<Document> docs) : index_(docs.size()) {
  for (size_t i = 0; i < index_.size(); ++i) index_[i] = uint32_t(i);
  owned_ = std::make_shared<MemoryDocuments>(std::move(docs));
  source_ = owned_.get();
}

DocList::DocList(const DocumentSource& source, std::vector<uint32_t> index) : source_(&source), index_(std::move(index)) {}

DocList DocList::subset(const std::vector<int>& picks) const {
  DocList out;
  out.owned_ = owned_, out.source_ = source_;
  out.index_.reserve(picks.size());
  for (int i : picks) out.index_.push_back(index_.at(size_t(i)));
  return out;
}

std::vector<uint64_t> DocList::tokens() const {
  std::vector<uint64_t> out(index_.size());
  if (!index_.empty()) source_->tokens(index_.data(), index_.size(), out.data());
  return out;
}

std::vector<Document> DocList::documents(size_t lo, size_t hi) const {
  std::vector<Document> out(hi - lo);
  if (hi > lo) source_->documents(index_.data() + lo, hi - lo, out.data());
  return out;
}

DocList DocList::slice(size_t lo, size_t hi) const {
  DocList out;
  out.owned_ = owned_, out.source_ = source_;
  out.index_.assign(index_.begin() + lo, index_.begin() + hi);
  return out;
}

namespace {
struct TextFile {
  const char* base;
  size_t size;
  int fd;
};
std::mutex text_files_mutex;
std::vector<TextFile> text_files;  // one per open token store
}  // namespace

void register_text_file(const char* base, size_t size, int fd) {
  std::lock_guard<std::mutex> lock(text_files_mutex);
  text_files.push_back({base, size, fd});
}

void unregister_text_files(const char* base, size_t size) {
  std::lock_guard<std::mutex> lock(text_files_mutex);
  std::erase_if(text_files, [&](const TextFile& f) { return f.base >= base && f.base < base + size; });
}

void read_text(std::string_view text, size_t off, size_t n, char* out) {
  if (n == 0) return;
  const char* p = text.data() + off;
  TextFile file{nullptr, 0, -1};
  {
    std::lock_guard<std::mutex> lock(text_files_mutex);
    for (const TextFile& f : text_files)
      if (p >= f.base && p < f.base + f.size) file = f;
  }
  if (!file.base) {
    std::memcpy(out, p, n);
    return;
  }
  for (size_t done = 0; done < n;) {
    const ssize_t r = ::pread(file.fd, out + done, n - done, off_t(p - file.base) + off_t(done));
    if (r <= 0) throw CorpusError(std::string("cannot read the token store's corpus.bin: ") + (r < 0 ? std::strerror(errno) : "file shrank"));
    done += size_t(r);
  }
}

int dtype_width(int dtype) {
  switch (dtype) {
    case 1: case 2: return 1;
    case 3: case 8: return 2;
    case 4: return 4;
    case 5: return 8;
    default: return 0;
  }
}

namespace {
template <class T>
void decode(const char* p, size_t n, int32_t* out) {
  for (size_t j = 0; j < n; ++j) {
    T v;
    std::memcpy(&v, p + j * sizeof(T), sizeof(T));
    out[j] = int32_t(v);  // prepare checked every id against the vocabulary
  }
}
}  // namespace

void read_document(const Document& d, size_t begin, size_t n, int32_t* out) {
  const size_t len = d.tokens(), w = size_t(dtype_width(d.dtype));
  const size_t have = begin < len ? std::min(n, len - begin) : 0;
  char buf[4096];
  for (size_t done = 0; done < have;) {
    const size_t k = std::min(have - done, sizeof buf / w);
    read_text(d.text, (begin + done) * w, k * w, buf);
    switch (d.dtype) {
      case 1: decode<uint8_t>(buf, k, out + done); break;
      case 2: decode<int8_t>(buf, k, out + done); break;
      case 3: decode<int16_t>(buf, k, out + done); break;
      case 4: decode<int32_t>(buf, k, out + done); break;
      case 5: decode<int64_t>(buf, k, out + done); break;
      case 8: decode<uint16_t>(buf, k, out + done); break;
      default: throw CorpusError("token dtype code " + std::to_string(int(d.dtype)) + " is not an integer type");
    }
    done += k;
  }
  std::fill(out + have, out + n, d.eod);
}

TokenStream::TokenStream(const DocList& docs) : docs_(docs), end_(docs.tokens()) {
  uint64_t n = 0;
  if (!docs.empty()) dtype_ = docs[0].dtype, eod_ = docs[0].eod;
  for (auto& e : end_) e = n += e + 1;
}

TokenStream::TokenStream(const DocList& docs, std::vector<WindowStart> windows) : TokenStream(docs) {
  for (const WindowStart& w : windows)
    if (w.doc >= docs.size()) throw std::runtime_error("internal: a training window of a document the stream lacks");
  windows_ = std::move(windows);
}

int32_t TokenStream::at(size_t pos) const {
  int32_t v;
  read(pos, 1, &v);
  return v;
}

void TokenStream::read(size_t pos, size_t n, int32_t* out) const {
  size_t i = std::upper_bound(end_.begin(), end_.end(), uint64_t(pos)) - end_.begin();
  size_t off = pos - (i ? end_[i - 1] : 0);
  while (n > 0) {
    const Document d = docs_[i];
    const size_t take = std::min(n, d.tokens() + 1 - off);  // up to and with the end-of-document token
    read_document(d, off, take, out);
    out += take, n -= take;
    ++i, off = 0;
  }
}

void read_window(const TokenStream& s, size_t pos, int T, int32_t* tok, int32_t* tgt) {
  if (T <= 0) return;  // no window (and g++ would warn of the copies below)
  if (pos + size_t(T) + 1 > s.size()) {  // a stream shorter than the window: the rest is end-of-document tokens
    std::vector<int32_t> all(size_t(T) + 1, s.eod());
    if (pos < s.size()) s.read(pos, s.size() - pos, all.data());
    std::copy(all.begin(), all.end() - 1, tok);
    std::copy(all.begin() + 1, all.end(), tgt);
    return;
  }
  s.read(pos, size_t(T), tok);
  std::copy(tok + 1, tok + T, tgt);
  tgt[T - 1] = s.at(pos + size_t(T));
}

void read_window(const Document& d, size_t begin, int T, int32_t* tok, int32_t* tgt) {
  read_document(d, begin, size_t(T), tok);
  std::copy(tok + 1, tok + T, tgt);
  read_document(d, begin + size_t(T), 1, tgt + T - 1);
}

namespace {
uint64_t splitmix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}
}  // namespace

void sample_window(const TokenStream& s, int T, uint64_t seed, int path, long step, int seq, int32_t* tok, int32_t* tgt) {
  const size_t n = s.size();
  uint64_t r = splitmix(splitmix(splitmix(splitmix(seed) ^ uint64_t(path)) ^ uint64_t(step)) ^ uint64_t(seq));
  if (!s.windows().empty()) {
    const WindowStart& w = s.windows()[r % s.windows().size()];
    read_window(s.document(w.doc), w.start, T, tok, tgt);
    return;
  }
  if (n < size_t(T) + 1) {  // a tiny shard: wrap around
    for (int t = 0; t < T; ++t) tok[t] = s.at((r + t) % n), tgt[t] = s.at((r + t + 1) % n);
    return;
  }
  read_window(s, r % (n - T), T, tok, tgt);
}

int validation_windows(const TokenStream& s, int T, int count, std::vector<size_t>& starts) {
  starts.clear();
  const size_t n = s.size();
  if (n < 2 || count <= 0) return 0;
  if (n < size_t(T) + 1) {  // shorter than one window: one window, padded (its n - 1 targets scored)
    starts.push_back(0);
    return 1;
  }
  size_t available = (n - 1) / T;
  size_t k = std::min<size_t>(available, count);
  size_t stride = k > 1 ? (n - 1 - T) / (k - 1) : 0;
  for (size_t i = 0; i < k; ++i) starts.push_back(i * stride);
  return int(k);
}

}  // namespace dipaco
