#include "dipaco/data/input_files.hpp"

#include <fcntl.h>
#include <glob.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <set>

namespace dipaco {
namespace {

namespace fs = std::filesystem;

// A piece's line buffer: 1 MB stays in the L2 cache between the kernel's copy
// (or the decompressor) and the parser; 8 MB measured 20-40% slower.
constexpr size_t kBuffer = size_t(1) << 20;
constexpr size_t kCompressedIn = size_t(256) << 10;  // compressed bytes read at once

struct Fd {
  int fd;
  explicit Fd(const std::string& path) : fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {
    if (fd < 0) throw CorpusError("cannot open input file '" + path + "': " + std::strerror(errno));
  }
  ~Fd() { ::close(fd); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  uint64_t size(const std::string& path) const {
    struct stat st;
    if (::fstat(fd, &st) != 0) throw CorpusError("cannot stat input file '" + path + "': " + std::strerror(errno));
    return uint64_t(st.st_size);
  }
  // Up to n bytes at off; fewer only at the end of the file.
  size_t pread_full(void* out, size_t n, uint64_t off, const std::string& path) const {
    size_t got = 0;
    while (got < n) {
      ssize_t r = ::pread(fd, static_cast<char*>(out) + got, n - got, off_t(off + got));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) throw CorpusError("cannot read input file '" + path + "': " + std::strerror(errno));
      if (r == 0) break;
      got += size_t(r);
    }
    return got;
  }
};

[[noreturn]] void shrank(const std::string& path) {
  throw CorpusError("input file '" + path + "' became shorter while it was read");
}

std::string base_name(std::string_view path) {
  size_t slash = path.rfind('/');
  return std::string(slash == std::string_view::npos ? path : path.substr(slash + 1));
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// c4-train.00000-of-01024.json.gz -> c4-train.00000-of-01024
std::string file_stem(const std::string& path) {
  static constexpr std::string_view suffixes[2][2] = {{".gz", ".zst"}, {".jsonl", ".json"}};
  std::string name = base_name(path), stem = name;
  for (const auto& group : suffixes)
    for (std::string_view s : group)
      if (ends_with(stem, s)) {
        stem.resize(stem.size() - s.size());
        break;
      }
  return stem.empty() ? name : stem;
}

// ---------------------------------------------------------------- JSON lines

void append_utf8(std::string& out, uint32_t cp) {
  char b[4];
  size_t n = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
  static constexpr unsigned char lead[5] = {0, 0, 0xC0, 0xE0, 0xF0};
  for (size_t i = n - 1; i > 0; --i, cp >>= 6) b[i] = char(0x80 | (cp & 0x3F));
  b[0] = char(lead[n] | cp);
  out.append(b, n);
}

// The first '"' or '\\' in [p, e), or e: one pass for both (code has an escape
// every ~45 bytes, where two memchr calls per run cost more than this loop).
inline const char* find_quote_or_backslash(const char* p, const char* e) {
#if defined(__SSE2__)
  const __m128i quote = _mm_set1_epi8('"'), slash = _mm_set1_epi8('\\');
  auto hits = [&](const char* at) {
    __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(at));
    return unsigned(_mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, slash))));
  };
  for (; e - p >= 32; p += 32)
    if (unsigned m = hits(p) | (hits(p + 16) << 16)) return p + __builtin_ctz(m);
  if (e - p >= 16) {
    if (unsigned m = hits(p)) return p + __builtin_ctz(m);
    p += 16;
  }
#endif
  while (p < e && *p != '"' && *p != '\\') ++p;
  return p;
}

// A parse error without its "file:line" prefix: the caller adds it, so that
// the prefix is built only for a failing line.
struct JsonFail {
  std::string what;
};

// One line's JSON object. Strings are copied in runs between escapes.
struct JsonParser {
  const char *b, *p, *e;
  std::string scratch;  // skipped strings and escaped keys

  [[noreturn]] void fail(const std::string& what) const {
    throw JsonFail{what + " at column " + std::to_string(p - b + 1)};
  }
  void ws() {
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\r')) ++p;
  }
  bool eat(char c) {
    ws();
    return p < e && *p == c ? ++p, true : false;
  }
  void expect(char c) {
    if (!eat(c)) fail(std::string("expected '") + c + "'");
  }
  uint32_t hex4() {
    if (e - p < 4) fail("truncated \\u escape");
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k, ++p) {
      int d = std::isdigit(uint8_t(*p)) ? *p - '0' : std::isxdigit(uint8_t(*p)) ? (*p | 0x20) - 'a' + 10 : -1;
      if (d < 0) fail("bad \\u escape");
      v = v << 4 | uint32_t(d);
    }
    return v;
  }
  // p is just past a backslash. A lone surrogate (seen in web text) becomes
  // U+FFFD rather than failing the whole file.
  void escape(std::string& out) {
    if (p >= e) fail("unterminated escape");
    static constexpr std::string_view from = "\"\\/bfnrt", to = "\"\\/\b\f\n\r\t";
    if (size_t k = from.find(*p); k != std::string_view::npos) {
      out += to[k], ++p;
      return;
    }
    if (*p != 'u') --p, fail(std::string("bad escape \\") + p[1]);
    ++p;
    uint32_t cp = hex4();
    if (cp >= 0xD800 && cp < 0xDC00) {
      uint32_t lo = 0;
      if (e - p >= 6 && p[0] == '\\' && p[1] == 'u') {
        const char* save = p;
        p += 2, lo = hex4();
        if (lo < 0xDC00 || lo > 0xDFFF) p = save, lo = 0;
      }
      cp = lo ? 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00) : 0xFFFD;
    } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
      cp = 0xFFFD;
    }
    append_utf8(out, cp);
  }
  // p is just past the opening quote; appends the decoded string to out.
  void string_into(std::string& out) {
    if (out.empty())  // sized by the first '"' (exact unless an escaped quote comes first)
      if (auto q = static_cast<const char*>(std::memchr(p, '"', size_t(e - p)))) out.reserve(size_t(q - p));
    while (true) {
      const char* s = find_quote_or_backslash(p, e);
      if (s == e) p = e, fail("unterminated string");
      out.append(p, size_t(s - p));
      p = s + 1;
      if (*s == '"') return;
      escape(out);
    }
  }
  // An object key: a view of the line when it has no escapes (the usual case).
  std::string_view key() {
    if (!eat('"')) fail("expected '\"'");
    auto q = static_cast<const char*>(std::memchr(p, '"', size_t(e - p)));
    if (q && !std::memchr(p, '\\', size_t(q - p))) {
      std::string_view k(p, size_t(q - p));
      p = q + 1;
      return k;
    }
    scratch.clear();
    string_into(scratch);
    return scratch;
  }
  // The members of an object or array whose opening bracket was just read.
  template <class F>
  void members(char close, F&& member) {
    if (eat(close)) return;
    do member();
    while (eat(','));
    expect(close);
  }
  // A value of a key the corpus does not use: checked, not kept. The depth
  // bound keeps the stack small on hostile input.
  void skip_value(int depth) {
    ws();
    if (eat('"')) return scratch.clear(), string_into(scratch);
    if (p < e && (*p == '{' || *p == '[')) {
      if (depth >= 64) fail("nesting deeper than 64 levels");
      if (*p++ == '{') members('}', [&] { key(), expect(':'), skip_value(depth + 1); });
      else members(']', [&] { skip_value(depth + 1); });
      return;
    }
    const char* s = p;
    while (p < e && (std::isalnum(uint8_t(*p)) || *p == '-' || *p == '+' || *p == '.')) ++p;
    std::string_view tok(s, size_t(p - s));
    bool number = !tok.empty() && (tok[0] == '-' || std::isdigit(uint8_t(tok[0])));
    if (!(number || tok == "true" || tok == "false" || tok == "null")) p = s, fail("expected a value");
  }
};

// Fills d from the line; the id and domain are left empty when absent.
void parse_fields(std::string_view line, const InputOptions& o, InputDocument& d, bool& has_id, bool& has_domain) {
  JsonParser j{line.data(), line.data(), line.data() + line.size(), {}};
  const std::string_view domain_key = o.domain_key.empty() ? std::string_view("domain") : o.domain_key;
  bool has_text = false;
  j.expect('{');
  j.members('}', [&] {
    std::string_view k = j.key();
    // Decided before the value is read: k may point into the scratch string.
    std::string* dst = k == "text" ? &d.text : k == o.id_key ? &d.id : k == domain_key ? &d.domain : nullptr;
    j.expect(':');
    if (!dst) return j.skip_value(0);
    if (!j.eat('"'))
      j.fail("field '" + std::string(dst == &d.text ? "text" : dst == &d.id ? std::string_view(o.id_key) : domain_key) +
             "' must be a string");
    dst->clear();
    j.string_into(*dst);
    (dst == &d.text ? has_text : dst == &d.id ? has_id : has_domain) = true;
  });
  j.ws();
  if (j.p != j.e) j.fail("trailing characters after the object");
  if (!has_text) throw JsonFail{"missing field 'text'"};
  if (!has_domain && !o.domain_key.empty()) throw JsonFail{"missing field '" + o.domain_key + "' (the domain key)"};
}

template <class Where, class Id>
InputDocument parse_line(std::string_view line, const InputOptions& o, const std::string& stem, Where&& where, Id&& id) {
  InputDocument d;
  bool has_id = false, has_domain = false;
  try {
    parse_fields(line, o, d, has_id, has_domain);
  } catch (const JsonFail& fail) {
    throw CorpusError(where() + ": " + fail.what);
  }
  if (!has_id) d.id = id();
  if (!has_domain) d.domain = stem;
  return d;
}

// ------------------------------------------------------------- byte sources

// Sources fill the whole of `out` except at the end of their data (0 = the end).
struct Source {
  virtual ~Source() = default;
  virtual size_t read(char* out, size_t n) = 0;
};

struct PlainSource : Source {
  const Fd& fd;
  const std::string& path;
  uint64_t pos, end;
  PlainSource(const Fd& f, const std::string& p, uint64_t begin, uint64_t stop) : fd(f), path(p), pos(begin), end(stop) {}
  size_t read(char* out, size_t n) override {
    n = size_t(std::min<uint64_t>(n, end - pos));
    if (fd.pread_full(out, n, pos, path) < n) shrank(path);
    pos += n;
    return n;
  }
};

// A compressed file's bytes, and the error messages that name an offset in it.
struct CompressedInput {
  const Fd& fd;
  const std::string& path;
  const char* format;
  std::vector<unsigned char> buf = std::vector<unsigned char>(kCompressedIn);
  uint64_t start = 0;  // file offset of buf's first byte
  size_t filled = 0;
  bool eof = false;
  uint64_t output = 0;    // bytes decompressed before the current read()
  std::string deferred{};  // a truncation met after some output, reported by the next read()
  // The next buffer's worth (the current one is used up).
  size_t refill() {
    start += filled;
    filled = fd.pread_full(buf.data(), buf.size(), start, path);
    eof = filled == 0;
    return filled;
  }
  // A truncated stream's output is sound: it is delivered before the error. A
  // corrupt stream's error is thrown at once (its last output may be garbage).
  void fail(const char* what, size_t pos, size_t out_now, const std::string& detail) {
    const bool at_end = eof && pos == filled;
    deferred = path + ": " + what + " " + format + " stream after " + std::to_string(output + out_now) +
               " bytes of output (" + (at_end ? "the file ends at byte " : "at byte ") + std::to_string(start + pos) +
               (at_end ? ")" : " of the file)") + detail;
    if (out_now == 0 || std::strcmp(what, "truncated") != 0) throw CorpusError(deferred);
  }
  void check() const {
    if (!deferred.empty()) throw CorpusError(deferred);
  }
};

// gzip: concatenated members read one after another while input remains.
struct GzipSource : Source {
  CompressedInput in;
  z_stream z{};
  bool member_open = false;
  GzipSource(const Fd& f, const std::string& p) : in{f, p, "gzip"} {
    if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) throw CorpusError(p + ": cannot start zlib");
  }
  ~GzipSource() override { inflateEnd(&z); }
  size_t read(char* out, size_t n) override {
    z.next_out = reinterpret_cast<Bytef*>(out);
    z.avail_out = uInt(std::min<size_t>(n, 1u << 30));
    const uInt want = z.avail_out;
    in.check();
    while (z.avail_out > 0 && in.deferred.empty()) {
      if (z.avail_in == 0 && !in.eof) z.avail_in = uInt(in.refill()), z.next_in = in.buf.data();
      if (!member_open) {
        if (z.avail_in == 0) break;  // the end, between members
        inflateReset(&z), member_open = true;
      }
      int r = inflate(&z, Z_NO_FLUSH);
      if (r == Z_STREAM_END) member_open = false;
      else if (r == Z_BUF_ERROR && z.avail_in == 0 && in.eof) fail("truncated", want);  // no progress possible
      else if (r != Z_OK && r != Z_BUF_ERROR) fail("corrupt", want);
    }
    in.output += want - z.avail_out;
    return want - z.avail_out;
  }
  void fail(const char* what, uInt want) {
    in.fail(what, size_t(z.next_in ? z.next_in - in.buf.data() : 0), want - z.avail_out,
            z.msg ? std::string("; zlib: ") + z.msg : "");
  }
};

// zstd: concatenated frames; the window limit raised so that files written
// with `zstd --long` read. Truncation: the input ends inside a frame.
struct ZstdSource : Source {
  CompressedInput in;
  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  ZSTD_inBuffer ib{nullptr, 0, 0};
  size_t last = 1;  // ZSTD_decompressStream's last result; 0 = at a frame's end
  ZstdSource(const Fd& f, const std::string& p) : in{f, p, "zstd"} {
    if (!dctx) throw CorpusError(p + ": cannot start zstd");
    ZSTD_DCtx_setParameter(dctx, ZSTD_d_windowLogMax, sizeof(size_t) == 8 ? 31 : 30);
  }
  ~ZstdSource() override { ZSTD_freeDCtx(dctx); }
  size_t read(char* out, size_t n) override {
    ZSTD_outBuffer ob{out, n, 0};
    in.check();
    while (ob.pos < ob.size && in.deferred.empty()) {
      if (ib.pos == ib.size && !in.eof) ib = {in.buf.data(), in.refill(), 0};
      if (ib.pos == ib.size && in.eof && last == 0) break;
      const size_t out_before = ob.pos, in_before = ib.pos;
      size_t r = ZSTD_decompressStream(dctx, &ob, &ib);
      if (ZSTD_isError(r)) {
        in.fail("corrupt", ib.pos, ob.pos, std::string("; zstd: ") + ZSTD_getErrorName(r));
        break;
      }
      last = r;
      if (ib.pos == ib.size && in.eof && ob.pos == out_before && ib.pos == in_before) in.fail("truncated", ib.pos, ob.pos, "");
    }
    in.output += ob.pos;
    return ob.pos;
  }
};

enum class Kind { plain, gzip, zstd, bzip2, xz };
Kind sniff(const unsigned char* m, size_t n) {
  if (n >= 2 && m[0] == 0x1f && m[1] == 0x8b) return Kind::gzip;
  if (n >= 4 && std::memcmp(m, "\x28\xb5\x2f\xfd", 4) == 0) return Kind::zstd;
  if (n >= 3 && std::memcmp(m, "BZh", 3) == 0) return Kind::bzip2;
  if (n >= 6 && std::memcmp(m, "\xfd" "7zXZ\0", 6) == 0) return Kind::xz;
  return Kind::plain;
}

void check_bom(const std::string& path, const void* s, size_t n) {
  if (n >= 3 && std::memcmp(s, "\xEF\xBB\xBF", 3) == 0)
    throw CorpusError(path + ": starts with a UTF-8 byte-order mark (EF BB BF); save it without one");
}

// A source's lines, each a view into the buffer (cap bytes), which grows only
// for a line longer than itself. on_line(line, its number within the source, from 1).
template <class Base, class F>
void for_each_line(Source& src, size_t cap, bool at_file_start, const std::string& path, Base&& base, F&& on_line) {
  size_t head = 0, tail = 0, scan = 0;
  std::unique_ptr<char[]> buf(new char[cap]);
  bool eof = false;
  long k = 0;
  auto check_length = [&](size_t n) {
    if (n > kMaxCorpusLine)
      throw CorpusError(path + ":" + std::to_string(base() + k + 1) + ": line longer than " +
                        std::to_string(kMaxCorpusLine >> 20) + " MB (one JSON document per line)");
  };
  while (true) {
    if (auto nl = static_cast<char*>(std::memchr(buf.get() + scan, '\n', tail - scan))) {
      const size_t end = size_t(nl - buf.get());
      check_length(end - head);
      on_line(std::string_view(buf.get() + head, end - head), ++k);
      head = scan = end + 1;
      continue;
    }
    scan = tail;
    check_length(tail - head);
    if (eof) {
      if (head < tail) on_line(std::string_view(buf.get() + head, tail - head), ++k);
      return;
    }
    if (head > 0) {  // only the unfinished line moves
      std::memmove(buf.get(), buf.get() + head, tail - head);
      tail -= head, scan -= head, head = 0;
    }
    if (tail == cap) {
      cap = std::min(cap * 2, kMaxCorpusLine + 1);
      std::unique_ptr<char[]> grown(new char[cap]);
      std::memcpy(grown.get(), buf.get(), tail);
      buf = std::move(grown);
    }
    size_t got = src.read(buf.get() + tail, cap - tail);
    if (at_file_start) check_bom(path, buf.get(), got), at_file_start = false;
    eof = got == 0;
    tail += got;
  }
}

// '\n' bytes in [0, upto) of a file: the line number a mid-file piece starts at.
long count_lines(const Fd& fd, const std::string& path, uint64_t upto, uint64_t from = 0) {
  std::vector<char> buf(size_t(1) << 20);
  long n = 0;
  for (uint64_t off = from; off < upto;) {
    size_t want = size_t(std::min<uint64_t>(buf.size(), upto - off));
    if (fd.pread_full(buf.data(), want, off, path) < want) shrank(path);
    for (const char *c = buf.data(), *e = c + want; (c = static_cast<const char*>(std::memchr(c, '\n', size_t(e - c)))); ++c) ++n;
    off += want;
  }
  return n;
}

// ------------------------------------------------------------ file lists

void add_directory(const std::string& dir, std::vector<std::string>& out) {
  std::vector<std::string> found;
  try {
    for (const auto& entry : fs::recursive_directory_iterator(dir)) {
      const std::string name = entry.path().filename().string();
      if (entry.is_regular_file() && (ends_with(name, ".jsonl") || ends_with(name, ".json") || ends_with(name, ".gz") ||
                                      ends_with(name, ".zst") || ends_with(name, ".bin") || ends_with(name, ".idx")))
        found.push_back(entry.path().string());
    }
  } catch (const fs::filesystem_error& e) {
    throw CorpusError("cannot list input directory '" + dir + "': " + e.code().message());
  }
  if (found.empty()) throw CorpusError("input directory '" + dir + "' holds no .jsonl, .json, .gz, .zst, .bin or .idx files");
  std::sort(found.begin(), found.end());
  out.insert(out.end(), found.begin(), found.end());
}

void add_element(const std::string& element, std::vector<std::string>& out) {
  std::error_code ec;
  auto st = fs::status(element, ec);
  if (!ec && fs::is_directory(st)) return add_directory(element, out);
  if (!ec && fs::exists(st)) return out.push_back(element);  // even a name with glob characters
  if (fs::exists(element + ".bin", ec) && fs::exists(element + ".idx", ec)) return out.push_back(element + ".bin");
  if (element.find_first_of("*?[") == std::string::npos)
    throw CorpusError("cannot open input file '" + element + "': " + std::strerror(ENOENT));
  glob_t g{};
  int r = ::glob(element.c_str(), GLOB_NOSORT, nullptr, &g);
  std::vector<std::string> matched(g.gl_pathv, g.gl_pathv + (r == 0 ? g.gl_pathc : 0));
  globfree(&g);
  if (r == GLOB_NOMATCH || (r == 0 && matched.empty())) throw CorpusError("input pattern '" + element + "' matches no files");
  if (r != 0) throw CorpusError("cannot expand input pattern '" + element + "' (a directory could not be read)");
  std::sort(matched.begin(), matched.end());  // by bytes, whatever the locale
  for (const auto& m : matched) {
    if (fs::is_directory(m, ec)) add_directory(m, out);
    else out.push_back(m);
  }
}

}  // namespace

uint64_t count_piece_lines(const InputPiece& piece) {
  if (piece.compressed || piece.end <= piece.begin) return 0;
  const Fd fd(piece.file);
  return uint64_t(count_lines(fd, piece.file, piece.end, piece.begin));
}

std::vector<std::string> expand_inputs(const std::string& spec) {
  std::vector<std::string> all;
  for (size_t start = 0; start <= spec.size();) {
    size_t comma = std::min(spec.find(',', start), spec.size());
    std::string element = spec.substr(start, comma - start);
    element.erase(0, element.find_first_not_of(" \t"));
    element.erase(element.find_last_not_of(" \t") + 1);
    if (!element.empty()) add_element(element, all);
    start = comma + 1;
  }
  if (all.empty()) throw CorpusError("no input files given (empty data.corpus?)");
  std::vector<std::string> out;
  std::set<std::string> seen;
  for (auto& f : all) {
    if (!seen.insert(fs::path(f).lexically_normal().string()).second) continue;
    Fd check(f);  // names the file when it cannot be opened
    out.push_back(std::move(f));
  }
  return out;
}

std::vector<InputPiece> plan_pieces(const std::vector<std::string>& files, uint64_t piece_bytes) {
  std::vector<InputPiece> plan;
  std::vector<char> buf(size_t(64) << 10);
  for (const auto& file : files) {
    Fd fd(file);
    const uint64_t size = fd.size(file);
    if (size == 0) throw CorpusError("input file '" + file + "' is empty");
    const size_t head = fd.pread_full(buf.data(), 6, 0, file);
    const Kind kind = sniff(reinterpret_cast<const unsigned char*>(buf.data()), head);
    if (kind == Kind::bzip2 || kind == Kind::xz)
      throw CorpusError(file + ": " + (kind == Kind::xz ? "xz" : "bzip2") +
                        " compressed; only gzip and zstd are read (recompress it, e.g. with zstd)");
    if (kind != Kind::plain) {
      plan.push_back({file, 0, size, true});
      continue;
    }
    check_bom(file, buf.data(), head);
    for (uint64_t begin = 0; begin < size;) {
      uint64_t end = size;
      // Just past the first '\n' at or after the nominal cut's last byte.
      if (piece_bytes > 0 && piece_bytes < size - begin)
        for (uint64_t off = begin + piece_bytes - 1; off < size && end == size;) {
          size_t got = fd.pread_full(buf.data(), buf.size(), off, file);
          if (got == 0) shrank(file);
          if (auto nl = static_cast<const char*>(std::memchr(buf.data(), '\n', got))) end = off + uint64_t(nl - buf.data()) + 1;
          off += got;
        }
      plan.push_back({file, begin, end, false});
      begin = end;
    }
  }
  return plan;
}

void read_piece(const InputPiece& piece, const InputOptions& o, const std::function<void(InputDocument&&)>& fn,
                uint64_t* empty) {
  Fd fd(piece.file);
  const std::string stem = file_stem(piece.file), name = base_name(piece.file);
  std::unique_ptr<Source> src;
  if (piece.compressed) {
    unsigned char m[4] = {};
    const Kind kind = sniff(m, fd.pread_full(m, 4, 0, piece.file));
    if (kind == Kind::gzip) src = std::make_unique<GzipSource>(fd, piece.file);
    else if (kind == Kind::zstd) src = std::make_unique<ZstdSource>(fd, piece.file);
    else throw CorpusError(piece.file + ": neither gzip nor zstd compressed (planned as compressed)");
  } else {
    if (piece.end < piece.begin) throw CorpusError(piece.file + ": a piece that ends before it begins");
    src = std::make_unique<PlainSource>(fd, piece.file, piece.begin, piece.end);
  }
  // The lines before a mid-file piece are counted only when a number is
  // needed: a document without an id, or an error.
  long base = piece.compressed || piece.begin == 0 ? 0 : long(piece.lines_before), k = 0;
  auto line_base = [&] { return base < 0 ? base = count_lines(fd, piece.file, piece.begin) : base; };
  auto where = [&] { return piece.file + ":" + std::to_string(line_base() + k); };
  auto id = [&] { return name + ":" + std::to_string(line_base() + k); };
  // A small plain piece needs no more buffer than its own length.
  const size_t cap = piece.compressed ? kBuffer : size_t(std::clamp<uint64_t>(piece.end - piece.begin + 1, 4096, kBuffer));
  for_each_line(*src, cap, piece.compressed || piece.begin == 0, piece.file, line_base, [&](std::string_view line, long number) {
    k = number;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) return;  // blank
    InputDocument d = parse_line(line, o, stem, where, id);
    if (!d.text.empty()) fn(std::move(d));
    else if (empty) ++*empty;
  });
}

InputDocument parse_json_document(std::string_view line, const std::string& where, const InputOptions& o,
                                  const std::string& file_stem, long line_number) {
  return parse_line(line, o, file_stem, [&] { return where; }, [&] {
    // `where` is "path:line"; the id keeps the file name only.
    std::string_view path = where;
    const std::string num = ":" + std::to_string(line_number);
    if (ends_with(path, num)) path.remove_suffix(num.size());
    return base_name(path) + num;
  });
}

}  // namespace dipaco
