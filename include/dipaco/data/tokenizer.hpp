// Tokens like the paper's: a SentencePiece model (Debian's libsentencepiece)
// turns text into ids at prepare, and ids back into text in generate. The
// token store keeps a copy of the model (store/tokenizer.model), so a store is
// never read with another tokenizer.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace dipaco {

class Tokenizer {
 public:
  // A model file; CorpusError naming it when it is missing or not a model.
  explicit Tokenizer(const std::string& model_file);
  // A model's bytes (an export carries them); `what` names it in errors.
  Tokenizer(const std::string& serialized, const std::string& what);
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  int vocab_size() const;
  int eod() const;  // the end-of-document token: the model's </s>
  std::vector<int> encode(std::string_view text) const;
  std::string decode(const std::vector<int>& ids) const;
  // The UTF-8 bytes each id stands for in the text: a piece's own bytes, with
  // the word-boundary marker U+2581 one space, a byte-fallback <0xNN> one byte,
  // </s> one (as the byte-level end of document), other control ids and
  // <unk> none. Bits per byte divide a loss by these.
  const std::vector<uint8_t>& token_bytes() const { return bytes_; }
  const std::string& file() const { return file_; }
  const std::string& serialized() const { return serialized_; }

 private:
  void load(const std::string& what);
  std::string file_, serialized_;
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::vector<uint8_t> bytes_;
};

class TokenStore;
// The store's token-bytes table: its tokenizer's, or empty (bytes, token inputs).
std::vector<uint8_t> store_token_bytes(const TokenStore& store);

// Trains a model (type unigram or bpe, `vocab` ids, byte fallback so that
// every text encodes) on the sentences next() yields until it returns false,
// and writes it to `model_file`. CorpusError with SentencePiece's words when
// it cannot (too little text for the vocabulary, say).
void train_tokenizer(const std::function<bool(std::string&)>& next, int vocab, const std::string& type,
                     const std::string& model_file);

}  // namespace dipaco
