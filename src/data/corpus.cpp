#include "dipaco/data/corpus.hpp"

#include <algorithm>
#include <fstream>
#include <map>
#include <string_view>

namespace dipaco {
namespace {

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6)), out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12)), out += char(0x80 | ((cp >> 6) & 0x3F)), out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18)), out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F)), out += char(0x80 | (cp & 0x3F));
  }
}

// A minimal JSON reader for one flat object of string (and ignored scalar) values.
struct JsonLine {
  const std::string& s;
  const std::string& where;
  size_t i = 0;

  [[noreturn]] void fail(const std::string& what) {
    throw CorpusError(where + ": " + what + " at column " + std::to_string(i + 1));
  }
  void ws() {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r')) ++i;
  }
  void expect(char c) {
    ws();
    if (i >= s.size() || s[i] != c) fail(std::string("expected '") + c + "'");
    ++i;
  }
  uint32_t hex4() {
    if (i + 4 > s.size()) fail("truncated \\u escape");
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      char c = s[i++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= c - '0';
      else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
      else fail("bad \\u escape");
    }
    return v;
  }
  std::string str() {
    expect('"');
    std::string out;
    while (true) {
      if (i >= s.size()) fail("unterminated string");
      char c = s[i++];
      if (c == '"') return out;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i >= s.size()) fail("unterminated escape");
      char e = s[i++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = hex4();
          if (cp >= 0xD800 && cp < 0xDC00 && i + 6 <= s.size() && s[i] == '\\' && s[i + 1] == 'u') {
            i += 2;
            uint32_t lo = hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) fail("bad surrogate pair");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          append_utf8(out, cp);
          break;
        }
        default: fail(std::string("bad escape \\") + e);
      }
    }
  }
  // Skips a value of a field the corpus does not use: a scalar, a string, or
  // a nested array or object (bounded depth, so the stack stays small).
  void skip_value(int depth = 0) {
    ws();
    if (i < s.size() && s[i] == '"') {
      str();
      return;
    }
    if (i < s.size() && (s[i] == '[' || s[i] == '{')) {
      if (depth >= 32) fail("nesting deeper than 32 levels");
      const bool object = s[i] == '{';
      const char close = object ? '}' : ']';
      ++i;
      ws();
      if (i < s.size() && s[i] == close) {
        ++i;
        return;
      }
      while (true) {
        if (object) str(), expect(':');
        skip_value(depth + 1);
        ws();
        if (i < s.size() && s[i] == ',') {
          ++i;
          continue;
        }
        expect(close);
        return;
      }
    }
    size_t start = i;
    while (i < s.size() && std::string_view(",}] \t\r").find(s[i]) == std::string_view::npos) ++i;
    if (i == start) fail("expected a value");
  }
};

}  // namespace

Document parse_document(const std::string& line, const std::string& where) {
  JsonLine p{line, where};
  Document d;
  bool has_id = false, has_domain = false, has_text = false;
  p.expect('{');
  p.ws();
  if (p.i < line.size() && line[p.i] == '}') p.fail("empty object");
  while (true) {
    std::string key = p.str();
    p.expect(':');
    p.ws();
    if (p.i < line.size() && line[p.i] == '"') {
      std::string v = p.str();
      if (key == "id") d.id = std::move(v), has_id = true;
      else if (key == "domain") d.domain = std::move(v), has_domain = true;
      else if (key == "text") d.text = std::move(v), has_text = true;
    } else {
      if (key == "id" || key == "domain" || key == "text") p.fail("field '" + key + "' must be a string");
      p.skip_value();
    }
    p.ws();
    if (p.i < line.size() && line[p.i] == ',') {
      ++p.i;
      continue;
    }
    p.expect('}');
    break;
  }
  p.ws();
  if (p.i != line.size()) p.fail("trailing characters after the object");
  if (!has_id) throw CorpusError(where + ": missing field 'id'");
  if (!has_domain) throw CorpusError(where + ": missing field 'domain'");
  if (!has_text) throw CorpusError(where + ": missing field 'text'");
  return d;
}

namespace {
// std::getline that refuses a line longer than max bytes instead of growing
// without bound. False at the end of the input.
bool read_line(std::istream& in, std::string& line, size_t max, const std::string& where) {
  line.clear();
  std::streambuf* sb = in.rdbuf();
  bool any = false;
  for (int c; (c = sb->sbumpc()) != std::char_traits<char>::eof();) {
    any = true;
    if (c == '\n') return true;
    if (line.size() == max)
      throw CorpusError(where + ": line longer than " + std::to_string(max >> 20) + " MB (one JSON document per line)");
    line += char(c);
  }
  return any;
}
}  // namespace

std::vector<Document> read_corpus(std::istream& in, const std::string& name) {
  std::vector<Document> docs;
  std::string line;
  long n = 0;
  while (read_line(in, line, kMaxCorpusLine, name + ":" + std::to_string(n + 1))) {
    ++n;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    Document d = parse_document(line, name + ":" + std::to_string(n));
    if (d.text.empty()) continue;  // nothing to learn from
    docs.push_back(std::move(d));
  }
  if (docs.empty()) throw CorpusError("corpus file '" + name + "' holds no documents");
  return docs;
}

std::vector<Document> read_corpus(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw CorpusError("cannot open corpus file '" + path + "' (set data.corpus; scripts/get-corpus builds the full corpus)");
  return read_corpus(in, path);
}

uint64_t hash64(const std::string& s, uint64_t seed) {
  uint64_t h = 1469598103934665603ULL ^ (seed * 0x9E3779B97F4A7C15ULL);
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  // Final avalanche (splitmix64) so nearby ids spread over [0, 2^64).
  h ^= h >> 30, h *= 0xBF58476D1CE4E5B9ULL, h ^= h >> 27, h *= 0x94D049BB133111EBULL, h ^= h >> 31;
  return h;
}

double unit_hash(const std::string& s) { return double(hash64(s) >> 11) / double(1ULL << 53); }

Split split_corpus(std::vector<Document> docs, double val_fraction, int min_val_docs) {
  std::sort(docs.begin(), docs.end(), [](const Document& a, const Document& b) { return a.id < b.id; });
  Split out;
  std::map<std::string, std::vector<Document*>> train_by_domain;
  std::map<std::string, int> val_count;
  std::vector<bool> is_val(docs.size());
  for (size_t i = 0; i < docs.size(); ++i) {
    is_val[i] = unit_hash(docs[i].id) < val_fraction;
    if (is_val[i]) ++val_count[docs[i].domain];
    else train_by_domain[docs[i].domain].push_back(&docs[i]);
  }
  for (auto& [domain, train] : train_by_domain) {
    std::sort(train.begin(), train.end(), [](auto a, auto b) { return unit_hash(a->id) < unit_hash(b->id); });
    // Keep at least one training document per domain.
    for (size_t j = 0; val_count[domain] < min_val_docs && j + 1 < train.size(); ++j, ++val_count[domain])
      is_val[train[j] - docs.data()] = true;
    if (val_count[domain] == 0) out.unvalidated.push_back(domain);
  }
  for (size_t i = 0; i < docs.size(); ++i) (is_val[i] ? out.val : out.train).push_back(std::move(docs[i]));
  return out;
}

TokenStream make_stream(const std::vector<const Document*>& docs) {
  TokenStream s;
  size_t n = 0;
  for (auto* d : docs) n += d->text.size() + 1;
  s.bytes.reserve(n);
  for (auto* d : docs) {
    s.bytes.insert(s.bytes.end(), d->text.begin(), d->text.end());
    s.bytes.push_back(0);
  }
  s.documents = docs.size();
  return s;
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
  const size_t n = s.bytes.size();
  uint64_t r = splitmix(splitmix(splitmix(splitmix(seed) ^ uint64_t(path)) ^ uint64_t(step)) ^ uint64_t(seq));
  if (n < size_t(T) + 1) {  // a tiny shard: wrap around
    for (int t = 0; t < T; ++t) tok[t] = s.bytes[(r + t) % n], tgt[t] = s.bytes[(r + t + 1) % n];
    return;
  }
  size_t start = r % (n - T);
  for (int t = 0; t < T; ++t) tok[t] = s.bytes[start + t], tgt[t] = s.bytes[start + t + 1];
}

int validation_windows(const TokenStream& s, int T, int count, std::vector<size_t>& starts) {
  starts.clear();
  const size_t n = s.bytes.size();
  if (n < size_t(T) + 1 || count <= 0) return 0;
  size_t available = (n - 1) / T;
  size_t k = std::min<size_t>(available, count);
  size_t stride = k > 1 ? (n - 1 - T) / (k - 1) : 0;
  for (size_t i = 0; i < k; ++i) starts.push_back(i * stride);
  return int(k);
}

}  // namespace dipaco
