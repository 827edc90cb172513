// Corpus: documents (id, domain, text) as views into the token store (or any
// owner), byte-level tokens, a stable train/validation split by a hash of the
// document id, and the token streams that paths sample training windows from.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "dipaco/io/input_error.hpp"

namespace dipaco {

struct CorpusError : InputError {
  using InputError::InputError;
};

// Token ids as a store holds them: Megatron's dtype codes (1 uint8, 2 int8,
// 3 int16, 4 int32, 5 int64, 8 uint16; 6/7 are floats, never token ids).
int dtype_width(int dtype);  // bytes per token; 0 for a code that is not an integer type

// A document as the stages see it: views into memory its owner keeps alive
// (the token store in a run, whose id and text views are read with
// read_view/read_text, never touched). `text` is the document's tokens as stored
// (bytes for a byte-level corpus, dtype_width bytes per token otherwise); its
// stream is the tokens, then the end-of-document token `eod`.
struct Document {
  std::string_view id, domain, text;
  uint8_t dtype = 1;
  int32_t eod = 0;
  size_t tokens() const { return dtype == 1 ? text.size() : text.size() / size_t(dtype_width(dtype)); }
};

// Reading a document's text. The token store's text is not mapped into
// memory but read with pread (a mapped page of a large-folio page cache puts
// 2 MB into this process's resident set per touch, so resident memory would
// grow with the corpus): its views point into an address range reserved for
// the file, never touched, and these functions read through them. Views of
// ordinary memory are copied.
void register_text_file(const char* base, size_t size, int fd);
void unregister_text_files(const char* base, size_t size);  // every file registered in [base, base + size)
void read_text(std::string_view text, size_t off, size_t n, char* out);  // off + n <= text.size()
// A view's bytes (a store document's id is such a view: read, not touched).
inline std::string read_view(std::string_view v) {
  std::string out(v.size(), '\0');
  read_text(v, 0, v.size(), out.data());
  return out;
}
// Tokens [begin, begin + n) of a document's stream: its tokens, then its eod token.
void read_document(const Document& d, size_t begin, size_t n, int32_t* out);

// What targets stand for in the text: their count, or with a token-bytes table
// (Tokenizer::token_bytes) the bytes of each.
inline double target_bytes(const int32_t* tgt, size_t n, const std::vector<uint8_t>& table) {
  if (table.empty()) return double(n);
  double b = 0;
  for (size_t i = 0; i < n; ++i) b += table[size_t(tgt[i])];
  return b;
}

// The longest JSONL line read (one document).
constexpr size_t kMaxCorpusLine = size_t(64) << 20;

uint64_t hash64(std::string_view s, uint64_t seed = 0);
// The same job for bulk text (the store's content hash), 8 bytes at a time;
// other values than hash64's, so never for ids (the split depends on those).
uint64_t bulk_hash64(std::string_view s, uint64_t seed = 0);
double unit_hash(std::string_view s);  // in [0, 1)

// Where a list's documents live: the token store, or memory (tests, inference).
class DocumentSource {
 public:
  virtual ~DocumentSource() = default;
  virtual Document document(size_t i) const = 0;
  // Documents index[0..n) and their token counts, in bulk (a store reads its index in blocks).
  virtual void documents(const uint32_t* index, size_t n, Document* out) const {
    for (size_t i = 0; i < n; ++i) out[i] = document(index[i]);
  }
  virtual void tokens(const uint32_t* index, size_t n, uint64_t* out) const {
    for (size_t i = 0; i < n; ++i) out[i] = document(index[i]).tokens();
  }
};

// Documents by index: 4 bytes a document, each made (its views) when asked,
// so that a list of every document of a large corpus stays small. Subsets
// share the source; a store's lists need the store to outlive them.
class DocList {
 public:
  DocList() = default;
  explicit DocList(std::vector<Document> docs);                    // held by the list and its subsets
  DocList(const DocumentSource& source, std::vector<uint32_t> index);  // indices into source
  size_t size() const { return index_.size(); }
  bool empty() const { return index_.empty(); }
  Document operator[](size_t i) const { return source_->document(index_[i]); }
  const std::vector<uint32_t>& index() const { return index_; }  // into the source
  std::vector<uint64_t> tokens() const;                      // every document's token count, in bulk
  std::vector<Document> documents(size_t lo, size_t hi) const;  // documents [lo, hi), in bulk
  // use(first, views) for documents [first, first + block) in turn, each block's views made in bulk.
  template <class Use>
  void each_block(size_t block, Use use) const {
    for (size_t first = 0; first < size(); first += block) use(first, documents(first, std::min(size(), first + block)));
  }
  DocList subset(const std::vector<int>& picks) const;  // picks index this list
  DocList slice(size_t lo, size_t hi) const;            // documents [lo, hi)

  class iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = Document;
    using difference_type = std::ptrdiff_t;
    using pointer = void;
    using reference = Document;
    iterator(const DocList* l, size_t i) : l_(l), i_(i) {}
    Document operator*() const { return (*l_)[i_]; }
    iterator& operator++() { return ++i_, *this; }
    bool operator!=(const iterator& o) const { return i_ != o.i_; }
    bool operator==(const iterator& o) const { return i_ == o.i_; }

   private:
    const DocList* l_;
    size_t i_;
  };
  iterator begin() const { return {this, 0}; }
  iterator end() const { return {this, size()}; }

 private:
  std::shared_ptr<const DocumentSource> owned_;  // in-memory documents
  const DocumentSource* source_ = nullptr;
  std::vector<uint32_t> index_;
};

struct Split {
  DocList train, val;
  std::vector<std::string> unvalidated;  // domains left without a validation document
};
// The split rule, in input order: a document is held out when unit_hash(id) <
// val_fraction; domains with fewer than min_val_docs held-out documents take
// their lowest-hash training ones (ties: the earlier document), keeping one for
// training (so a one-document domain is not validated). The token store applies
// the same rule across ranks (prepare.cpp); this is its in-memory reference.
Split split_corpus(const std::vector<Document>& docs, double val_fraction, int min_val_docs);

// A training window fixed in advance (segment shards): stream tokens
// [start, start + T] of the stream's document `doc`.
struct WindowStart {
  uint32_t doc, start;
  auto operator<=>(const WindowStart&) const = default;
};

// Documents concatenated into one token stream, each followed by its end token
// (a 0 byte for bytes), without copying them: 12 bytes a document. Every
// document of a stream has the same dtype and end token (one store). With
// windows, training samples those windows only (8 bytes each), not any position.
class TokenStream {
 public:
  TokenStream() = default;
  explicit TokenStream(const DocList& docs);
  TokenStream(const DocList& docs, std::vector<WindowStart> windows);
  const std::vector<WindowStart>& windows() const { return windows_; }
  Document document(size_t i) const { return docs_[i]; }
  size_t size() const { return end_.empty() ? 0 : end_.back(); }
  size_t documents() const { return docs_.size(); }
  int32_t eod() const { return eod_; }
  int32_t at(size_t pos) const;                     // token pos of the stream
  void read(size_t pos, size_t n, int32_t* out) const;  // tokens [pos, pos + n), pos + n <= size()

 private:
  DocList docs_;  // 4 bytes a document: a read makes the views of the documents it spans
  uint8_t dtype_ = 1;
  int32_t eod_ = 0;
  std::vector<uint64_t> end_;  // end_[i]: where document i's end token is, plus one
  std::vector<WindowStart> windows_;
};
// A window's inputs [pos, pos + T) and targets [pos + 1, pos + T]: the T + 1
// tokens read once, the targets the inputs shifted by one.
void read_window(const TokenStream& s, size_t pos, int T, int32_t* tok, int32_t* tgt);
void read_window(const Document& d, size_t begin, int T, int32_t* tok, int32_t* tgt);
inline TokenStream make_stream(const DocList& docs) { return TokenStream(docs); }

// Training window (seed, path, step, sequence) -> T+1 bytes, independent of
// how many ranks share the path: the data cursor is just the step. A stream
// with windows gives one of them.
void sample_window(const TokenStream& s, int T, uint64_t seed, int path, long step, int seq, int32_t* tok, int32_t* tgt);
// Validation windows: `count` evenly spaced, non-overlapping where possible;
// a stream shorter than one window gets one, padded (read_window pads it).
// Returns how many windows the stream really holds (<= count).
int validation_windows(const TokenStream& s, int T, int count, std::vector<size_t>& starts);

}  // namespace dipaco
