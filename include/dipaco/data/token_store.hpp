// The token store: a corpus on disk, read (pread) by every rank, never read
// whole into memory. Made once by the prepare stage (prepare.hpp); a directory
//   corpus.bin    the documents' tokens one after another (uint8: bytes)
//   corpus.idx    Megatron-LM's indexed-dataset index (MMIDIDX, version 1):
//                 dtype, sequence sizes, byte pointers, document index
//   sources.txt   instead of corpus.bin, for token inputs read in place: their
//                 files, the pointers into them as if laid one after another
//   docs.bin      per document {u64 id offset, u32 id length, u32 domain << 1 | val}
//   ids.bin       the ids, one after another
//   domains.txt   the domain names, one a line (\n and \\ escaped), sorted
//   meta.txt      key = value: format, documents, bytes, content_hash, ... (written last)
// corpus.bin/.idx is a valid Megatron dataset (Megatron's own reader opens it).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "dipaco/data/corpus.hpp"

namespace dipaco {

// Megatron's .idx layout, shared by the writer and the reader.
constexpr char kIdxMagic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', 0, 0};
constexpr size_t kIdxHeader = 34;  // magic, u64 version, u8 dtype, u64 sequences, u64 document-index entries
struct IdxHeader {
  uint8_t dtype = 1;  // 1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 6 float64, 7 float32, 8 uint16
  uint64_t sequences = 0, doc_entries = 0;
};
std::string idx_header_bytes(const IdxHeader& h);
// Byte offsets of the three arrays in an .idx of n sequences.
inline uint64_t idx_sizes_at(uint64_t) { return kIdxHeader; }
inline uint64_t idx_pointers_at(uint64_t n) { return kIdxHeader + 4 * n; }
inline uint64_t idx_doc_index_at(uint64_t n) { return kIdxHeader + 12 * n; }

struct DocRecord {
  uint64_t id_offset;
  uint32_t id_length;
  uint32_t domain_val;  // domain << 1 | (1 when a validation document)
};
static_assert(sizeof(DocRecord) == 16);

// A read-only memory map of a whole file (empty files map to nothing).
class MappedFile {
 public:
  MappedFile() = default;
  explicit MappedFile(const std::string& path);
  MappedFile(MappedFile&& o) noexcept;
  MappedFile& operator=(MappedFile&& o) noexcept;
  MappedFile(const MappedFile&) = delete;
  ~MappedFile();
  const char* data() const { return data_; }
  size_t size() const { return size_; }
  // Lets the kernel drop the pages (they stay in the page cache): a pass over
  // the whole file then does not stay in this process's resident memory.
  void release() const;

 private:
  const char* data_ = nullptr;
  size_t size_ = 0;
};

// Files read through one address range reserved for them, one after another
// (never mapped, see read_text in corpus.hpp): views point into the range,
// reads are preads of the file a view falls in.
class ReadFile {
 public:
  ReadFile() = default;
  explicit ReadFile(const std::vector<std::string>& paths);
  ReadFile(const ReadFile&) = delete;
  ReadFile& operator=(const ReadFile&) = delete;
  ~ReadFile();
  const char* data() const { return base_; }
  size_t size() const { return size_; }

 private:
  const char* base_ = nullptr;
  size_t size_ = 0;
  std::vector<int> fds_;
};

class TokenStore : public DocumentSource {
 public:
  // Opens and checks every file of the store; throws CorpusError naming the file.
  explicit TokenStore(const std::string& dir);
  size_t documents() const { return docs_; }
  const std::string& dir() const { return dir_; }
  std::string meta(const std::string& key) const;  // "" when absent
  // Its text and id are views read with read_text / read_view (corpus.hpp).
  Document document(size_t i) const override;
  void documents(const uint32_t* index, size_t n, Document* out) const override;
  void tokens(const uint32_t* index, size_t n, uint64_t* out) const override;
  static constexpr size_t kSizesBlock = 1 << 12;  // entries of an index array a bulk read takes at a time
  std::string text(size_t i) const;
  bool is_val(size_t i) const;
  const std::vector<std::string>& domains() const { return domains_; }
  int vocab_size() const { return vocab_; }  // 256 for bytes
  bool bytes() const { return dtype_ == 1 && meta("tokens") == "bytes"; }
  // The SentencePiece model the text was encoded with ("" for bytes and token inputs).
  std::string tokenizer_file() const { return meta("tokenizer").empty() ? "" : dir_ + "/" + meta("tokenizer"); }
  // Every document, in store order, into the split (indices: 4 bytes a document).
  Split split() const;

 private:
  DocRecord record(size_t i) const;
  Document make_document(size_t i, const DocRecord& r, int32_t size, int64_t at) const;  // checked
  std::string dir_;
  size_t docs_ = 0;
  // Every file is read, never mapped (corpus.hpp): a pass over the documents
  // leaves nothing of them in this rank's resident memory.
  std::unique_ptr<ReadFile> bin_, idx_, records_, ids_;
  std::vector<std::string> domains_;
  std::vector<std::pair<std::string, std::string>> meta_;
  uint8_t dtype_ = 1;
  int32_t eod_ = 0;
  int vocab_ = 256;
};

// A run's store: data.store when set, else RUN_DIR/store.
inline std::string store_dir_of(const std::string& data_store, const std::string& run_dir) {
  return data_store.empty() ? run_dir + "/store" : data_store;
}

// Escaping of one domain per line in domains.txt.
std::string escape_line(std::string_view s);
std::string unescape_line(std::string_view s);

}  // namespace dipaco
