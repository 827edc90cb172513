#include "dipaco/data/token_store.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <algorithm>
#include <map>
#include <sstream>

#include "dipaco/io/key_lines.hpp"

namespace dipaco {

std::string idx_header_bytes(const IdxHeader& h) {
  std::string out(kIdxMagic, sizeof kIdxMagic);
  auto put = [&](const void* p, size_t n) { out.append(static_cast<const char*>(p), n); };
  const uint64_t version = 1;
  put(&version, 8), put(&h.dtype, 1), put(&h.sequences, 8), put(&h.doc_entries, 8);
  return out;
}

namespace {
// A file opened for reading, and its size; throws CorpusError naming it.
int open_sized(const std::string& path, size_t& size) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw CorpusError("cannot open " + path + ": " + std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw CorpusError("cannot stat " + path + ": " + std::strerror(err));
  }
  size = size_t(st.st_size);
  return fd;
}
}  // namespace

MappedFile::MappedFile(const std::string& path) {
  const int fd = open_sized(path, size_);
  if (size_ > 0) {
    void* p = mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      throw CorpusError("cannot map " + path + ": " + std::strerror(errno));
    }
    data_ = static_cast<const char*>(p);
  }
  ::close(fd);
}

MappedFile::MappedFile(MappedFile&& o) noexcept : data_(o.data_), size_(o.size_) { o.data_ = nullptr, o.size_ = 0; }

MappedFile& MappedFile::operator=(MappedFile&& o) noexcept {
  if (this != &o) {
    if (data_) munmap(const_cast<char*>(data_), size_);
    data_ = o.data_, size_ = o.size_, o.data_ = nullptr, o.size_ = 0;
  }
  return *this;
}

MappedFile::~MappedFile() {
  if (data_) munmap(const_cast<char*>(data_), size_);
}

void MappedFile::release() const {
  if (data_) madvise(const_cast<char*>(data_), size_, MADV_DONTNEED);
}

ReadFile::ReadFile(const std::vector<std::string>& paths) {
  std::vector<size_t> sizes;
  try {
    for (auto& path : paths) sizes.push_back(0), fds_.push_back(open_sized(path, sizes.back())), size_ += sizes.back();
  } catch (...) {
    for (int fd : fds_) ::close(fd);
    throw;
  }
  // Address space only: PROT_NONE, no file behind it, nothing resident.
  void* p = mmap(nullptr, std::max<size_t>(size_, 1), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    for (int fd : fds_) ::close(fd);
    throw CorpusError("cannot reserve address space for " + paths[0] + ": " + std::strerror(errno));
  }
  base_ = static_cast<const char*>(p);
  size_t at = 0;
  for (size_t i = 0; i < paths.size(); ++i) register_text_file(base_ + at, sizes[i], fds_[i]), at += sizes[i];
}

ReadFile::~ReadFile() {
  if (!base_) return;
  unregister_text_files(base_, std::max<size_t>(size_, 1));
  munmap(const_cast<char*>(base_), std::max<size_t>(size_, 1));
  for (int fd : fds_) ::close(fd);
}

std::string escape_line(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string unescape_line(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) out += s[++i] == 'n' ? '\n' : s[i];
    else out += s[i];
  }
  return out;
}

namespace {
template <class T>
T load(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);  // the .idx arrays start at byte 34: unaligned
  return v;
}
// A value at byte offset `at` of a file read through a reserved range.
template <class T>
T fetch(const ReadFile& f, size_t at) {
  char buf[sizeof(T)];
  read_text({f.data(), f.size()}, at, sizeof(T), buf);
  return load<T>(buf);
}
}  // namespace

TokenStore::TokenStore(const std::string& dir) : dir_(dir) {
  auto bad = [&](const std::string& file, const std::string& what) { return CorpusError(dir + "/" + file + ": " + what); };
  {
    std::ifstream in(dir + "/meta.txt");
    if (!in) throw CorpusError("no token store in " + dir + " (meta.txt is missing: an unfinished prepare?)");
    std::stringstream ss;
    ss << in.rdbuf();
    for (auto& [k, v] : parse_key_lines(ss.str())) meta_.emplace_back(k, v);
  }
  if (meta("format") != "dipaco-store 1") throw bad("meta.txt", "not a dipaco token store (format '" + meta("format") + "')");
  // Token inputs are read where they lie (sources.txt), bytes from corpus.bin.
  std::vector<std::string> text_files{dir + "/corpus.bin"};
  const bool in_place = meta("text") == "sources.txt";
  if (in_place) {
    text_files.clear();
    std::ifstream src(dir + "/sources.txt");
    for (std::string line; std::getline(src, line);) text_files.push_back(unescape_line(line));
    if (text_files.empty()) throw bad("sources.txt", "missing or empty");
  }
  bin_ = std::make_unique<ReadFile>(text_files);
  idx_ = std::make_unique<ReadFile>(std::vector<std::string>{dir + "/corpus.idx"});
  records_ = std::make_unique<ReadFile>(std::vector<std::string>{dir + "/docs.bin"});
  ids_ = std::make_unique<ReadFile>(std::vector<std::string>{dir + "/ids.bin"});
  char head[kIdxHeader] = {};
  if (idx_->size() >= kIdxHeader) read_text({idx_->data(), idx_->size()}, 0, kIdxHeader, head);
  if (idx_->size() < kIdxHeader || std::memcmp(head, kIdxMagic, sizeof kIdxMagic) != 0)
    throw bad("corpus.idx", "not a Megatron indexed-dataset index (no MMIDIDX magic)");
  if (load<uint64_t>(head + 9) != 1) throw bad("corpus.idx", "version " + std::to_string(load<uint64_t>(head + 9)) + ", expected 1");
  dtype_ = uint8_t(head[17]);
  if (dtype_width(dtype_) == 0) throw bad("corpus.idx", "dtype code " + std::to_string(int(dtype_)) + " is not an integer type");
  try {
    eod_ = int32_t(std::stol(meta("eod").empty() ? "0" : meta("eod")));
    vocab_ = int(std::stol(meta("vocab_size").empty() ? "256" : meta("vocab_size")));
  } catch (const std::exception&) {
    throw bad("meta.txt", "eod or vocab_size is not a number");
  }
  const uint64_t n = load<uint64_t>(head + 18), d = load<uint64_t>(head + 26);
  if (d != n + 1 || idx_->size() != idx_doc_index_at(n) + 8 * d)
    throw bad("corpus.idx", std::to_string(idx_->size()) + " bytes do not hold " + std::to_string(n) + " sequences");
  if (records_->size() != n * sizeof(DocRecord)) throw bad("docs.bin", "size disagrees with corpus.idx's " + std::to_string(n) + " documents");
  if (n > uint64_t(INT32_MAX)) throw bad("corpus.idx", std::to_string(n) + " documents: at most 2^31 - 1 a store");
  docs_ = n;
  if (std::to_string(n) != meta("documents")) throw bad("meta.txt", "documents disagree with corpus.idx");
  // The last document must end where corpus.bin ends, and every id inside ids.bin.
  if (n > 0 && !in_place) {
    const uint64_t last = uint64_t(fetch<int64_t>(*idx_, idx_pointers_at(n) + 8 * (n - 1))) +
                          uint64_t(fetch<int32_t>(*idx_, kIdxHeader + 4 * (n - 1))) * dtype_width(dtype_);
    if (last != bin_->size())
      throw bad("corpus.bin", std::to_string(bin_->size()) + " bytes, corpus.idx says " + std::to_string(last));
    const DocRecord r = record(n - 1);
    if (r.id_offset + r.id_length != ids_->size()) throw bad("ids.bin", "size disagrees with docs.bin");
  }
  std::ifstream in(dir + "/domains.txt");
  for (std::string line; std::getline(in, line);) domains_.push_back(unescape_line(line));
}

std::string TokenStore::text(size_t i) const { return read_view(document(i).text); }  // the tokens as stored

std::string TokenStore::meta(const std::string& key) const {
  for (auto& [k, v] : meta_)
    if (k == key) return v;
  return "";
}

DocRecord TokenStore::record(size_t i) const { return fetch<DocRecord>(*records_, i * sizeof(DocRecord)); }

bool TokenStore::is_val(size_t i) const { return record(i).domain_val & 1; }

namespace {
// An array of a file read a block at a time: one read per block that the
// (usually ascending) indices visit, never one per element.
template <class T>
class BlockReader {
 public:
  BlockReader(const ReadFile& f, size_t offset, size_t count) : f_(f), offset_(offset), count_(count) {}
  T operator[](size_t i) {
    if (first_ == SIZE_MAX || i < first_ || i >= first_ + block_.size()) {
      first_ = i / TokenStore::kSizesBlock * TokenStore::kSizesBlock;
      block_.resize(std::min(TokenStore::kSizesBlock, count_ - first_));
      read_text({f_.data(), f_.size()}, offset_ + sizeof(T) * first_, sizeof(T) * block_.size(),
                reinterpret_cast<char*>(block_.data()));
    }
    return block_[i - first_];
  }

 private:
  const ReadFile& f_;
  size_t offset_, count_, first_ = SIZE_MAX;
  std::vector<T> block_;
};
}  // namespace

Document TokenStore::make_document(size_t i, const DocRecord& r, int32_t size, int64_t at) const {
  const uint32_t domain = r.domain_val >> 1;
  const uint64_t bytes = uint64_t(size) * uint64_t(dtype_width(dtype_));
  if (size < 0 || at < 0 || uint64_t(at) + bytes > bin_->size() || domain >= domains_.size() ||
      r.id_offset + r.id_length > ids_->size())
    throw CorpusError(dir_ + ": document " + std::to_string(i) + " points outside the store's files");
  return Document{std::string_view(ids_->data() + r.id_offset, r.id_length), domains_[domain],
                  std::string_view(bin_->data() + at, size_t(bytes)), dtype_, eod_};
}

Document TokenStore::document(size_t i) const {
  if (i >= docs_) throw CorpusError(dir_ + ": document " + std::to_string(i) + " is not in the store");
  return make_document(i, record(i), fetch<int32_t>(*idx_, kIdxHeader + 4 * i),
                       fetch<int64_t>(*idx_, idx_pointers_at(docs_) + 8 * i));
}

void TokenStore::documents(const uint32_t* index, size_t n, Document* out) const {
  BlockReader<DocRecord> records(*records_, 0, docs_);
  BlockReader<int32_t> sizes(*idx_, kIdxHeader, docs_);
  BlockReader<int64_t> pointers(*idx_, idx_pointers_at(docs_), docs_);
  for (size_t j = 0; j < n; ++j) {
    const size_t i = index[j];
    if (i >= docs_) throw CorpusError(dir_ + ": document " + std::to_string(i) + " is not in the store");
    out[j] = make_document(i, records[i], sizes[i], pointers[i]);
  }
}

void TokenStore::tokens(const uint32_t* index, size_t n, uint64_t* out) const {
  BlockReader<int32_t> sizes(*idx_, kIdxHeader, docs_);
  for (size_t j = 0; j < n; ++j) {
    const size_t i = index[j];
    if (i >= docs_) throw CorpusError(dir_ + ": document " + std::to_string(i) + " is not in the store");
    const int32_t size = sizes[i];
    if (size < 0) throw CorpusError(dir_ + ": document " + std::to_string(i) + " has a negative size");
    out[j] = uint64_t(size);
  }
}

Split TokenStore::split() const {
  Split s;
  std::vector<long> train_n(domains_.size()), val_n(domains_.size());
  std::vector<uint32_t> train, val;
  BlockReader<DocRecord> records(*records_, 0, docs_);
  for (size_t i = 0; i < docs_; ++i) {
    const uint32_t domain_val = records[i].domain_val;
    const bool is_val = domain_val & 1;
    (is_val ? val : train).push_back(uint32_t(i));
    ++(is_val ? val_n : train_n)[domain_val >> 1];
  }
  s.train = DocList(*this, std::move(train)), s.val = DocList(*this, std::move(val));
  for (size_t k = 0; k < domains_.size(); ++k)
    if (train_n[k] > 0 && val_n[k] == 0) s.unvalidated.push_back(domains_[k]);
  return s;
}

}  // namespace dipaco
