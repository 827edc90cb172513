#include "dipaco/data/token_inputs.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "dipaco/data/token_store.hpp"  // MappedFile, Megatron's .idx layout

namespace dipaco {
namespace {

constexpr int32_t kLlmcGpt2 = 20240520, kLlmcLlama3 = 20240801;
constexpr uint64_t kLlmcHeader = 1024;

struct Fd {
  int fd;
  std::string path;
  explicit Fd(const std::string& p) : fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC)), path(p) {
    if (fd < 0) throw CorpusError("cannot open input file '" + p + "': " + std::strerror(errno));
  }
  ~Fd() { ::close(fd); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  uint64_t size() const {
    struct stat st {};
    if (::fstat(fd, &st) != 0) throw CorpusError("cannot stat input file '" + path + "': " + std::strerror(errno));
    return uint64_t(st.st_size);
  }
  size_t read(void* out, size_t n, uint64_t off) const {
    size_t got = 0;
    while (got < n) {
      const ssize_t r = ::pread(fd, static_cast<char*>(out) + got, n - got, off_t(off + got));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) throw CorpusError("cannot read input file '" + path + "': " + std::strerror(errno));
      if (r == 0) break;
      got += size_t(r);
    }
    return got;
  }
  void read_exact(void* out, size_t n, uint64_t off) const {
    if (read(out, n, off) != n) throw CorpusError("input file '" + path + "' became shorter while it was read");
  }
};

template <class T>
T load(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);  // Megatron's arrays start at byte 34: unaligned
  return v;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string base_name(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string stem_of(const std::string& path) {
  std::string name = base_name(path);
  if (ends_with(name, ".bin")) name.resize(name.size() - 4);
  return name;
}

std::string idx_of(const std::string& bin) { return bin.substr(0, bin.size() - 4) + ".idx"; }

// Megatron's index, checked against its .bin.
struct MegatronIndex {
  MappedFile idx;
  uint8_t dtype = 0;
  uint64_t sequences = 0, documents = 0;
  int32_t size(uint64_t s) const { return load<int32_t>(idx.data() + kIdxHeader + 4 * s); }
  int64_t pointer(uint64_t s) const { return load<int64_t>(idx.data() + idx_pointers_at(sequences) + 8 * s); }
  int64_t doc(uint64_t j) const { return load<int64_t>(idx.data() + idx_doc_index_at(sequences) + 8 * j); }

  explicit MegatronIndex(const std::string& bin) {
    const std::string path = idx_of(bin);
    idx = MappedFile(path);
    auto bad = [&](const std::string& what) { return CorpusError(path + ": " + what); };
    const char* p = idx.data();
    if (idx.size() >= 6 && std::memcmp(p, "TNTIDX", 6) == 0)
      throw bad("Megatron's legacy TNTIDX index; rewrite it with Megatron-LM's current tools/preprocess_data.py (MMIDIDX)");
    if (idx.size() < kIdxHeader || std::memcmp(p, kIdxMagic, sizeof kIdxMagic) != 0)
      throw bad("not a Megatron indexed-dataset index (no MMIDIDX magic)");
    if (load<uint64_t>(p + 9) != 1) throw bad("version " + std::to_string(load<uint64_t>(p + 9)) + ", expected 1");
    dtype = uint8_t(p[17]);
    if (dtype_width(dtype) == 0)
      throw bad("dtype code " + std::to_string(int(dtype)) + " is not an integer type: not token ids");
    sequences = load<uint64_t>(p + 18);
    const uint64_t entries = load<uint64_t>(p + 26);
    const uint64_t need = idx_doc_index_at(sequences) + 8 * entries;
    // Multimodal datasets add one mode byte per sequence.
    if (entries == 0 || (idx.size() != need && idx.size() != need + sequences))
      throw bad(std::to_string(idx.size()) + " bytes do not hold " + std::to_string(sequences) + " sequences and " +
                std::to_string(entries) + " document-index entries");
    documents = entries - 1;
    if (doc(0) != 0 || uint64_t(doc(documents)) != sequences)
      throw bad("the document index does not run from sequence 0 to " + std::to_string(sequences));
    const uint64_t bin_size = Fd(bin).size();
    const uint64_t end = sequences ? uint64_t(pointer(sequences - 1)) + uint64_t(size(sequences - 1)) * dtype_width(dtype) : 0;
    if (end != bin_size)
      throw bad("its sizes end at byte " + std::to_string(end) + " but " + bin + " holds " + std::to_string(bin_size) +
                " bytes (a truncated .bin, or an .idx of another file?)");
  }
};

// An llm.c shard's header: the dtype and the token count, checked against the file.
uint8_t llmc_header(const Fd& f, int32_t* eod_default) {
  int32_t h[256] = {};
  const uint64_t size = f.size();
  if (size < kLlmcHeader) throw CorpusError(f.path + ": shorter than llm.c's 1,024-byte header");
  f.read_exact(h, kLlmcHeader, 0);
  const bool gpt2 = h[0] == kLlmcGpt2;
  if (h[1] != (gpt2 ? 1 : 7))
    throw CorpusError(f.path + ": llm.c header version " + std::to_string(h[1]) + ", expected " + (gpt2 ? "1" : "7"));
  const uint64_t width = gpt2 ? 2 : 4;
  if (h[2] < 0 || size != kLlmcHeader + uint64_t(h[2]) * width)
    throw CorpusError(f.path + ": the llm.c header says " + std::to_string(h[2]) + " tokens of " + std::to_string(width) +
                      " bytes but the file holds " + std::to_string(size - kLlmcHeader) + " bytes after it");
  if (eod_default) *eod_default = gpt2 ? 50256 : 128000;
  return gpt2 ? 8 : 4;  // uint16 (Megatron's code 8); uint32 read as int32 (ids past 2^31 refused)
}

// The largest id of tokens[0, n) of dtype; a negative one is an error at its byte offset.
int64_t scan_ids(const char* p, size_t n, uint8_t dtype, const std::string& file, uint64_t at) {
  int64_t top = -1;
  const size_t w = size_t(dtype_width(dtype));
  for (size_t i = 0; i < n; ++i) {
    int64_t v;
    switch (dtype) {
      case 1: v = load<uint8_t>(p + i); break;
      case 2: v = load<int8_t>(p + i); break;
      case 3: v = load<int16_t>(p + 2 * i); break;
      case 4: v = load<int32_t>(p + 4 * i); break;
      case 5: v = load<int64_t>(p + 8 * i); break;
      default: v = load<uint16_t>(p + 2 * i); break;
    }
    if (v < 0 || v > INT32_MAX)
      throw CorpusError(file + ": token id " + std::to_string(v) + " at byte " + std::to_string(at + i * w) +
                        (v < 0 ? " is negative" : " is past 2^31"));
    top = std::max(top, v);
  }
  return top;
}

}  // namespace

std::string megatron_bin(const std::string& file) {
  return ends_with(file, ".idx") ? file.substr(0, file.size() - 4) + ".bin" : file;
}

TokenFormat token_format(const std::string& file) {
  const std::string bin = megatron_bin(file);
  struct stat st {};
  if (ends_with(bin, ".bin") && ::stat(idx_of(bin).c_str(), &st) == 0) {
    if (::stat(bin.c_str(), &st) != 0) throw CorpusError(idx_of(bin) + ": its tokens " + bin + " are missing");
    MegatronIndex check(bin);
    return TokenFormat::megatron;
  }
  Fd f(file);
  int32_t magic = 0;
  if (f.read(&magic, 4, 0) == 4 && (magic == kLlmcGpt2 || magic == kLlmcLlama3)) {
    llmc_header(f, nullptr);
    return TokenFormat::llmc;
  }
  return TokenFormat::text;
}

std::vector<InputPiece> plan_token_pieces(const std::string& file, TokenFormat format, int source, uint64_t piece_bytes,
                                          int32_t eot_token) {
  std::vector<InputPiece> out;
  InputPiece p;
  p.file = megatron_bin(file), p.source = source;
  if (format == TokenFormat::llmc) {
    Fd f(p.file);
    int32_t eod = 0;
    p.format = TokenFormat::llmc, p.dtype = llmc_header(f, &eod), p.eod = eot_token >= 0 ? eot_token : eod;
    p.begin = kLlmcHeader, p.end = f.size(), p.bytes = p.end - p.begin;
    out.push_back(p);
    return out;
  }
  const MegatronIndex m(p.file);
  p.format = TokenFormat::megatron, p.dtype = m.dtype, p.eod = eot_token;
  const uint64_t w = uint64_t(dtype_width(m.dtype));
  uint64_t bytes = 0, first = 0;
  for (uint64_t j = 0; j < m.documents; ++j) {
    for (int64_t s = m.doc(j); s < m.doc(j + 1); ++s) bytes += uint64_t(std::max(m.size(uint64_t(s)), 0)) * w;
    if ((piece_bytes > 0 && bytes >= piece_bytes) || j + 1 == m.documents) {
      p.begin = first, p.end = j + 1, p.bytes = bytes, first = j + 1, bytes = 0;
      out.push_back(p);
    }
  }
  m.idx.release();  // a pass over the whole index need not stay in this rank's memory
  if (out.empty()) throw CorpusError(idx_of(p.file) + ": no documents");
  return out;
}

void read_token_piece(const InputPiece& piece, const std::function<void(InputDocument&&)>& fn, uint64_t* empty) {
  const Fd f(piece.file);
  const std::string name = base_name(piece.file), domain = stem_of(piece.file);
  const size_t w = size_t(dtype_width(piece.dtype));
  auto emit = [&](uint64_t number, uint64_t at, std::string&& tokens) {
    if (tokens.empty()) {
      if (empty) ++*empty;
      return;
    }
    InputDocument d;
    d.max_token = scan_ids(tokens.data(), tokens.size() / w, piece.dtype, piece.file, at);
    d.id = name + ":" + std::to_string(number), d.domain = domain, d.text = std::move(tokens), d.at = at;
    fn(std::move(d));
  };
  if (piece.format == TokenFormat::megatron) {
    const MegatronIndex m(piece.file);
    for (uint64_t j = piece.begin; j < piece.end; ++j) {
      const int64_t s0 = m.doc(j), s1 = m.doc(j + 1);
      if (s1 < s0 || s1 > int64_t(m.sequences))
        throw CorpusError(idx_of(piece.file) + ": the document index goes backwards at document " + std::to_string(j + 1));
      const uint64_t at = s0 < s1 ? uint64_t(m.pointer(uint64_t(s0))) : 0;
      uint64_t n = 0;
      for (int64_t s = s0; s < s1; ++s) {
        if (m.size(uint64_t(s)) < 0 || uint64_t(m.pointer(uint64_t(s))) != at + n * w)
          throw CorpusError(idx_of(piece.file) + ": document " + std::to_string(j + 1) +
                            "'s sequences are not one after another in the .bin (sequence " + std::to_string(s) + ")");
        n += uint64_t(m.size(uint64_t(s)));
      }
      std::string tokens(n * w, '\0');
      f.read_exact(tokens.data(), tokens.size(), at);
      if (piece.eod >= 0 && n > 0 && scan_ids(tokens.data() + (n - 1) * w, 1, piece.dtype, piece.file, at) == piece.eod)
        tokens.resize((n - 1) * w);
      emit(j + 1, at, std::move(tokens));
    }
    m.idx.release();
    return;
  }
  // llm.c: documents between end-of-text tokens, read a megabyte at a time.
  std::vector<char> buf(size_t(1) << 20);
  std::string doc;
  uint64_t doc_at = piece.begin, number = 0;
  bool leading = true;  // the segment before the first end-of-text token (llm.c starts every shard with one)
  for (uint64_t off = piece.begin; off < piece.end;) {
    const size_t n = size_t(std::min<uint64_t>(buf.size() / w * w, piece.end - off));
    f.read_exact(buf.data(), n, off);
    for (size_t i = 0; i < n; i += w) {
      uint32_t v = w == 2 ? load<uint16_t>(buf.data() + i) : load<uint32_t>(buf.data() + i);
      if (int64_t(v) == piece.eod) {
        if (!(leading && doc.empty())) emit(++number, doc_at, std::move(doc));
        leading = false, doc.clear(), doc_at = off + i + w;
      } else {
        doc.append(buf.data() + i, w);
      }
    }
    off += n;
  }
  if (!doc.empty()) emit(++number, doc_at, std::move(doc));
}

std::vector<uint8_t> read_decode_table(const std::string& file, int32_t eod) {
  const Fd f(file);
  const uint64_t size = f.size();
  uint32_t h[256] = {};
  if (size < sizeof h) throw CorpusError(file + ": shorter than llm.c's tokenizer header (1,024 bytes)");
  f.read_exact(h, sizeof h, 0);
  if (h[0] != 20240328 || (h[1] != 1 && h[1] != 2))
    throw CorpusError(file + ": not an llm.c tokenizer file (magic " + std::to_string(h[0]) + ", version " + std::to_string(h[1]) +
                      "; expected 20240328, version 1 or 2)");
  std::vector<char> body(size - sizeof h);
  f.read_exact(body.data(), body.size(), sizeof h);
  std::vector<uint8_t> bytes;
  size_t at = 0;
  for (uint32_t id = 0; id < h[2]; ++id) {
    if (at >= body.size()) throw CorpusError(file + ": ends at token " + std::to_string(id) + " of " + std::to_string(h[2]));
    const uint8_t n = uint8_t(body[at]);
    at += 1 + n;
    bytes.push_back(int32_t(id) == eod ? 1 : n);
  }
  if (at != body.size()) throw CorpusError(file + ": " + std::to_string(body.size() - at) + " bytes past its " + std::to_string(h[2]) + " tokens");
  return bytes;
}

}  // namespace dipaco
