// Corpus: JSONL documents (id, domain, text), byte-level tokens, a stable
// train/validation split by a hash of the document id, and the token streams
// that paths sample training windows from.
#pragma once
#include <cstdint>
#include <istream>
#include <stdexcept>
#include <string>
#include <vector>

namespace dipaco {

struct CorpusError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Document {
  std::string id, domain, text;
};

// Throws CorpusError naming the file and line on malformed input, or on a
// line longer than kMaxCorpusLine bytes.
constexpr size_t kMaxCorpusLine = size_t(64) << 20;
std::vector<Document> read_corpus(const std::string& path);
std::vector<Document> read_corpus(std::istream& in, const std::string& name);
// Parses one JSONL line; `where` prefixes error messages.
Document parse_document(const std::string& line, const std::string& where);

uint64_t hash64(const std::string& s, uint64_t seed = 0);
double unit_hash(const std::string& s);  // in [0, 1)

struct Split {
  std::vector<Document> train, val;
  std::vector<std::string> unvalidated;  // domains left without a validation document
};
// A document is held out when unit_hash(id) < val_fraction; domains with fewer
// than min_val_docs held-out documents take their lowest-hash training ones,
// keeping one for training (so a one-document domain is not validated).
Split split_corpus(std::vector<Document> docs, double val_fraction, int min_val_docs);

// Documents concatenated into one byte stream, each followed by a 0 byte
// (end of document).
struct TokenStream {
  std::vector<uint8_t> bytes;
  size_t documents = 0;
};
TokenStream make_stream(const std::vector<const Document*>& docs);

// Training window (seed, path, step, sequence) -> T+1 bytes, independent of
// how many ranks share the path: the data cursor is just the step.
void sample_window(const TokenStream& s, int T, uint64_t seed, int path, long step, int seq, int32_t* tok, int32_t* tgt);
// Validation windows: `count` evenly spaced, non-overlapping where possible.
// Returns how many windows the stream really holds (<= count).
int validation_windows(const TokenStream& s, int T, int count, std::vector<size_t>& starts);

}  // namespace dipaco
